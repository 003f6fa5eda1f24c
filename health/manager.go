package health

import (
	"context"
	"slices"
	"time"

	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// reprobeGap is the shortest time between two probes of one member asked for by arriving
// clients while none is healthy: at most 4 a second, however many clients arrive, so that a
// cluster that has just lost quorum is not flooded with /readyz from every host's gateway.
const reprobeGap = 250 * time.Millisecond

// A member that keeps coming back and failing is held out of rotation for a while each time it
// answers again, so that least-connections does not send new clients to a member that crashes
// again a second later: its first return within returnWindow is taken at once, each later one
// is held for holdBase, doubled for every return before it, up to holdMax. The hold applies
// only while another member is healthy.
const (
	returnWindow = 5 * time.Minute
	holdBase     = 2 * time.Second
	holdMax      = time.Minute
)

// Manager is the single writer of the Table. It follows the resolver's latest endpoint set,
// runs one Prober per endpoint in a supervisor of its own, and turns Reports from the dialer
// and the probers into new Snapshots, logging each transition once. It alone counts rise and
// fall, so a restarted prober cannot hold a stale state.
type Manager struct {
	table      *Table
	updates    *resolver.Updates
	reports    Reports
	reprobe    Reprobe
	probe      ProbeConfig
	proberSpec suture.Spec
	grid       grid // shared by the probers
	log        *zap.Logger
	now        func() time.Time
	gen        uint64 // generation of the last prober started, across restarts
	// unverifiedLogged: the line that listed TLS members go unverified was logged.
	unverifiedLogged bool
	readyLogged      bool // the first endpoint set was logged as etcd's gateway does

	// wrapProber wraps every prober the Manager starts: the identity, but tests inject faults.
	wrapProber func(suture.Service) suture.Service
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
		now:        time.Now,
		wrapProber: func(s suture.Service) suture.Service { return s },
		grid:       newGrid(),
	}
}

// String names the service in supervisor events.
func (m *Manager) String() string { return "health/manager" }

// tracked is the Manager's per-run state of one endpoint.
type tracked struct {
	ep      resolver.Endpoint
	state   State
	reason  string // why it is not healthy
	streak  streak
	changed time.Time // when the state last changed; zero when before this gateway knew
	// While down: whether its last probe found it answering, its recent returns (answers after
	// a failure), and until when the last one is held out of rotation.
	answering bool
	returns   []time.Time
	heldUntil time.Time
	gen       uint64        // of its current prober
	probeNow  chan struct{} // asks the prober to probe at once
	asked     time.Time     // when a probe was last asked for on a client's behalf
	token     suture.ServiceToken
}

// run is the state of one Serve call; a restarted Manager starts a new run from the Table.
type run struct {
	m       *Manager
	probers *suture.Supervisor
	set     []resolver.Endpoint
	members map[resolver.HostPort]*tracked
	// reprobeLater fires when members skipped by a re-probe (asked too recently) may be
	// asked again; nil when none waits.
	reprobeLater *time.Timer
}

// Serve follows endpoint sets and reports until ctx ends.
func (m *Manager) Serve(ctx context.Context) error {
	r := &run{
		m:       m,
		probers: suture.New("probers", m.proberSpec),
		members: make(map[resolver.HostPort]*tracked),
	}
	proberCtx, stopProbers := context.WithCancel(ctx)
	probersDone := r.probers.ServeBackground(proberCtx)
	defer func() {
		stopProbers()
		<-probersDone
		if r.reprobeLater != nil {
			r.reprobeLater.Stop()
		}
	}()

	if set, ok := m.updates.Latest(); ok {
		r.follow(set)
	}
	for {
		var later <-chan time.Time
		if r.reprobeLater != nil {
			later = r.reprobeLater.C
		}
		select {
		case <-m.updates.Kicked():
			set, _ := m.updates.Latest()
			r.follow(set)
		case rep := <-m.reports:
			r.record(rep)
		case <-m.reprobe:
			r.reprobeAll()
		case <-later:
			r.reprobeLater = nil
			r.reprobeAll()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// follow makes set the current endpoint set. A new address starts healthy, so clients are
// served at once, and is probed at once; a known one keeps the state the Table holds, so that
// a restarted Manager keeps what the last one learnt, and so that a change of SRV weight or
// priority keeps the member's state.
func (r *run) follow(set []resolver.Endpoint) {
	if slices.Equal(set, r.set) {
		return
	}
	prev := r.m.table.Load()
	adding := len(prev.Known()) > 0 // a member added to a set that serves: slow start
	keep := make(map[resolver.HostPort]bool, len(set))
	for _, ep := range set {
		keep[ep.HostPort()] = true
	}
	for hp, mb := range r.members {
		if !keep[hp] {
			_ = r.probers.Remove(mb.token) // fails only once the probers are stopping
			delete(r.members, hp)
			r.m.table.forgetProbes(hp)
			r.m.table.forgetLoad(hp)
		}
	}
	for _, ep := range set {
		hp := ep.HostPort()
		mb := r.members[hp]
		switch {
		case mb == nil:
			state, known := prev.State(ep)
			if !known {
				state = Healthy
			}
			mb = &tracked{ep: ep, state: state, reason: prev.Reason(ep), changed: prev.Since(ep), probeNow: make(chan struct{}, 1)}
			if !known && adding {
				mb.changed = r.m.now()
				r.m.table.loadOf(hp).beginSlowStart(mb.changed)
			}
			r.members[hp] = mb
			r.startProber(mb)
		case mb.ep.TLS != ep.TLS || mb.ep.Target != ep.Target:
			// It is probed differently now: a new prober, the same state.
			_ = r.probers.Remove(mb.token)
			mb.ep = ep
			r.startProber(mb)
		default:
			mb.ep = ep // a new weight or priority: nothing else changes
		}
	}
	r.set = slices.Clone(set)
	r.m.log.Info("endpoint set changed", zap.Stringers("endpoints", set))
	r.publish()
	if !r.m.readyLogged && len(set) > 0 {
		r.m.readyLogged = true
		// etcd's gateway logs this line; its e2e tests and users' scripts wait for it.
		r.m.log.Info("ready to proxy client requests", zap.Stringers("endpoints", set))
	}
}

// startProber starts a prober of a new generation for mb.
func (r *run) startProber(mb *tracked) {
	r.m.gen++
	mb.gen = r.m.gen
	mb.token = r.probers.Add(r.m.wrapProber(&Prober{
		ep: mb.ep, gen: mb.gen, cfg: r.m.probe, table: r.m.table,
		probeNow: mb.probeNow, grid: r.m.grid, out: r.m.reports, now: time.Now,
		log: r.m.log.With(zap.Stringer("endpoint", mb.ep)),
	}))
}

// record applies one Report; only a change of state is logged and published.
func (r *run) record(rep Report) {
	hp := rep.Endpoint.HostPort()
	mb := r.members[hp]
	if mb == nil || rep.Gen != 0 && rep.Gen != mb.gen {
		return // an endpoint removed since, or a prober replaced since
	}
	next := mb.state
	switch rep.Evidence {
	case Probed:
		// Recorded once the state it leads to is published, so that whoever sees the probe
		// sees its consequence too.
		defer r.recordProbe(rep)
		if rep.NoNews != 0 {
			return // the gateway could not ask, or saw the answer too late: no news
		}
		if rep.At.Before(mb.changed) {
			return // begun before newer evidence changed the state: it does not undo it
		}
		if mb.state == Down && r.holdsDown(mb, rep) {
			return
		}
		next = mb.streak.observe(mb.state, rep.State, r.m.probe.Rise, r.m.probe.Fall)
	case HeartbeatsLost, DialRefused:
		next = Down
		mb.streak.reset()
	case DialFailed:
		next = mb.streak.observe(mb.state, Down, r.m.probe.Rise, r.m.probe.Fall)
		r.askProbe(mb, true)
	}
	if next == mb.state {
		return // the reason stays the one of the change; /status shows the last probe's too
	}
	old := mb.state
	mb.state, mb.reason, mb.changed = next, rep.Reason, r.m.now()
	if next == Down {
		mb.answering = false
	} else if old == Down && r.m.table.Load().HealthyCount() > 0 {
		r.m.table.loadOf(hp).beginSlowStart(mb.changed)
	}
	r.m.log.Info("endpoint state changed",
		zap.Stringer("endpoint", rep.Endpoint),
		zap.Stringer("from", old),
		zap.Stringer("to", next),
		zap.String("reason", rep.Reason),
		zap.Stringer("evidence", rep.Evidence))
	r.publish()
}

// holdsDown reports whether the probe rep of mb, a down member, must not count because mb is
// held out of rotation: it keeps coming back while other members serve. Each answer after a
// failure is a return; the first within returnWindow is taken at once.
func (r *run) holdsDown(mb *tracked, rep Report) bool {
	wasAnswering := mb.answering
	mb.answering = rep.State > Down
	if !mb.answering || r.m.table.Load().HealthyCount() == 0 {
		return false // a failure counts as usual; with nothing healthy, any member is welcome
	}
	now := r.m.now()
	if !wasAnswering {
		mb.returns = slices.DeleteFunc(mb.returns, func(at time.Time) bool { return now.Sub(at) > returnWindow })
		earlier := len(mb.returns)
		mb.returns = append(mb.returns, now)
		if earlier == 0 {
			mb.heldUntil = time.Time{}
			return false
		}
		hold := min(holdBase<<min(earlier-1, 16), holdMax)
		mb.heldUntil = now.Add(hold)
		r.m.log.Info("endpoint answers again but keeps failing; held out of rotation",
			zap.Stringer("endpoint", mb.ep), zap.Int("returns", earlier+1), zap.Duration("window", returnWindow),
			zap.Duration("hold", hold))
	}
	return now.Before(mb.heldUntil)
}

// recordProbe keeps a probe's outcome as the member's last probe, and logs once what it found
// out about the member's scheme and anything worth saying.
func (r *run) recordProbe(rep Report) {
	prev, _ := r.m.table.LastProbe(rep.Endpoint)
	scheme := rep.Scheme
	if scheme == member.SchemeUnknown {
		scheme = prev.Scheme // not found out this time: what was known stands
	}
	r.m.table.recordProbe(rep.Endpoint.HostPort(), Probe{At: rep.At, Result: rep.State, NoNews: rep.NoNews, Reason: rep.Reason, Scheme: scheme, Note: rep.Note})
	if scheme != prev.Scheme {
		r.m.log.Info("member scheme found", zap.Stringer("endpoint", rep.Endpoint), zap.Stringer("scheme", scheme),
			zap.Stringer("was", prev.Scheme))
		if scheme == member.SchemeTLS && !rep.Endpoint.TLS && !r.m.probe.TLS.VerifiesListed() && !r.m.unverifiedLogged {
			r.m.unverifiedLogged = true
			r.m.log.Info("listed members that serve TLS are probed without verifying their certificates; clients still verify end to end; give --trusted-ca-file to verify them too")
		}
	}
	if rep.Note != "" && rep.Note != prev.Note {
		r.m.log.Warn("probe note", zap.Stringer("endpoint", rep.Endpoint), zap.String("note", rep.Note))
	}
}

// reprobeAll asks every member's prober to probe at once, except the members asked less than
// reprobeGap ago: those are asked when the gap has passed.
func (r *run) reprobeAll() {
	var wait time.Duration
	for _, mb := range r.members {
		if !r.askProbe(mb, false) {
			wait = max(wait, reprobeGap-r.m.now().Sub(mb.asked))
		}
	}
	if wait > 0 && r.reprobeLater == nil {
		r.reprobeLater = time.NewTimer(wait)
	}
}

// askProbe asks mb's prober to probe at once, unless it was asked less than reprobeGap ago;
// force asks regardless (a failed dial is news about this member alone). It reports whether it
// asked.
func (r *run) askProbe(mb *tracked, force bool) bool {
	now := r.m.now()
	if !force && now.Sub(mb.asked) < reprobeGap {
		return false
	}
	mb.asked = now
	signal(mb.probeNow)
	return true
}

// publish stores a Snapshot of the current state, and logs once when the rotation gets worse
// or recovers.
func (r *run) publish() {
	states := make([]State, len(r.set))
	reasons := make([]string, len(r.set))
	since := make([]time.Time, len(r.set))
	loads := make([]*Load, len(r.set))
	for i, ep := range r.set {
		mb := r.members[ep.HostPort()]
		states[i], reasons[i], since[i] = mb.state, mb.reason, mb.changed
		loads[i] = r.m.table.loadOf(ep.HostPort())
	}
	snap := newSnapshot(r.set, states, reasons, since, loads)
	if was, is := r.m.table.Load().Rotation(), snap.Rotation(); was != is && was != RotationNone {
		switch is {
		case RotationDegraded:
			r.m.log.Warn("no endpoint healthy; serving from the degraded ones",
				zap.Int("known", len(r.set)), zap.Int("degraded", len(snap.Available())))
		case RotationLastResort:
			r.m.log.Warn("no endpoint healthy or degraded; serving from whatever answers, and closing no connection",
				zap.Int("known", len(r.set)))
		case RotationHealthy:
			r.m.log.Info("serving from healthy endpoints again", zap.Int("healthy", snap.HealthyCount()))
		}
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
