package health

import (
	"math/rand/v2"
	"slices"
	"sync/atomic"

	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// Snapshot is one immutable view of the endpoints: every known endpoint and the ones available
// for new connections. Only its round-robin cursor changes. Readers must not modify the slices
// it returns.
type Snapshot struct {
	known     []resolver.Endpoint
	available []resolver.Endpoint
	tiers     []Tier
	cursor    atomic.Uint32
	changed   chan struct{}
}

// NewSnapshot builds a Snapshot from copies of known and available, both sorted by priority.
// Its cursor starts at a random index so that gateways restarted together do not all pick the
// same member first.
func NewSnapshot(known, available []resolver.Endpoint) *Snapshot {
	s := &Snapshot{
		known:     slices.Clone(known),
		available: slices.Clone(available),
		tiers:     buildTiers(available),
		changed:   make(chan struct{}),
	}
	s.cursor.Store(rand.Uint32())
	return s
}

// Known returns every endpoint of the current set, available or not.
func (s *Snapshot) Known() []resolver.Endpoint { return s.known }

// Available returns the endpoints that take new connections.
func (s *Snapshot) Available() []resolver.Endpoint { return s.available }

// Tiers returns the available endpoints grouped by SRV priority, lowest first.
func (s *Snapshot) Tiers() []Tier { return s.tiers }

// Next advances the round-robin cursor and returns its new value; callers index with it modulo
// the length of the slice they pick from.
func (s *Snapshot) Next() uint32 { return s.cursor.Add(1) }

// Changed is closed when a newer Snapshot replaces this one.
func (s *Snapshot) Changed() <-chan struct{} { return s.changed }

// Table holds the current Snapshot. Load is safe from any goroutine; only the Manager stores.
type Table struct {
	cur atomic.Pointer[Snapshot]
}

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
