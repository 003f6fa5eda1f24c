package health

import (
	"context"
	"slices"

	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// Manager is the single writer of the Table. It follows the resolver's latest endpoint set,
// runs one Prober per endpoint in a supervisor of its own, and turns Reports from the dialer
// and the probers into new Snapshots, logging each transition once.
type Manager struct {
	table      *Table
	updates    *resolver.Updates
	reports    Reports
	reprobe    Reprobe
	probe      ProbeConfig
	proberSpec suture.Spec
	log        *zap.Logger
}

var _ suture.Service = (*Manager)(nil)

// ManagerConfig is what a Manager needs; the channels and the table outlive its restarts.
type ManagerConfig struct {
	Table      *Table
	Updates    *resolver.Updates
	Reports    Reports
	Reprobe    Reprobe
	Probe      ProbeConfig
	ProberSpec suture.Spec // spec of the supervisor that runs the probers
	Log        *zap.Logger
}

// NewManager returns a Manager for cfg.
func NewManager(cfg ManagerConfig) *Manager {
	return &Manager{
		table:      cfg.Table,
		updates:    cfg.Updates,
		reports:    cfg.Reports,
		reprobe:    cfg.Reprobe,
		probe:      cfg.Probe,
		proberSpec: cfg.ProberSpec,
		log:        cfg.Log.Named("health"),
	}
}

// String names the service in supervisor events.
func (m *Manager) String() string { return "health/manager" }

// member is the Manager's per-run state of one endpoint.
type member struct {
	state      State
	reason     string        // why it is not healthy
	markedDown chan struct{} // tells the prober a dial failed
	now        chan struct{} // asks the prober to probe at once
	token      suture.ServiceToken
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

	if set, ok := m.updates.Latest(); ok {
		r.follow(set)
	}
	for {
		select {
		case <-m.updates.Kicked():
			set, _ := m.updates.Latest()
			r.follow(set)
		case rep := <-m.reports:
			r.record(rep)
		case <-m.reprobe:
			for _, mb := range r.members {
				signal(mb.now)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// follow makes set the current endpoint set. A new endpoint starts healthy, so clients are
// served at once, and is probed at once; a known one keeps the state the Table holds, so that
// a restarted Manager keeps what the last one learnt.
func (r *run) follow(set []resolver.Endpoint) {
	if slices.Equal(set, r.set) {
		return
	}
	prev := r.m.table.Load()
	keep := make(map[resolver.Endpoint]bool, len(set))
	for _, ep := range set {
		keep[ep] = true
	}
	for ep, mb := range r.members {
		if !keep[ep] {
			_ = r.probers.Remove(mb.token) // fails only once the probers are stopping
			delete(r.members, ep)
			r.m.table.forgetProbes(ep)
		}
	}
	for _, ep := range set {
		if r.members[ep] != nil {
			continue
		}
		state, known := prev.State(ep)
		if !known {
			state = Healthy
		}
		mb := &member{state: state, reason: prev.Reason(ep), markedDown: make(chan struct{}, 1), now: make(chan struct{}, 1)}
		mb.token = r.probers.Add(&Prober{
			ep: ep, cfg: r.m.probe, state: state, table: r.m.table,
			markedDown: mb.markedDown, now: mb.now, out: r.m.reports,
			log: r.m.log.With(zap.Stringer("endpoint", ep)),
		})
		r.members[ep] = mb
	}
	r.set = slices.Clone(set)
	r.m.log.Info("endpoint set changed", zap.Stringers("endpoints", set))
	r.publish()
}

// record applies one Report; only a change of state is logged and published.
func (r *run) record(rep Report) {
	mb := r.members[rep.Endpoint]
	if mb == nil || mb.state == rep.State {
		return
	}
	old := mb.state
	mb.state, mb.reason = rep.State, rep.Reason
	r.m.log.Info("endpoint state changed",
		zap.Stringer("endpoint", rep.Endpoint),
		zap.Stringer("from", old),
		zap.Stringer("to", rep.State),
		zap.String("reason", rep.Reason),
		zap.Bool("failed_dial", rep.FromDial))
	if rep.FromDial {
		signal(mb.markedDown)
	}
	r.publish()
}

// publish stores a Snapshot of the current state.
func (r *run) publish() {
	states := make([]State, len(r.set))
	reasons := make([]string, len(r.set))
	for i, ep := range r.set {
		states[i], reasons[i] = r.members[ep].state, r.members[ep].reason
	}
	snap := NewSnapshot(r.set, states)
	snap.reasons = reasons
	if snap.HealthyCount() == 0 && len(r.set) > 0 && r.m.table.Load().HealthyCount() > 0 {
		r.m.log.Warn("no endpoint healthy; using degraded endpoints, or trying every known one for each client",
			zap.Int("known", len(r.set)), zap.Int("degraded", len(snap.Available())))
	}
	r.m.table.store(snap)
}

// signal wakes a capacity-1 channel without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
