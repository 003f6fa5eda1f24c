package health

import (
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// Snapshot is one immutable view of the endpoints: every known endpoint with its state, and
// the ones in rotation for new connections: the healthy ones, or the degraded ones while none
// is healthy. Only its round-robin cursor changes. Readers must not modify the slices it
// returns.
type Snapshot struct {
	known     []resolver.Endpoint
	states    []State
	reasons   []string // why known[i] is not healthy, as the Manager last learnt it
	healthy   int
	available []resolver.Endpoint
	tiers     []Tier
	cursor    atomic.Uint32
	changed   chan struct{}
}

// NewSnapshot builds a Snapshot of known (sorted by priority) whose states[i] is the state of
// known[i]. Its cursor starts at a random index so that gateways restarted together do not all
// pick the same member first.
func NewSnapshot(known []resolver.Endpoint, states []State) *Snapshot {
	s := &Snapshot{
		known:   slices.Clone(known),
		states:  slices.Clone(states),
		changed: make(chan struct{}),
	}
	for _, st := range states {
		if st == Healthy {
			s.healthy++
		}
	}
	inRotation := Healthy
	if s.healthy == 0 {
		inRotation = Degraded
	}
	for i, ep := range s.known {
		if s.states[i] == inRotation {
			s.available = append(s.available, ep)
		}
	}
	s.tiers = buildTiers(s.available)
	s.cursor.Store(rand.Uint32())
	return s
}

// Known returns every endpoint of the current set, whatever its state.
func (s *Snapshot) Known() []resolver.Endpoint { return s.known }

// State returns the state of ep, and false when ep is not known.
func (s *Snapshot) State(ep resolver.Endpoint) (State, bool) {
	i := slices.Index(s.known, ep)
	if i < 0 {
		return Down, false
	}
	return s.states[i], true
}

// Reason returns why ep is in its state when it is not healthy: the last failed probe, dial or
// heartbeat that changed it.
func (s *Snapshot) Reason(ep resolver.Endpoint) string {
	i := slices.Index(s.known, ep)
	if i < 0 || i >= len(s.reasons) {
		return ""
	}
	return s.reasons[i]
}

// HealthyCount returns how many endpoints are healthy.
func (s *Snapshot) HealthyCount() int { return s.healthy }

// Available returns the endpoints in rotation for new connections.
func (s *Snapshot) Available() []resolver.Endpoint { return s.available }

// Tiers returns the endpoints in rotation grouped by SRV priority, lowest first.
func (s *Snapshot) Tiers() []Tier { return s.tiers }

// Next advances the round-robin cursor and returns its new value; callers index with it modulo
// the length of the slice they pick from.
func (s *Snapshot) Next() uint32 { return s.cursor.Add(1) }

// Changed is closed when a newer Snapshot replaces this one.
func (s *Snapshot) Changed() <-chan struct{} { return s.changed }

// Table holds the current Snapshot. Load is safe from any goroutine; only the Manager stores.
// It also keeps the last probe of every endpoint, which each Prober writes for its own.
type Table struct {
	cur     atomic.Pointer[Snapshot]
	probes  sync.Map     // resolver.Endpoint → *Probe
	clients atomic.Int64 // connections being forwarded

	arrivedMu sync.Mutex
	arrived   chan struct{} // closed when the first client arrives; then replaced
}

// AddClients counts forwarded connections: +1 when one starts, -1 when it ends. Probers send
// their liveness heartbeats only while there are some: with no client to protect, the
// probes alone keep the state, and an idle gateway costs less. The first client after none
// wakes the probers, so that heartbeats resume at once.
func (t *Table) AddClients(delta int64) {
	if t.clients.Add(delta) == delta && delta > 0 {
		t.arrivedMu.Lock()
		if t.arrived != nil {
			close(t.arrived)
			t.arrived = nil
		}
		t.arrivedMu.Unlock()
	}
}

// hasClients reports whether any connection is being forwarded.
func (t *Table) hasClients() bool { return t.clients.Load() > 0 }

// clientArrives returns a channel closed when the next first client arrives.
func (t *Table) clientArrives() <-chan struct{} {
	t.arrivedMu.Lock()
	defer t.arrivedMu.Unlock()
	if t.arrived == nil {
		t.arrived = make(chan struct{})
	}
	return t.arrived
}

// Probe is the outcome of one probe of an endpoint.
type Probe struct {
	At     time.Time
	Result State
	Reason string // empty when healthy
}

// LastProbe returns the latest probe of ep, and false before its first one.
func (t *Table) LastProbe(ep resolver.Endpoint) (Probe, bool) {
	v, ok := t.probes.Load(ep)
	if !ok {
		return Probe{}, false
	}
	return *v.(*Probe), true
}

func (t *Table) recordProbe(ep resolver.Endpoint, p Probe) { t.probes.Store(ep, &p) }

func (t *Table) forgetProbes(ep resolver.Endpoint) { t.probes.Delete(ep) }

// NewTable returns a Table holding an empty Snapshot.
func NewTable() *Table {
	t := &Table{}
	t.cur.Store(NewSnapshot(nil, nil))
	return t
}

// Load returns the current Snapshot.
func (t *Table) Load() *Snapshot { return t.cur.Load() }

// store replaces the current Snapshot and wakes everyone waiting on the old one.
func (t *Table) store(s *Snapshot) {
	old := t.cur.Swap(s)
	close(old.changed)
}
