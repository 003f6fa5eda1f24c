package health

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/resolver"
)

func ep(host string, priority, weight uint16) resolver.Endpoint {
	return resolver.Endpoint{Host: host, Port: 2379, Priority: priority, Weight: weight}
}

// tierOf builds the one tier of eps, with a fresh Load each.
func tierOf(t *testing.T, eps ...resolver.Endpoint) Tier {
	t.Helper()
	loads := make([]*Load, len(eps))
	for i := range loads {
		loads[i] = &Load{}
	}
	tiers := buildTiers(eps, loads)
	if len(tiers) != 1 {
		t.Fatalf("%d tiers for one priority", len(tiers))
	}
	return tiers[0]
}

// hold picks n times from tier, keeping every connection, and returns how many each endpoint
// holds, by host.
func hold(tier *Tier, n int, cursor uint32, now func() time.Time) map[string]int {
	counts := map[string]int{}
	for i := range n {
		k := tier.Pick(cursor+uint32(i), now)
		tier.Loads()[k].Start()
		counts[tier.Endpoints()[k].Host]++
	}
	return counts
}

func noClock() time.Time { panic("the clock was read without a slow start") }

func TestTierPickLeastLoaded(t *testing.T) {
	tests := []struct {
		name string
		give []resolver.Endpoint
		n    int
		want map[string]int
	}{
		{"all weight 0: equal shares", []resolver.Endpoint{ep("a", 0, 0), ep("b", 0, 0), ep("c", 0, 0)}, 30,
			map[string]int{"a": 10, "b": 10, "c": 10}},
		{"equal weights", []resolver.Endpoint{ep("a", 0, 1), ep("b", 0, 1)}, 30, map[string]int{"a": 15, "b": 15}},
		{"weights 1:3", []resolver.Endpoint{ep("a", 0, 1), ep("b", 0, 3)}, 40, map[string]int{"a": 10, "b": 30}},
		{"weights 10/30/60", []resolver.Endpoint{ep("a", 0, 10), ep("b", 0, 30), ep("c", 0, 60)}, 100,
			map[string]int{"a": 10, "b": 30, "c": 60}},
		{"weight 0 among weighted gets none while the others are not overloaded",
			[]resolver.Endpoint{ep("z", 0, 0), ep("a", 0, 50), ep("b", 0, 49)}, 99, map[string]int{"z": 0, "a": 50, "b": 49}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, cursor := range []uint32{0, 7, math.MaxUint32 - 3} {
				tier := tierOf(t, tt.give...)
				got := hold(&tier, tt.n, cursor, noClock)
				for host, want := range tt.want {
					if got[host] != want {
						t.Errorf("cursor %d: %s holds %d of %d, want %d (%v)", cursor, host, got[host], tt.n, want, got)
					}
				}
			}
		})
	}
}

func TestTierPickFollowsTheLoads(t *testing.T) {
	tier := tierOf(t, ep("a", 0, 0), ep("b", 0, 0), ep("c", 0, 0))
	loads := tier.Loads()
	loads[0].active.Store(15)
	loads[1].active.Store(15)
	for i := range 15 {
		if k := tier.Pick(uint32(i), noClock); k != 2 {
			t.Fatalf("pick %d went to %s with loads 15/15/%d", i, tier.Endpoints()[k].Host, loads[2].Active())
		}
		loads[2].Start()
	}
	// Now 15/15/15: ties go round robin from the cursor.
	var order []string
	for i := range 6 {
		order = append(order, tier.Endpoints()[tier.Pick(uint32(i), noClock)].Host)
	}
	if got := strings.Join(order, ""); got != "abcabc" {
		t.Fatalf("ties picked %q, want round robin abcabc", got)
	}
}

func TestTierSlowStartBoundsAMemberJustBack(t *testing.T) {
	eps := []resolver.Endpoint{ep("a", 0, 0), ep("b", 0, 0), ep("back", 0, 0)}
	loads := []*Load{{}, {}, {}}
	loads[0].active.Store(15)
	loads[1].active.Store(15)
	began := time.Unix(1000, 0)
	loads[2].beginSlowStart(began)
	tier := buildTiers(eps, loads)[0]
	at := began
	clock := func() time.Time { return at }
	count := func(n int) int {
		back := 0
		for i := range n {
			k := tier.Pick(uint32(i), clock)
			loads[k].Start()
			if k == 2 {
				back++
			}
		}
		return back
	}
	for i := range 20 { // short connections come and go: they use up nothing
		if k := tier.Pick(uint32(i), clock); k != 2 {
			t.Fatalf("a short connection went to %s while the member back holds none", eps[k].Host)
		}
	}
	if got := count(10); got != slowStartBurst {
		t.Fatalf("right after its return it took %d of 10 new connections, want the burst of %d", got, slowStartBurst)
	}
	at = began.Add(time.Second)
	if got := count(20); got != slowStartRate {
		t.Fatalf("a second later it took %d more, want %d", got, slowStartRate)
	}
	at = began.Add(slowStartWindow)
	for _, l := range loads {
		l.active.Store(10)
	}
	if got := count(3); got != 1 {
		t.Fatalf("after its slow start it took %d of 3 with equal loads, want 1", got)
	}
}

func TestTierSlowStartOfEveryMemberIsLifted(t *testing.T) {
	eps := []resolver.Endpoint{ep("a", 0, 0), ep("b", 0, 0)}
	loads := []*Load{{}, {}}
	now := time.Unix(1000, 0)
	for _, l := range loads {
		l.beginSlowStart(now)
	}
	tier := buildTiers(eps, loads)[0]
	got := hold(&tier, 40, 0, func() time.Time { return now })
	if got["a"] != 20 || got["b"] != 20 {
		t.Fatalf("with every member slow-starting, 40 connections went %v, want 20 each", got)
	}
}

func TestBuildTiersGroupsByPriority(t *testing.T) {
	tiers := buildTiers([]resolver.Endpoint{ep("a", 0, 0), ep("b", 0, 5), ep("c", 10, 0), ep("d", 20, 1), ep("e", 20, 1)},
		[]*Load{{}, {}, {}, {}, {}})
	want := []struct {
		priority uint16
		n        int
	}{{0, 2}, {10, 1}, {20, 2}}
	if len(tiers) != len(want) {
		t.Fatalf("%d tiers, want %d", len(tiers), len(want))
	}
	for i, w := range want {
		if tiers[i].Priority() != w.priority || len(tiers[i].Endpoints()) != w.n {
			t.Errorf("tier %d: priority %d with %d endpoints, want %d with %d",
				i, tiers[i].Priority(), len(tiers[i].Endpoints()), w.priority, w.n)
		}
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	eps := []resolver.Endpoint{ep("a", 0, 10), ep("b", 0, 20), ep("c", 1, 0)}
	s := NewSnapshot(eps, []State{Healthy, Healthy, Healthy}, nil)
	allocs := testing.AllocsPerRun(1000, func() {
		tiers := s.Tiers()
		tiers[0].Pick(s.Next(), time.Now)
	})
	if allocs != 0 {
		t.Fatalf("a pick allocates %.1f times", allocs)
	}
}

func BenchmarkPick(b *testing.B) {
	eps := []resolver.Endpoint{ep("a", 0, 0), ep("b", 0, 0), ep("c", 0, 0)}
	s := NewSnapshot(eps, []State{Healthy, Healthy, Healthy}, nil)
	b.ReportAllocs()
	for b.Loop() {
		tiers := s.Tiers()
		tiers[0].Pick(s.Next(), time.Now)
	}
}
