package supervisor

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// CheckResult is one endpoint's verdict from Check.
type CheckResult struct {
	Endpoint resolver.Endpoint
	Source   string        // "endpoints", "endpoints-file" or "srv"
	Scheme   member.Scheme // what the member serves, as the probe found
	State    health.State
	NoNews   member.Fault // set when the probe said nothing of the member; State is then not read
	Reason   string       // why it is not healthy
	Note     string       // what the probe found worth saying, though no fault
	Took     time.Duration
}

// MemberListResult is the member list check reads with --endpoints-auto-sync-interval.
type MemberListResult struct {
	From    resolver.Endpoint // the healthy member that gave it
	Members []resolver.ListedMember
	Err     error // why no list could be read
}

// Check resolves the endpoints as the gateway would at start (the list, the endpoints file as
// read, or one SRV lookup, falling back to an explicit --endpoints when it fails) and probes
// each once, in parallel, as the health probers do. With --endpoints-auto-sync-interval it also
// reads the member list the gateway would follow, from the first healthy endpoint.
func Check(ctx context.Context, plan *Plan) ([]CheckResult, *MemberListResult, error) {
	cfg, probe := plan.cfg, plan.probe
	eps, err := plan.source.Resolve(ctx)
	if err != nil {
		return nil, nil, err
	}
	listed := plan.source.Listed()
	results := make([]CheckResult, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			began := time.Now()
			res := health.ProbeOnce(ctx, ep, probe)
			source := listed
			if ep.Target != "" {
				source = "srv"
			}
			results[i] = CheckResult{Endpoint: ep, Source: source, Scheme: res.Scheme, State: res.State, NoNews: res.NoNews, Reason: res.Reason,
				Note: res.Note, Took: time.Since(began)}
		}()
	}
	wg.Wait()
	if cfg.AutoSyncInterval <= 0 {
		return results, nil, nil
	}
	list := &MemberListResult{Err: errors.New("no endpoint is healthy to give the member list")}
	for _, r := range results {
		if r.State != health.Healthy {
			continue
		}
		list.From = r.Endpoint
		list.Members, list.Err = resolver.ListMembers(ctx, r.Endpoint, r.Scheme, r.Endpoint.MemberTLS(probe.TLS), cfg.DialTimeout)
		if list.Err == nil {
			break
		}
	}
	return results, list, nil
}
