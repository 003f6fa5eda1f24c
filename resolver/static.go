package resolver

import (
	"context"

	"github.com/thejerf/suture/v4"
)

// Static is the resolver service for a fixed `--endpoints` list: it publishes the list once
// per run and then waits to be stopped.
type Static struct {
	set []Endpoint
	out *Updates
}

var _ suture.Service = (*Static)(nil)

// NewStatic returns a Static service that publishes set to out.
func NewStatic(set []Endpoint, out *Updates) *Static {
	return &Static{set: Normalize(set), out: out}
}

// String names the service in supervisor events.
func (s *Static) String() string { return "resolver/static" }

// Serve publishes the set and blocks until ctx ends.
func (s *Static) Serve(ctx context.Context) error {
	s.out.Publish(s.set)
	<-ctx.Done()
	return ctx.Err()
}
