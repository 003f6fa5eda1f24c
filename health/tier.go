package health

import (
	"math/rand/v2"
	"slices"

	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// Tier is the available endpoints of one SRV priority, prepared for RFC 2782 selection:
// weight-0 endpoints first, then the weighted ones with the running sum of their weights.
type Tier struct {
	eps   []resolver.Endpoint
	zeros int      // how many weight-0 endpoints lead eps
	cum   []uint32 // cum[i]: sum of the weights of eps[:i+1]
	total uint32
}

// buildTiers groups eps (sorted by priority) into tiers, lowest priority first.
func buildTiers(eps []resolver.Endpoint) []Tier {
	var tiers []Tier
	for start := 0; start < len(eps); {
		end := start + 1
		for end < len(eps) && eps[end].Priority == eps[start].Priority {
			end++
		}
		tiers = append(tiers, newTier(eps[start:end]))
		start = end
	}
	return tiers
}

func newTier(eps []resolver.Endpoint) Tier {
	t := Tier{eps: make([]resolver.Endpoint, 0, len(eps)), cum: make([]uint32, 0, len(eps))}
	for _, ep := range eps {
		if ep.Weight == 0 {
			t.eps = append(t.eps, ep)
			t.cum = append(t.cum, 0)
		}
	}
	t.zeros = len(t.eps)
	for _, ep := range eps {
		if ep.Weight > 0 {
			t.total += uint32(ep.Weight)
			t.eps = append(t.eps, ep)
			t.cum = append(t.cum, t.total)
		}
	}
	return t
}

// Endpoints returns the tier's endpoints in selection order; Pick indexes into it.
func (t *Tier) Endpoints() []resolver.Endpoint { return t.eps }

// Priority is the SRV priority shared by the tier's endpoints.
func (t *Tier) Priority() uint16 { return t.eps[0].Priority }

// Pick chooses an endpoint index. When every weight is 0 it is round robin on cursor;
// otherwise it is the RFC 2782 weighted draw, in which the weight-0 endpoints share the
// smallest chance, 1 in total+1, and take turns on cursor among themselves.
func (t *Tier) Pick(cursor uint32) int {
	if t.total == 0 {
		return int(cursor % uint32(len(t.eps)))
	}
	if t.zeros > 0 {
		r := rand.Uint32N(t.total + 1)
		if r == 0 {
			return int(cursor % uint32(t.zeros))
		}
		i, _ := slices.BinarySearch(t.cum[t.zeros:], r)
		return t.zeros + i
	}
	// Without weight-0 endpoints the draw is from 1 to total, so that every endpoint gets
	// exactly its share (the RFC's draw from 0 gives the first one an extra turn).
	i, _ := slices.BinarySearch(t.cum, 1+rand.Uint32N(t.total))
	return i
}
