package health

import (
	"testing"
	"time"
)

// The grid gives every prober of a gateway the same instants, after any time, whatever the
// period; another phase gives other instants.
func TestGridNext(t *testing.T) {
	g := grid{phase: 300 * time.Millisecond}
	base := time.Unix(1_000_000, 0)
	for _, period := range []time.Duration{250 * time.Millisecond, time.Second, 7 * time.Second} {
		for _, after := range []time.Duration{0, time.Millisecond, 299 * time.Millisecond, 300 * time.Millisecond, 1234 * time.Millisecond} {
			at := base.Add(after)
			next := g.next(at, period)
			if !next.After(at) || next.Sub(at) > period {
				t.Fatalf("next(%s, %s) = %s, want within (0, %s] after", after, period, next.Sub(base), period)
			}
			if into := (next.UnixNano() - int64(g.phase)) % int64(period); into != 0 {
				t.Fatalf("next(%s, %s) = %s is %s off the grid", after, period, next.Sub(base), time.Duration(into))
			}
		}
	}
	if other := (grid{phase: 100 * time.Millisecond}); other.next(base, time.Second).Equal(g.next(base, time.Second)) {
		t.Fatal("two phases give the same instants")
	}
}
