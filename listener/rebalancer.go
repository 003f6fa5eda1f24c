package listener

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

const (
	// rebalanceSample is how often the byte counters are sampled while the loads are uneven.
	rebalanceSample = 250 * time.Millisecond
	// rebalanceCheck is how often the loads are compared while they are even; a new snapshot
	// (a member back or added) is looked at at once.
	rebalanceCheck = 5 * time.Second
)

// Rebalancer keeps the load even across the healthy members of the tier that takes new
// connections: when their loads drift apart (a member came back, a member was added, clients
// left one member), it closes quiet connections on the most loaded members, paced, and their
// clients reconnect through the gateway to the least loaded. A quiet connection has carried
// no byte for the quiet time, and the last bytes it carried went to its client: it has no
// request in flight. It acts only toward healthy members and only while the tree runs, so
// never while draining. It is not eviction: --evict-unhealthy does not turn it off.
type Rebalancer struct {
	table    *health.Table
	fwd      *Forwarder
	quietFor time.Duration
	log      *zap.Logger
	now      func() time.Time
	// sampleEvery and checkEvery are rebalanceSample and rebalanceCheck; tests shorten them.
	sampleEvery, checkEvery time.Duration
	// newPolicy returns the policy of a run; tests pin its jitter.
	newPolicy func(quietFor time.Duration) *balancePolicy

	spread    atomic.Uint64 // math.Float64bits of the last spread seen
	balancing atomic.Bool   // the loads are uneven: a round runs
}

var _ suture.Service = (*Rebalancer)(nil)

// NewRebalancer returns a Rebalancer of fwd's connections over the members of table, which
// moves only connections quiet for quietFor.
func NewRebalancer(table *health.Table, fwd *Forwarder, quietFor time.Duration, log *zap.Logger) *Rebalancer {
	return &Rebalancer{
		table: table, fwd: fwd, quietFor: quietFor, log: log.Named("listener"), now: time.Now,
		sampleEvery: rebalanceSample, checkEvery: rebalanceCheck, newPolicy: newBalancePolicy,
	}
}

// String names the service in supervisor events.
func (r *Rebalancer) String() string { return "listener/rebalancer" }

// Spread returns the spread of the loads last seen: the most minus the fewest connections of
// the healthy members, relative to their weights.
func (r *Rebalancer) Spread() float64 { return math.Float64frombits(r.spread.Load()) }

// Balancing reports whether a rebalancing round runs: the loads are uneven.
func (r *Rebalancer) Balancing() bool { return r.balancing.Load() }

// round is what one rebalancing round has moved, for its log line.
type round struct {
	from map[resolver.HostPort]int
	to   map[resolver.HostPort]bool
}

// Serve compares the loads until ctx ends, and samples and moves connections while they are
// uneven.
func (r *Rebalancer) Serve(ctx context.Context) error {
	policy := r.newPolicy(r.quietFor)
	var rd *round
	defer func() { r.balancing.Store(false) }()
	var live []*proxied
	for {
		snap := r.table.Load()
		eps, members := balanceView(snap)
		now := r.now()
		var (
			conns   []balanceConn
			victims []*proxied
		)
		if policy.needsSample(members) {
			live = r.fwd.liveConns(live[:0])
			conns, victims = r.sampleConns(now, eps, live)
		}
		d := policy.decide(now, members, conns)
		r.spread.Store(math.Float64bits(d.spread))
		r.balancing.Store(d.imbalanced)
		if d.victim >= 0 && r.fwd.rebalance(victims[d.victim]) {
			if rd == nil {
				rd = &round{from: map[resolver.HostPort]int{}, to: map[resolver.HostPort]bool{}}
			}
			rd.from[eps[d.from].HostPort()]++
			rd.to[eps[d.to].HostPort()] = true
			if ce := r.log.Check(zap.DebugLevel, "moved a quiet connection"); ce != nil {
				ce.Write(zap.Stringer("from", eps[d.from]), zap.Stringer("toward", eps[d.to]), zap.Float64("spread", d.spread))
			}
		}
		clear(live) // hold no ended connection while the loads are even
		if !d.imbalanced && rd != nil {
			r.logRound(rd, d.spread)
			rd = nil
		}
		wait := r.checkEvery
		if d.imbalanced {
			wait = r.sampleEvery
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-snap.Changed():
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			if rd != nil {
				r.logRound(rd, d.spread)
			}
			return ctx.Err()
		}
	}
}

// logRound logs the one line of a round: how many connections left which members, toward
// which.
func (r *Rebalancer) logRound(rd *round, spread float64) {
	moved := 0
	from := make([]zap.Field, 0, len(rd.from))
	for hp, n := range rd.from {
		moved += n
		from = append(from, zap.Int(hp.String(), n))
	}
	to := make([]string, 0, len(rd.to))
	for hp := range rd.to {
		to = append(to, hp.String())
	}
	r.log.Info("rebalanced connections: closed quiet ones on the most loaded members; their clients reconnected to the least loaded",
		zap.Int("moved", moved), zap.Dict("from", from...), zap.Strings("to", to), zap.Float64("spread", spread))
}

// balanceView returns the members that rebalancing moves load between, and how the policy sees
// them: the healthy members of the tier that takes new connections; none unless the rotation
// is healthy.
func balanceView(snap *health.Snapshot) ([]resolver.Endpoint, []balanceMember) {
	if snap.Rotation() != health.RotationHealthy {
		return nil, nil
	}
	tier := &snap.Tiers()[0]
	eps, loads, shares := tier.Endpoints(), tier.Loads(), tier.Shares()
	members := make([]balanceMember, len(eps))
	for i, ep := range eps {
		members[i] = balanceMember{share: shares[i], active: loads[i].Active(), since: snap.Since(ep)}
	}
	return eps, members
}

// sampleConns samples the byte counters of every live connection at now, and returns those to
// a member of eps as the policy sees them, with the connections themselves.
func (r *Rebalancer) sampleConns(now time.Time, eps []resolver.Endpoint, live []*proxied) ([]balanceConn, []*proxied) {
	var conns []balanceConn
	var victims []*proxied
	control := make([]controlAllowance, len(eps))
	for i, ep := range eps {
		control[i] = controlAllowanceOf(r.table.Scheme(ep))
	}
	unknownControl := controlAllowanceOf(member.SchemeUnknown)
	for _, p := range live {
		member := -1
		for i, ep := range eps {
			if ep.Host == p.endpoint.Host && ep.Port == p.endpoint.Port {
				member = i
				break
			}
		}
		allowance := unknownControl
		if member >= 0 {
			allowance = control[member]
		}
		p.quiet.sample(now, p.up.n.Load(), p.down.n.Load(), allowance)
		if member < 0 {
			continue
		}
		conns = append(conns, balanceConn{member: member, born: p.born, quiet: p.quiet.quiet(now, r.quietFor), quietSince: p.quiet.changedAt})
		victims = append(victims, p)
	}
	return conns, victims
}
