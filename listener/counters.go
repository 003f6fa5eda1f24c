package listener

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// EndpointCounters is what the Forwarder has done with one endpoint's address since it
// started.
type EndpointCounters struct {
	Active  int    // connections forwarded now
	Total   uint64 // connections forwarded, ended or not
	Evicted uint64 // connections closed because the endpoint turned unhealthy
	// Rebalanced counts quiet connections closed so that their clients move to a less loaded
	// member.
	Rebalanced uint64
	BytesUp    uint64 // client to endpoint
	BytesDown  uint64 // endpoint to client
}

// counterRetention is how long the counters of an address that left the endpoint set, with no
// live connection, stay, so that a scrape sees its last counts; then they are dropped.
const counterRetention = 10 * time.Minute

// counters owns the Forwarder's counts, per endpoint address, and their retention. The
// Forwarder's connections write them with atomics as they start, copy and end; a reader loads
// them without taking any lock a connection takes. An address that has been out of the
// endpoint set, with no live connection, for counterRetention is dropped at a read.
type counters struct {
	byAddr sync.Map                        // resolver.HostPort → *addrCounters
	known  func(resolver.HostPort) bool    // whether an address is in the endpoint set
	now    func() time.Time                // the clock of retention
	mu     sync.Mutex                      // serializes reads, which apply retention
	gone   map[resolver.HostPort]time.Time // when an address was first read out of the set, idle
}

// addrCounters are one address's counts. active is retired (negative) once the address is
// dropped: a connection that finds it so takes fresh counters.
type addrCounters struct {
	active                     atomic.Int64
	total, evicted, rebalanced atomic.Uint64
	bytesUp, bytesDown         atomic.Uint64 // added as bytes are copied
}

// retired is the active count of dropped counters.
const retired = -1 << 62

func newCounters(known func(resolver.HostPort) bool, now func() time.Time) *counters {
	if known == nil {
		known = func(resolver.HostPort) bool { return true }
	}
	if now == nil {
		now = time.Now
	}
	return &counters{known: known, now: now, gone: make(map[resolver.HostPort]time.Time)}
}

// of returns the counters of hp, creating them.
func (c *counters) of(hp resolver.HostPort) *addrCounters {
	if v, ok := c.byAddr.Load(hp); ok {
		return v.(*addrCounters)
	}
	v, _ := c.byAddr.LoadOrStore(hp, &addrCounters{})
	return v.(*addrCounters)
}

// start counts a connection to hp that starts now, and returns its address's counters, which
// its copies add their bytes to.
func (c *counters) start(hp resolver.HostPort) *addrCounters {
	for {
		a := c.of(hp)
		if n := a.active.Load(); n >= 0 && a.active.CompareAndSwap(n, n+1) {
			a.total.Add(1)
			return a
		}
		c.byAddr.CompareAndDelete(hp, a) // dropped by a read meanwhile: take fresh counters
	}
}

// end counts the end of a connection counted by start.
func (a *addrCounters) end() { a.active.Add(-1) }

// read returns the counters of every address not dropped, after dropping those out of the set
// and idle for counterRetention.
func (c *counters) read() map[resolver.HostPort]EndpointCounters {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	out := make(map[resolver.HostPort]EndpointCounters)
	c.byAddr.Range(func(k, v any) bool {
		hp, a := k.(resolver.HostPort), v.(*addrCounters)
		if c.expired(hp, a, now) {
			return true
		}
		active := a.active.Load()
		if active < 0 {
			return true // dropped
		}
		out[hp] = EndpointCounters{Active: int(active), Total: a.total.Load(), Evicted: a.evicted.Load(),
			Rebalanced: a.rebalanced.Load(), BytesUp: a.bytesUp.Load(), BytesDown: a.bytesDown.Load()}
		return true
	})
	for hp := range c.gone {
		if _, ok := c.byAddr.Load(hp); !ok {
			delete(c.gone, hp)
		}
	}
	return out
}

// expired applies retention to hp's counters a at now, and reports whether it dropped them.
// Call it with c.mu held.
func (c *counters) expired(hp resolver.HostPort, a *addrCounters, now time.Time) bool {
	if c.known(hp) || a.active.Load() > 0 {
		delete(c.gone, hp)
		return false
	}
	since, ok := c.gone[hp]
	if !ok {
		c.gone[hp] = now
		return false
	}
	if now.Sub(since) < counterRetention || !a.active.CompareAndSwap(0, retired) {
		return false // kept a while yet, or a connection started just now
	}
	c.byAddr.CompareAndDelete(hp, a)
	delete(c.gone, hp)
	return true
}
