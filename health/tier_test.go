package health

import (
	"math"
	"testing"

	"github.com/etcd-gateway/etcd-gateway/resolver"
)

func ep(host string, priority, weight uint16) resolver.Endpoint {
	return resolver.Endpoint{Host: host, Port: 2379, Priority: priority, Weight: weight}
}

func TestTierPickDistribution(t *testing.T) {
	const picks = 100_000
	tests := []struct {
		name string
		give []resolver.Endpoint
		want map[string]float64 // share of picks
	}{
		{"all weight 0: round robin", []resolver.Endpoint{ep("a", 0, 0), ep("b", 0, 0), ep("c", 0, 0)},
			map[string]float64{"a": 1.0 / 3, "b": 1.0 / 3, "c": 1.0 / 3}},
		{"equal weights (etcd picks the first always)", []resolver.Endpoint{ep("a", 0, 1), ep("b", 0, 1)},
			map[string]float64{"a": 0.5, "b": 0.5}},
		{"three equal weights", []resolver.Endpoint{ep("a", 0, 1), ep("b", 0, 1), ep("c", 0, 1)},
			map[string]float64{"a": 1.0 / 3, "b": 1.0 / 3, "c": 1.0 / 3}},
		{"weights 10/30/60", []resolver.Endpoint{ep("a", 0, 10), ep("b", 0, 30), ep("c", 0, 60)},
			map[string]float64{"a": 0.1, "b": 0.3, "c": 0.6}},
		{"weight 0 among weighted is rare", []resolver.Endpoint{ep("z", 0, 0), ep("a", 0, 50), ep("b", 0, 49)},
			map[string]float64{"z": 0.01, "a": 0.50, "b": 0.49}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tiers := buildTiers(tt.give)
			if len(tiers) != 1 {
				t.Fatalf("%d tiers for one priority", len(tiers))
			}
			counts := map[string]int{}
			for i := range picks {
				counts[tiers[0].Endpoints()[tiers[0].Pick(uint32(i))].Host]++
			}
			for host, share := range tt.want {
				got := float64(counts[host]) / picks
				if math.Abs(got-share) > 0.02 {
					t.Errorf("%s got %.3f of picks, want %.3f ± 0.02 (%v)", host, got, share, counts)
				}
			}
		})
	}
}

func TestBuildTiersGroupsByPriority(t *testing.T) {
	tiers := buildTiers([]resolver.Endpoint{ep("a", 0, 0), ep("b", 0, 5), ep("c", 10, 0), ep("d", 20, 1), ep("e", 20, 1)})
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
		tiers[0].Pick(s.Next())
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
		tiers[0].Pick(s.Next())
	}
}
