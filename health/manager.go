package health

import (
	"context"
	"slices"
	"time"

	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// Manager is the single writer of the Table. It follows the resolver's latest endpoint set,
// runs one Prober per endpoint in a supervisor of its own, and turns Reports from the dialer
// and the probers into new Snapshots, logging each transition once.
type Manager struct {
	table       *Table
	updates     *resolver.Updates
	reports     Reports
	retryDelay  time.Duration
	dialTimeout time.Duration
	proberSpec  suture.Spec
	log         *zap.Logger
}

var _ suture.Service = (*Manager)(nil)

// ManagerConfig is what a Manager needs; the channels and the table outlive its restarts.
type ManagerConfig struct {
	Table       *Table
	Updates     *resolver.Updates
	Reports     Reports
	RetryDelay  time.Duration // how long an unavailable endpoint waits before it is probed
	DialTimeout time.Duration // bound of every probe
	ProberSpec  suture.Spec   // spec of the supervisor that runs the probers
	Log         *zap.Logger
}

// NewManager returns a Manager for cfg.
func NewManager(cfg ManagerConfig) *Manager {
	return &Manager{
		table:       cfg.Table,
		updates:     cfg.Updates,
		reports:     cfg.Reports,
		retryDelay:  cfg.RetryDelay,
		dialTimeout: cfg.DialTimeout,
		proberSpec:  cfg.ProberSpec,
		log:         cfg.Log.Named("health"),
	}
}

// String names the service in supervisor events.
func (m *Manager) String() string { return "health/manager" }

// member is the Manager's per-run state of one endpoint.
type member struct {
	available bool
	down      chan struct{} // wakes the endpoint's prober
	token     suture.ServiceToken
}

// run is the state of one Serve call; a restarted Manager starts a new run from the Table.
type run struct {
	m       *Manager
	probers *suture.Supervisor
	set     []resolver.Endpoint
	members map[resolver.Endpoint]*member
}

// Serve follows endpoint sets and reports until ctx ends.
func (m *Manager) Serve(ctx context.Context) error {
	r := &run{
		m:       m,
		probers: suture.New("probers", m.proberSpec),
		members: make(map[resolver.Endpoint]*member),
	}
	proberCtx, stopProbers := context.WithCancel(ctx)
	probersDone := r.probers.ServeBackground(proberCtx)
	defer func() {
		stopProbers()
		<-probersDone
	}()

	prev := m.table.Load()
	if set, ok := m.updates.Latest(); ok {
		r.follow(set, prev)
	}
	for {
		select {
		case <-m.updates.Kicked():
			set, _ := m.updates.Latest()
			r.follow(set, m.table.Load())
		case rep := <-m.reports:
			r.record(rep)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// follow makes set the current endpoint set. A new endpoint starts available unless prev says
// it is not, so that a restarted Manager keeps what the last one learnt.
func (r *run) follow(set []resolver.Endpoint, prev *Snapshot) {
	if slices.Equal(set, r.set) {
		return
	}
	keep := make(map[resolver.Endpoint]bool, len(set))
	for _, ep := range set {
		keep[ep] = true
	}
	for ep, mb := range r.members {
		if !keep[ep] {
			_ = r.probers.Remove(mb.token) // fails only once the probers are stopping
			delete(r.members, ep)
		}
	}
	for _, ep := range set {
		if r.members[ep] != nil {
			continue
		}
		mb := &member{
			available: !slices.Contains(prev.Known(), ep) || slices.Contains(prev.Available(), ep),
			down:      make(chan struct{}, 1),
		}
		mb.token = r.probers.Add(newProber(ep, r.m.retryDelay, r.m.dialTimeout, mb.down, r.m.reports, r.m.log))
		if !mb.available {
			mb.down <- struct{}{}
		}
		r.members[ep] = mb
	}
	r.set = slices.Clone(set)
	r.m.log.Info("endpoint set changed", zap.Stringers("endpoints", set))
	r.publish()
}

// record applies one Report; only a change of state is logged and published.
func (r *run) record(rep Report) {
	mb := r.members[rep.Endpoint]
	if mb == nil || mb.available == rep.Available {
		return
	}
	mb.available = rep.Available
	if rep.Available {
		r.m.log.Info("endpoint available", zap.Stringer("endpoint", rep.Endpoint))
	} else {
		r.m.log.Info("endpoint unavailable",
			zap.Stringer("endpoint", rep.Endpoint),
			zap.NamedError("reason", rep.Err),
			zap.Duration("retry_in", r.m.retryDelay))
		select {
		case mb.down <- struct{}{}:
		default:
		}
	}
	r.publish()
}

// publish stores a Snapshot of the current state.
func (r *run) publish() {
	var available []resolver.Endpoint
	for _, ep := range r.set {
		if r.members[ep].available {
			available = append(available, ep)
		}
	}
	if len(available) == 0 && len(r.set) > 0 {
		r.m.log.Warn("no endpoint available; every client connection tries each known endpoint",
			zap.Int("known", len(r.set)))
	}
	r.m.table.store(NewSnapshot(r.set, available))
}
