package listener

import (
	"context"
	"time"

	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// evictionSpread is the longest time over which one endpoint's connections are closed.
const evictionSpread = time.Second

// Evictor closes the proxied connections of an endpoint that is worse than another, so that
// their clients reconnect through the gateway to a better member: a down endpoint's while
// another is healthy or degraded, a degraded endpoint's while another is healthy. When nothing
// better exists it closes nothing: the evidence may be wrong (a member that stops accepting
// new connections can still serve the ones it has), and closing would only hurt clients.
type Evictor struct {
	table *health.Table
	fwd   *Forwarder
	log   *zap.Logger
}

var _ suture.Service = (*Evictor)(nil)

// NewEvictor returns an Evictor of fwd's connections that follows table.
func NewEvictor(table *health.Table, fwd *Forwarder, log *zap.Logger) *Evictor {
	return &Evictor{table: table, fwd: fwd, log: log.Named("listener")}
}

// String names the service in supervisor events.
func (e *Evictor) String() string { return "listener/evictor" }

// Serve watches the snapshots until ctx ends. It starts from nothing evictable, so that a
// restarted Evictor closes the connections of an endpoint that went down while it was not
// running.
func (e *Evictor) Serve(ctx context.Context) error {
	var prev *health.Snapshot
	for {
		cur := e.table.Load()
		for _, ep := range cur.Known() {
			if !evictable(cur, ep) || prev != nil && evictable(prev, ep) {
				continue
			}
			state, _ := cur.State(ep)
			if n := e.fwd.Evict(ctx, ep.HostPort(), evictionSpread); n > 0 {
				e.log.Info("closed connections to an endpoint worse than another; their clients reconnect to a better one",
					zap.Stringer("endpoint", ep), zap.Stringer("state", state), zap.Stringer("best_state", cur.Best()),
					zap.Int("connections", n))
			}
		}
		prev = cur
		select {
		case <-cur.Changed():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// evictable reports whether connections to ep should be closed in snap: another endpoint is
// in a better state.
func evictable(snap *health.Snapshot, ep resolver.Endpoint) bool {
	state, known := snap.State(ep)
	return known && state < snap.Best()
}
