package health

import (
	"time"

	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// Tier is the available endpoints of one SRV priority, prepared for least-loaded selection:
// each endpoint with its Load and its share of the tier's connections.
type Tier struct {
	eps   []resolver.Endpoint
	loads []*Load
	// shares[i] is eps[i]'s relative share: 1 each when every weight is 0; otherwise the
	// weight scaled by total+1, and 1 for a weight-0 endpoint, which so takes a connection
	// only when the weighted ones are far more loaded (RFC 2782: "a very small chance").
	shares []uint64
	// slowUntil is when the last slow start among eps ends; zero when none has one.
	slowUntil time.Time
}

// buildTiers groups eps (sorted by priority), whose loads[i] counts eps[i], into tiers, lowest
// priority first.
func buildTiers(eps []resolver.Endpoint, loads []*Load) []Tier {
	var tiers []Tier
	for start := 0; start < len(eps); {
		end := start + 1
		for end < len(eps) && eps[end].Priority == eps[start].Priority {
			end++
		}
		tiers = append(tiers, newTier(eps[start:end], loads[start:end]))
		start = end
	}
	return tiers
}

func newTier(eps []resolver.Endpoint, loads []*Load) Tier {
	t := Tier{eps: eps, loads: loads, shares: make([]uint64, len(eps))}
	var total uint64
	for _, ep := range eps {
		total += uint64(ep.Weight)
	}
	for i, ep := range eps {
		switch {
		case total == 0:
			t.shares[i] = 1
		case ep.Weight == 0:
			t.shares[i] = 1
		default:
			t.shares[i] = uint64(ep.Weight) * (total + 1)
		}
		if until := loads[i].slowUntil(); until.After(t.slowUntil) {
			t.slowUntil = until
		}
	}
	return t
}

// Endpoints returns the tier's endpoints; Pick indexes into it.
func (t *Tier) Endpoints() []resolver.Endpoint { return t.eps }

// Loads returns the Load of each endpoint, in the order of Endpoints.
func (t *Tier) Loads() []*Load { return t.loads }

// Shares returns each endpoint's relative share of the tier's connections, in the order of
// Endpoints.
func (t *Tier) Shares() []uint64 { return t.shares }

// Priority is the SRV priority shared by the tier's endpoints.
func (t *Tier) Priority() uint16 { return t.eps[0].Priority }

// Pick chooses the endpoint index whose next connection leaves it the least loaded relative
// to its share: the smallest (active+1)/share. Ties go to the first from cursor, so equal
// loads are served round robin. A member in its slow start is passed over while it holds as
// many connections as its slow start allows, unless every endpoint of the tier is; the clock
// is read only while a slow start runs.
func (t *Tier) Pick(cursor uint32, now func() time.Time) int {
	var at time.Time
	if !t.slowUntil.IsZero() {
		if at = now(); !at.Before(t.slowUntil) {
			at = time.Time{}
		}
	}
	best := t.leastLoaded(cursor, at)
	if best < 0 {
		best = t.leastLoaded(cursor, time.Time{})
	}
	return best
}

// leastLoaded returns the least loaded index from cursor on; with a non-zero at, it skips the
// endpoints whose slow start admits no more at that time, and returns -1 when that is all.
func (t *Tier) leastLoaded(cursor uint32, at time.Time) int {
	n := len(t.eps)
	best := -1
	var bestNext, bestShare uint64
	for k := range n {
		i := int((uint64(cursor) + uint64(k)) % uint64(n))
		if !at.IsZero() && !t.loads[i].admits(at) {
			continue
		}
		next := uint64(max(t.loads[i].Active(), 0)) + 1
		if best < 0 || next*bestShare < bestNext*t.shares[i] {
			best, bestNext, bestShare = i, next, t.shares[i]
		}
	}
	return best
}
