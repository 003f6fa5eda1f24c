package resolver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etcd-gateway/etcd-gateway/internal/clock"
	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"
)

// dnsQueryTimeout bounds each DNS query.
const dnsQueryTimeout = 2 * time.Second

// SRVConfig configures SRV discovery.
type SRVConfig struct {
	Domain      string        // --discovery-srv
	ServiceName string        // --discovery-srv-name
	DNSServer   string        // --dns-server host:port; empty: the servers of ResolvConf
	ResolvConf  string        // usually /etc/resolv.conf
	Insecure    bool          // --insecure-discovery: use _etcd-client-ssl members unverified
	MinRefresh  time.Duration // lower bound of the wait between lookups
	MaxRefresh  time.Duration // upper bound of the wait, also of the backoff after failures
	DialTimeout time.Duration // bound of each TLS verification
}

// Refresher is the resolver service for SRV discovery. It looks the records up, resolves and
// verifies the members, publishes the set when it changes, and looks again after the records'
// TTL. A failed lookup keeps the last good set and is retried with backoff.
type Refresher struct {
	cfg SRVConfig
	// fallback is the set used until discovery first succeeds: the --endpoints the user gave
	// explicitly, or nil.
	fallback          []Endpoint
	guard             *LoopGuard // refuses endpoints that are the gateway itself
	dns               *dnsClient
	trust             member.Policy // how _etcd-client-ssl members are verified
	secureName, plain string
	out               *Updates
	log               *zap.Logger
	counts            *LookupCounts
	clock             clock.Clock // the timers between lookups
}

var _ suture.Service = (*Refresher)(nil)

// LookupCounts counts SRV lookups, and the failed ones among them.
type LookupCounts struct{ lookups, failures atomic.Uint64 }

// Lookups returns how many SRV lookups were done, and how many of them failed.
func (c *LookupCounts) Lookups() (total, failed uint64) { return c.lookups.Load(), c.failures.Load() }

// Lookups returns how many SRV lookups the Refresher has done, and how many of them failed.
func (r *Refresher) Lookups() (total, failed uint64) { return r.counts.Lookups() }

// publishingTo returns a Refresher like r, counting into the same counts, that publishes to out.
func (r *Refresher) publishingTo(out *Updates) *Refresher {
	c := *r
	c.out = out
	return &c
}

// NewRefresher checks cfg (refresh bounds, DNS servers) and returns the service, which verifies
// _etcd-client-ssl members under trust, publishes to out and serves fallback until discovery
// first succeeds. Every error is one line that names the fix.
func NewRefresher(cfg SRVConfig, trust member.Policy, fallback []Endpoint, guard *LoopGuard, out *Updates, log *zap.Logger) (*Refresher, error) {
	if cfg.MinRefresh <= 0 {
		return nil, fmt.Errorf("--discovery-srv-min-refresh=%s must be positive, such as 1s", cfg.MinRefresh)
	}
	if cfg.MaxRefresh < cfg.MinRefresh {
		return nil, fmt.Errorf("--discovery-srv-max-refresh=%s is below --discovery-srv-min-refresh=%s; raise it", cfg.MaxRefresh, cfg.MinRefresh)
	}
	client, err := newDNSClient(cfg.DNSServer, cfg.ResolvConf, dnsQueryTimeout)
	if err != nil {
		return nil, err
	}
	secure, plain := SRVNames(cfg.Domain, cfg.ServiceName)
	return &Refresher{cfg: cfg, fallback: Normalize(fallback), guard: guard, dns: client, trust: trust, counts: &LookupCounts{}, clock: clock.Real{},
		secureName: secure, plain: plain, out: out,
		log: log.Named("resolver").With(zap.String("srv_domain", cfg.Domain))}, nil
}

// String names the service in supervisor events.
func (r *Refresher) String() string { return "resolver/srv" }

// Serve discovers until ctx ends.
func (r *Refresher) Serve(ctx context.Context) error {
	if _, ok := r.out.Latest(); !ok && len(r.fallback) > 0 {
		r.log.Info("using --endpoints until SRV discovery succeeds", zap.Stringers("endpoints", r.fallback))
		r.out.Publish(r.fallback)
	}
	run := newRefresherRun(r)
	backoff := r.cfg.MinRefresh
	for {
		wait, ok := run.once(ctx)
		if ok {
			backoff = r.cfg.MinRefresh
		} else {
			wait = jitter(backoff)
			backoff = min(2*backoff, r.cfg.MaxRefresh)
		}
		fired, stop := r.clock.After(wait)
		select {
		case <-fired:
		case <-ctx.Done():
			stop()
			return ctx.Err()
		}
	}
}

// refresherRun is the per-run state of the Refresher: what was logged, so that each outage
// and each refused member is logged once.
type refresherRun struct {
	r       *Refresher
	failing bool
	refused map[Endpoint]string // member → why it was left out
	plainOK bool                // the unauthenticated members were logged
	// lastByName holds each SRV name's members of its last answer, used while it fails.
	lastByName  map[string][]Endpoint
	nameFailing map[string]bool // names whose failure was logged
}

func newRefresherRun(r *Refresher) *refresherRun {
	return &refresherRun{r: r, refused: map[Endpoint]string{}, lastByName: map[string][]Endpoint{}, nameFailing: map[string]bool{}}
}

// once does one lookup and publishes its result. It returns the wait until the next lookup
// and whether the lookup succeeded.
func (run *refresherRun) once(ctx context.Context) (time.Duration, bool) {
	r := run.r
	d, err := r.dns.discover(ctx, r.secureName, r.plain)
	var found []Endpoint
	if err == nil {
		found, err = d.merge(run.lastByName)
	}
	if ctx.Err() == nil {
		r.counts.lookups.Add(1)
	}
	if err != nil {
		if ctx.Err() == nil {
			r.counts.failures.Add(1)
		}
		if ctx.Err() == nil && !run.failing {
			run.failing = true
			last, _ := r.out.Latest()
			r.log.Warn("SRV discovery failed; keeping the last good endpoint set and retrying",
				zap.Error(err), zap.Stringers("endpoints", last))
		}
		return 0, false
	}
	if run.failing {
		run.failing = false
		r.log.Info("SRV discovery recovered")
	}
	complete := run.judgeNames(d)
	if !complete {
		r.counts.failures.Add(1)
	}
	last, _ := r.out.Latest()
	set, retry := run.admit(ctx, found, last)
	wait := min(max(d.ttl, r.cfg.MinRefresh), r.cfg.MaxRefresh)
	if retry {
		wait = min(wait, max(transientRetry, r.cfg.MinRefresh))
	}
	if len(set) == 0 {
		r.log.Warn("every discovered member was left out; keeping the last good endpoint set")
	} else if last, ok := r.out.Latest(); !ok || !slices.Equal(last, set) {
		r.out.Publish(set)
		r.log.Info("discovered endpoint set", zap.Stringers("endpoints", set), zap.Duration("ttl", d.ttl))
	}
	return wait, complete
}

// judgeNames remembers the members of each name that answered, and logs once when a name
// starts or stops failing. It reports whether both names answered.
func (run *refresherRun) judgeNames(d discovery) bool {
	complete := true
	for _, res := range d.names {
		if res.err != nil {
			complete = false
			if !run.nameFailing[res.name] {
				run.nameFailing[res.name] = true
				run.r.log.Warn("one SRV name failed; using the other's records and this name's last good members",
					zap.String("srv_name", res.name), zap.Error(res.err), zap.Stringers("kept", run.lastByName[res.name]))
			}
			continue
		}
		if run.nameFailing[res.name] {
			delete(run.nameFailing, res.name)
			run.r.log.Info("SRV name answers again", zap.String("srv_name", res.name))
		}
		run.lastByName[res.name] = res.endpoints
	}
	return complete
}

// transientRetry is how soon discovery looks again when a member could not be verified for a
// reason that says nothing of its certificate (a timeout, a refused connection).
const transientRetry = 2 * time.Second

// Discover looks the members up once and returns those admitted, without publishing them; the
// check command uses it.
func (r *Refresher) Discover(ctx context.Context) ([]Endpoint, error) {
	d, err := r.dns.discover(ctx, r.secureName, r.plain)
	if err != nil {
		return nil, err
	}
	run := newRefresherRun(r)
	run.judgeNames(d)
	found, err := d.merge(nil)
	if err != nil {
		return nil, err
	}
	set, _ := run.admit(ctx, found, nil)
	if len(set) == 0 {
		return nil, errors.New("every discovered member was left out (see the log)")
	}
	return set, nil
}

// admit drops members that are the gateway itself and, unless --insecure-discovery, TLS members
// that do not prove they hold the key of a certificate that verifies. A member that could not
// be verified for a transient reason (a timeout, a refused connection) stays when it is in
// last, the set in use, and is left out otherwise; retry then says to look again soon.
// Verifications run in parallel.
func (run *refresherRun) admit(ctx context.Context, eps, last []Endpoint) (admitted []Endpoint, retry bool) {
	r := run.r
	reasons := make([]error, len(eps))
	loops := make([]bool, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		if err := r.guard.Check(ctx, ep); err != nil {
			reasons[i], loops[i] = err, true
			continue
		}
		if ep.TLS && !r.trust.InsecureDiscovery {
			wg.Add(1)
			go func() {
				defer wg.Done()
				reasons[i] = member.Verify(ctx, ep.Addr(), ep.MemberTLS(r.trust), r.cfg.DialTimeout)
			}()
		}
	}
	wg.Wait()
	var plain []Endpoint
	for i, ep := range eps {
		transient := member.IsTransient(reasons[i])
		retry = retry || transient
		if transient && slices.ContainsFunc(last, func(e Endpoint) bool { return e.HostPort() == ep.HostPort() }) {
			reasons[i] = nil // verified before: its probes judge it meanwhile
		}
		if reasons[i] != nil {
			if why := reasons[i].Error(); run.refused[ep] != why {
				run.refused[ep] = why
				msg := "member left out: it did not prove it holds a TLS certificate that verifies; fix the certificate, give its CA with --trusted-ca-file, or allow it with --insecure-discovery"
				switch {
				case loops[i]:
					msg = "member left out: it is the gateway's own listen address"
				case transient:
					msg = "member left out for now: it could not be verified; trying again in seconds"
				}
				r.log.Warn(msg, zap.Stringer("endpoint", ep), zap.String("srv_target", ep.Target), zap.Error(reasons[i]))
			}
			continue
		}
		delete(run.refused, ep)
		admitted = append(admitted, ep)
		if !ep.TLS {
			plain = append(plain, ep)
		}
	}
	if len(plain) > 0 && !run.plainOK {
		run.plainOK = true
		r.log.Info("members from _etcd-client records serve without TLS and are used unauthenticated",
			zap.Stringers("endpoints", plain))
	}
	return admitted, retry
}

// jitter spreads d over [d/2, d).
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}
