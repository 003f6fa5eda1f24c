package listener

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// The counters of an address stay while it is in the endpoint set or has a live connection,
// and for counterRetention after it left and went idle; then a read drops them, and a new
// connection counts afresh.
func TestCountersRetention(t *testing.T) {
	hp := resolver.HostPort{Host: "127.0.0.1", Port: 2379}
	var known atomic.Bool
	known.Store(true)
	now := time.Unix(1000, 0)
	c := newCounters(func(resolver.HostPort) bool { return known.Load() }, func() time.Time { return now })

	a := c.start(hp)
	a.bytesUp.Add(10)
	if got := c.read()[hp]; got.Active != 1 || got.Total != 1 || got.BytesUp != 10 {
		t.Fatalf("a live connection reads %+v", got)
	}
	known.Store(false)
	now = now.Add(time.Hour)
	c.read()
	now = now.Add(time.Hour)
	if _, ok := c.read()[hp]; !ok {
		t.Fatal("the counters of an address with a live connection were dropped")
	}
	a.end()
	c.read() // out of the set and idle from now on
	now = now.Add(counterRetention - time.Second)
	if got, ok := c.read()[hp]; !ok || got.Total != 1 || got.Active != 0 {
		t.Fatalf("before the retention the counters read %+v, %v", got, ok)
	}
	now = now.Add(2 * time.Second)
	if got, ok := c.read()[hp]; ok {
		t.Fatalf("after the retention the counters still read %+v", got)
	}
	c.start(hp)
	if got := c.read()[hp]; got.Total != 1 || got.Active != 1 {
		t.Fatalf("a connection after the drop reads %+v; want fresh counters", got)
	}
}

// Connections that start and end while reads drop their address's counters are never lost:
// each is counted by counters that a read still returns, or by counters dropped while idle.
func TestCountersStartWhileDropped(t *testing.T) {
	hp := resolver.HostPort{Host: "127.0.0.1", Port: 2379}
	var clock atomic.Int64
	c := newCounters(func(resolver.HostPort) bool { return false }, func() time.Time { return time.Unix(0, clock.Load()) })
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				a := c.start(hp)
				if a.active.Load() <= 0 {
					t.Error("a started connection counts into dropped counters")
					return
				}
				a.end()
			}
		}()
	}
	for range 2000 {
		clock.Add(int64(counterRetention))
		if got, ok := c.read()[hp]; ok && got.Active < 0 {
			t.Fatalf("read %+v", got)
		}
	}
	close(stop)
	wg.Wait()
}
