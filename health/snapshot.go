package health

import (
	"maps"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// Snapshot is one immutable view of the endpoints: every known endpoint (one per address)
// with its state and why, and the ones in rotation for new connections: the healthy ones, or
// the degraded ones while none is healthy. It is complete when NewSnapshot returns; only its
// round-robin cursor changes. Readers must not modify the slices it returns.
type Snapshot struct {
	known     []resolver.Endpoint
	states    []State
	reasons   []string    // why known[i] is not healthy
	since     []time.Time // when known[i] entered its state; zero when not known
	loads     []*Load     // the connections to known[i]
	healthy   int
	best      State
	available []resolver.Endpoint
	tiers     []Tier
	cursor    atomic.Uint32
	changed   chan struct{}
}

// NewSnapshot builds a Snapshot of known (sorted by priority, one per address) whose states[i]
// is the state of known[i] and reasons[i] why it is not healthy; reasons may be nil. Its cursor
// starts at a random index so that gateways restarted together do not all pick the same member
// first. Each endpoint gets a Load of its own; the Manager's snapshots share the Table's.
func NewSnapshot(known []resolver.Endpoint, states []State, reasons []string) *Snapshot {
	loads := make([]*Load, len(known))
	for i := range loads {
		loads[i] = &Load{}
	}
	return newSnapshot(known, states, reasons, nil, loads)
}

// newSnapshot is NewSnapshot with when each endpoint entered its state (may be nil) and the
// Loads that count its connections.
func newSnapshot(known []resolver.Endpoint, states []State, reasons []string, since []time.Time, loads []*Load) *Snapshot {
	s := &Snapshot{
		known:   slices.Clone(known),
		states:  slices.Clone(states),
		reasons: make([]string, len(known)),
		since:   make([]time.Time, len(known)),
		loads:   slices.Clone(loads),
		best:    Down,
		changed: make(chan struct{}),
	}
	copy(s.reasons, reasons)
	copy(s.since, since)
	var availableLoads []*Load
	for _, st := range states {
		if st == Healthy {
			s.healthy++
		}
		s.best = max(s.best, st)
	}
	for i, ep := range s.known {
		if s.states[i] == s.best && s.best > Down {
			s.available = append(s.available, ep)
			availableLoads = append(availableLoads, s.loads[i])
		}
	}
	s.tiers = buildTiers(s.available, availableLoads)
	s.cursor.Store(rand.Uint32())
	return s
}

// Known returns every endpoint of the current set, whatever its state.
func (s *Snapshot) Known() []resolver.Endpoint { return s.known }

// Knows reports whether hp is the address of an endpoint of the current set.
func (s *Snapshot) Knows(hp resolver.HostPort) bool { return s.index(hp) >= 0 }

// index returns the position of ep's address in known, or -1.
func (s *Snapshot) index(hp resolver.HostPort) int {
	return slices.IndexFunc(s.known, func(k resolver.Endpoint) bool { return k.Host == hp.Host && k.Port == hp.Port })
}

// State returns the state of the endpoint at ep's address, and false when none is known there.
func (s *Snapshot) State(ep resolver.Endpoint) (State, bool) {
	i := s.index(ep.HostPort())
	if i < 0 {
		return Down, false
	}
	return s.states[i], true
}

// Reason returns why the endpoint at ep's address is in its state when it is not healthy: the
// last failed probe, dial or heartbeat that changed it.
func (s *Snapshot) Reason(ep resolver.Endpoint) string {
	i := s.index(ep.HostPort())
	if i < 0 {
		return ""
	}
	return s.reasons[i]
}

// Since returns when the endpoint at ep's address entered its current state; zero when it
// has been in it since before this gateway knew.
func (s *Snapshot) Since(ep resolver.Endpoint) time.Time {
	i := s.index(ep.HostPort())
	if i < 0 {
		return time.Time{}
	}
	return s.since[i]
}

// LoadOf returns the Load that counts the connections to ep's address, nil when none is known
// there.
func (s *Snapshot) LoadOf(ep resolver.Endpoint) *Load {
	i := s.index(ep.HostPort())
	if i < 0 {
		return nil
	}
	return s.loads[i]
}

// HealthyCount returns how many endpoints are healthy.
func (s *Snapshot) HealthyCount() int { return s.healthy }

// Best returns the best state of any known endpoint: Down when none is known.
func (s *Snapshot) Best() State { return s.best }

// Rotation says what new connections go to.
type Rotation string

// The rotations, from best to worst.
const (
	RotationHealthy  Rotation = "healthy"  // the healthy endpoints
	RotationDegraded Rotation = "degraded" // none is healthy: the degraded ones
	// RotationLastResort: none is healthy or degraded. Each client is tried on every known
	// endpoint, the gateway serves from whatever answers, and no connection is evicted.
	RotationLastResort Rotation = "last-resort"
	RotationNone       Rotation = "none" // no endpoint is known yet
)

// Rotation returns what new connections go to.
func (s *Snapshot) Rotation() Rotation {
	switch {
	case len(s.known) == 0:
		return RotationNone
	case s.best == Healthy:
		return RotationHealthy
	case s.best == Degraded:
		return RotationDegraded
	default:
		return RotationLastResort
	}
}

// Available returns the endpoints in rotation for new connections.
func (s *Snapshot) Available() []resolver.Endpoint { return s.available }

// Tiers returns the endpoints in rotation grouped by SRV priority, lowest first.
func (s *Snapshot) Tiers() []Tier { return s.tiers }

// Next advances the round-robin cursor and returns its new value; callers index with it modulo
// the length of the slice they pick from.
func (s *Snapshot) Next() uint32 { return s.cursor.Add(1) }

// Changed is closed when a newer Snapshot replaces this one.
func (s *Snapshot) Changed() <-chan struct{} { return s.changed }

// Table holds the current View (the Snapshot and the last probe of every endpoint) and the
// Load of every address. Its readers are on any goroutine; its only writer is the Manager. A
// probe that changes no state makes a new View around the same Snapshot, so that it wakes only
// those waiting for probes (Probed), not everyone waiting for a change.
type Table struct {
	cur     atomic.Pointer[View]
	loads   map[resolver.HostPort]*Load // written by the Manager only, which hands them to snapshots
	probed  wakeup                      // fired when a probe is recorded
	traffic Traffic                     // told by every Load of the table
}

// View is one consistent reading of the Table: a Snapshot and the last probes as they were
// together. It is immutable.
type View struct {
	snap   *Snapshot
	probes map[resolver.HostPort]Probe // the last probe of each address; never written once published
}

// Snapshot returns the view's Snapshot.
func (v *View) Snapshot() *Snapshot { return v.snap }

// LastProbe returns the latest probe of the endpoint at ep's address, and false before its
// first one.
func (v *View) LastProbe(ep resolver.Endpoint) (Probe, bool) {
	p, ok := v.probes[ep.HostPort()]
	return p, ok
}

// Scheme returns what the member at ep serves, as far as the view knows: see schemeOf.
func (v *View) Scheme(ep resolver.Endpoint) member.Scheme {
	return schemeOf(ep, v.probes[ep.HostPort()].Scheme)
}

// Probe is the outcome of one probe of an endpoint.
type Probe struct {
	At     time.Time
	Result State
	NoNews member.Fault  // set when the probe said nothing of the member; Result is then not read
	Reason string        // empty when healthy
	Scheme member.Scheme // what the member serves, as far as known
	Note   string        // what the probe found worth saying, though no fault
}

// Outcome names what the probe found: its result, or that it had no news of the member.
func (p Probe) Outcome() string { return Outcome(p.Result, p.NoNews) }

// Outcome names what a probe found: the state st, or, when noNews is set, that the probe said
// nothing of the member.
func Outcome(st State, noNews member.Fault) string {
	switch noNews {
	case member.SeenLate:
		return "too late"
	case member.LocalShortage:
		return "no verdict"
	}
	return st.String()
}

// LastProbe returns the latest probe of the endpoint at ep's address, and false before its
// first one.
func (t *Table) LastProbe(ep resolver.Endpoint) (Probe, bool) { return t.View().LastProbe(ep) }

// Scheme returns what the member at ep serves, as far as the gateway knows: see schemeOf.
func (t *Table) Scheme(ep resolver.Endpoint) member.Scheme { return t.View().Scheme(ep) }

// schemeOf is what the member at ep serves when its probes found found: TLS for a member from
// _etcd-client-ssl, which is never taken for plain; what the probes found otherwise (unknown
// before they found it).
func schemeOf(ep resolver.Endpoint, found member.Scheme) member.Scheme {
	if ep.TLS {
		return member.SchemeTLS
	}
	return found
}

// Probed returns a channel closed when the next probe of any endpoint is recorded.
func (t *Table) Probed() <-chan struct{} { return t.probed.wait() }

// recordProbe makes p the last probe of hp, in a new View around the same Snapshot.
func (t *Table) recordProbe(hp resolver.HostPort, p Probe) {
	old := t.cur.Load()
	probes := maps.Clone(old.probes)
	probes[hp] = p
	t.cur.Store(&View{snap: old.snap, probes: probes})
	t.probed.fire()
}

// forgetProbes drops the last probe of hp, which has left the set.
func (t *Table) forgetProbes(hp resolver.HostPort) {
	old := t.cur.Load()
	if _, ok := old.probes[hp]; !ok {
		return
	}
	probes := maps.Clone(old.probes)
	delete(probes, hp)
	t.cur.Store(&View{snap: old.snap, probes: probes})
}

// loadOf returns the Load of hp, creating it. The Manager alone calls it.
func (t *Table) loadOf(hp resolver.HostPort) *Load {
	l := t.loads[hp]
	if l == nil {
		l = &Load{traffic: &t.traffic}
		t.loads[hp] = l
	}
	return l
}

// forgetLoad drops the Load of an address that has left the set, unless connections to it are
// still counted: a member that comes back while they last keeps counting them.
func (t *Table) forgetLoad(hp resolver.HostPort) {
	if l := t.loads[hp]; l != nil && l.Active() <= 0 {
		delete(t.loads, hp)
	}
}

// NewTable returns a Table holding an empty Snapshot.
func NewTable() *Table {
	t := &Table{loads: make(map[resolver.HostPort]*Load)}
	t.cur.Store(&View{snap: NewSnapshot(nil, nil, nil), probes: map[resolver.HostPort]Probe{}})
	return t
}

// Traffic returns the gateway's Traffic: requests to any member of the table.
func (t *Table) Traffic() *Traffic { return &t.traffic }

// Load returns the current Snapshot.
func (t *Table) Load() *Snapshot { return t.cur.Load().snap }

// View returns the current View: the Snapshot and the last probes, consistent with each other.
func (t *Table) View() *View { return t.cur.Load() }

// store replaces the current Snapshot, keeping the last probes, and wakes everyone waiting on
// the old one.
func (t *Table) store(s *Snapshot) {
	old := t.cur.Load()
	t.cur.Store(&View{snap: s, probes: old.probes})
	close(old.snap.changed)
}
