package resolver

import (
	"context"

	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"
)

// Source is where the starting endpoints come from: a list (--endpoints), a file
// (--endpoints-file) or SRV records (--discovery-srv). It is built once from the settings,
// with everything that can fail checked then; the gateway runs its service, and the check
// command resolves it once. The member list (MemberList) follows any of them.
type Source interface {
	// Name is what /status and check call the source: "endpoints", "endpoints-file" or "srv".
	Name() string
	// Listed is what /status and check call the source of an endpoint not found through SRV
	// records: the source's Name, or "endpoints" for the fallback of SRV discovery.
	Listed() string
	// Lookups counts the source's SRV lookups; nil for a source that looks nothing up.
	Lookups() *LookupCounts
	// Service returns the resolver service that publishes the source's sets to out. It is
	// called once.
	Service(out *Updates) suture.Service
	// Resolve returns the endpoints once, as the service would first publish them.
	Resolve(ctx context.Context) ([]Endpoint, error)
}

// ListSource is a fixed list of endpoints: --endpoints.
type ListSource struct{ endpoints []Endpoint }

// NewListSource returns the source of a fixed list.
func NewListSource(eps []Endpoint) *ListSource { return &ListSource{endpoints: Normalize(eps)} }

// Name is "endpoints".
func (s *ListSource) Name() string { return "endpoints" }

// Service publishes the list once.
func (s *ListSource) Service(out *Updates) suture.Service { return NewStatic(s.endpoints, out) }

// Resolve returns the list.
func (s *ListSource) Resolve(context.Context) ([]Endpoint, error) { return s.endpoints, nil }

// Listed is "endpoints".
func (s *ListSource) Listed() string { return s.Name() }

// Lookups is nil: a list looks nothing up.
func (s *ListSource) Lookups() *LookupCounts { return nil }

// FileSource is an endpoints file, followed as it changes and read again on each receive of
// reload: --endpoints-file.
type FileSource struct {
	path   string
	first  []Endpoint // the file as read at start
	reload <-chan struct{}
	guard  *LoopGuard
	log    *zap.Logger
}

// NewFileSource returns the source of the file at path, whose contents at start are first.
func NewFileSource(path string, first []Endpoint, reload <-chan struct{}, guard *LoopGuard, log *zap.Logger) *FileSource {
	return &FileSource{path: path, first: Normalize(first), reload: reload, guard: guard, log: log}
}

// Name is "endpoints-file".
func (s *FileSource) Name() string { return "endpoints-file" }

// Service follows the file.
func (s *FileSource) Service(out *Updates) suture.Service {
	return NewFile(s.path, out, s.reload, s.guard, s.log)
}

// Resolve returns the file's endpoints as read at start.
func (s *FileSource) Resolve(context.Context) ([]Endpoint, error) { return s.first, nil }

// Listed is "endpoints-file".
func (s *FileSource) Listed() string { return s.Name() }

// Lookups is nil: a file looks nothing up.
func (s *FileSource) Lookups() *LookupCounts { return nil }

// SRVSource is SRV discovery: --discovery-srv, with the --endpoints the user gave as a
// fallback until it first succeeds.
type SRVSource struct {
	refresher *Refresher // publishes nowhere: Resolve's, and the model of Service's
	log       *zap.Logger
}

// NewSRVSource checks cfg (refresh bounds, DNS servers) and returns the source, which verifies
// _etcd-client-ssl members under trust.
func NewSRVSource(cfg SRVConfig, trust member.Policy, fallback []Endpoint, guard *LoopGuard, log *zap.Logger) (*SRVSource, error) {
	r, err := NewRefresher(cfg, trust, fallback, guard, nil, log)
	if err != nil {
		return nil, err
	}
	return &SRVSource{refresher: r, log: log}, nil
}

// Name is "srv".
func (s *SRVSource) Name() string { return "srv" }

// Service returns a Refresher publishing to out.
func (s *SRVSource) Service(out *Updates) suture.Service { return s.refresher.publishingTo(out) }

// Listed is "endpoints": the fallback until discovery first succeeds is --endpoints.
func (s *SRVSource) Listed() string { return "endpoints" }

// Lookups counts the lookups of the source's Refresher.
func (s *SRVSource) Lookups() *LookupCounts { return s.refresher.counts }

// Resolve looks the members up once; when that fails it returns the fallback, if any, with
// the failure logged.
func (s *SRVSource) Resolve(ctx context.Context) ([]Endpoint, error) {
	found, err := s.refresher.Discover(ctx)
	switch {
	case err == nil:
		return found, nil
	case len(s.refresher.fallback) == 0:
		return nil, err
	}
	s.log.Warn("SRV discovery failed; using --endpoints instead", zap.Error(err))
	return s.refresher.fallback, nil
}
