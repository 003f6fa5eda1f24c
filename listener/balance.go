package listener

import (
	"math"
	"math/rand/v2"
	"time"

	"github.com/etcd-gateway/etcd-gateway/member"
)

// Rebalancing policy. The figures are documented in the README.
const (
	// rebalanceMinAge: a connection younger than this is not moved, so that a round never
	// moves the connections it has just placed.
	rebalanceMinAge = 10 * time.Second
	// rebalanceSettle: the least loaded member must have been healthy this long, and the
	// loads uneven this long, before anything is moved.
	rebalanceSettle = 3 * time.Second
	// rebalanceStartJitter: a round begins after a random delay up to this, so that the
	// gateways of many hosts do not move their clients in the same second.
	rebalanceStartJitter = time.Second
	// rebalanceGap: at least this between two closes (at most 5 a second), plus a random
	// jitter up to as much again.
	rebalanceGap = 200 * time.Millisecond
	// RebalanceMaxRate is the most connections rebalancing closes a second.
	RebalanceMaxRate = float64(time.Second / rebalanceGap)
	// rebalanceMinTolerance and rebalanceTolerance: the spread tolerated before anything is
	// moved: 2 connections, or 5 % of them when that is more.
	rebalanceMinTolerance = 2
	rebalanceTolerance    = 0.05
)

// balanceMember is one healthy member of the tier that takes new connections, as the
// rebalancing policy sees it.
type balanceMember struct {
	share  uint64    // relative share of the connections (the tier's shares)
	active int64     // connections counted on it now
	since  time.Time // when it became healthy; zero when before this gateway knew
}

// balanceConn is one forwarded connection that may be moved.
type balanceConn struct {
	member int       // index into the members
	born   time.Time // when its client arrived
	quiet  bool      // it carries no request in flight (quietness.quiet)
	// quietSince orders the candidates: the longest quiet goes first.
	quietSince time.Time
}

// balancePolicy decides when and which connections to move so that the healthy members carry
// loads in proportion to their shares. It is a pure function of what it is shown, the time it
// is given and its own pacing state, so that it can be tested over simulated hours.
//
// A round begins when the spread has been above the tolerance for the settle time; it moves
// one connection at a time from the most loaded member, and ends when the loads are as even as
// whole connections allow (a spread of at most 1), or when the spread is back within the
// tolerance and nothing could be moved for rebalanceLinger.
type balancePolicy struct {
	quietFor    time.Duration // --rebalance-quiet-time
	minAge      time.Duration // rebalanceMinAge
	settle      time.Duration // rebalanceSettle
	jitter      func(max time.Duration) time.Duration
	unevenSince time.Time // zero while the spread is within the tolerance
	active      bool      // a round runs
	lastMove    time.Time // the round's last close, or its start
	nextClose   time.Time // pacing: no close before
}

// rebalanceLinger ends a round whose spread is within the tolerance but that found nothing to
// move for this long, so that the sampler stops.
const rebalanceLinger = 10 * time.Second

func newBalancePolicy(quietFor time.Duration) *balancePolicy {
	return &balancePolicy{quietFor: quietFor, minAge: rebalanceMinAge, settle: rebalanceSettle,
		jitter: func(max time.Duration) time.Duration { return rand.N(max) }}
}

// balanceDecision is what the policy says at one moment.
type balanceDecision struct {
	spread     float64 // most minus fewest connections, relative to the shares
	imbalanced bool    // a round runs or may begin: the connections must be sampled
	victim     int     // index into the conns to close now; -1 for none
	from, to   int     // the members of the move (to: the least loaded), when victim >= 0
}

// spreadOf returns the spread of the members' loads: the most minus the fewest connections
// relative to each member's share of them, in connections; each member's deviation from its
// share; and the index of the least loaded.
func spreadOf(members []balanceMember) (spread float64, devs []float64, least int) {
	var total int64
	var shares uint64
	for _, m := range members {
		total += max(m.active, 0)
		shares += m.share
	}
	devs = make([]float64, len(members))
	if len(members) == 0 || shares == 0 {
		return 0, devs, 0
	}
	hi, lo := math.Inf(-1), math.Inf(1)
	for i, m := range members {
		devs[i] = float64(max(m.active, 0)) - float64(total)*float64(m.share)/float64(shares)
		hi = max(hi, devs[i])
		if devs[i] < lo {
			lo, least = devs[i], i
		}
	}
	return hi - lo, devs, least
}

// tolerance is the spread tolerated for total connections.
func tolerance(total int64) float64 {
	return max(rebalanceMinTolerance, math.Ceil(float64(total)*rebalanceTolerance))
}

func totalActive(members []balanceMember) int64 {
	var total int64
	for _, m := range members {
		total += max(m.active, 0)
	}
	return total
}

// needsSample reports whether the connections must be sampled: a round runs, or the spread of
// members is above the tolerance.
func (b *balancePolicy) needsSample(members []balanceMember) bool {
	if len(members) < 2 {
		return false
	}
	spread, _, _ := spreadOf(members)
	return b.active || spread > tolerance(totalActive(members))
}

// decide says at now whether the loads of members are uneven and which of conns, if any, to
// close now. A connection is closed only when the loads have been uneven for the settle time,
// the least loaded member has been healthy as long, the pace allows, and the connection is
// quiet, old enough, and on a member whose move toward the least loaded makes the loads more
// even.
func (b *balancePolicy) decide(now time.Time, members []balanceMember, conns []balanceConn) balanceDecision {
	d := balanceDecision{victim: -1}
	if len(members) < 2 {
		b.endRound()
		return d
	}
	spread, devs, least := spreadOf(members)
	d.spread = spread
	over := spread > tolerance(totalActive(members))
	switch {
	case !over:
		b.unevenSince = time.Time{}
	case b.unevenSince.IsZero():
		b.unevenSince = now
	}
	if b.active && (spread <= 1 || !over && now.Sub(b.lastMove) >= rebalanceLinger) {
		b.endRound()
	}
	if !b.active && !over {
		return d
	}
	d.imbalanced = true
	if !b.active {
		if now.Sub(b.unevenSince) < b.settle {
			return d
		}
		b.active, b.lastMove = true, now
		b.nextClose = now.Add(b.jitter(rebalanceStartJitter))
	}
	if since := members[least].since; !since.IsZero() && now.Sub(since) < b.settle {
		return d
	}
	if now.Before(b.nextClose) {
		return d
	}
	best := -1
	for i, c := range conns {
		if !c.quiet || now.Sub(c.born) < b.minAge || devs[c.member]-devs[least] <= 1 {
			continue
		}
		if best < 0 || devs[c.member] > devs[conns[best].member] ||
			devs[c.member] == devs[conns[best].member] && c.quietSince.Before(conns[best].quietSince) {
			best = i
		}
	}
	if best < 0 {
		return d
	}
	d.victim, d.from, d.to = best, conns[best].member, least
	b.lastMove = now
	b.nextClose = now.Add(rebalanceGap + b.jitter(rebalanceGap))
	return d
}

// endRound forgets a round: the loads are even again, or nothing is left to balance.
func (b *balancePolicy) endRound() {
	b.unevenSince = time.Time{}
	b.active = false
}

// quietness is the rebalancer's record of one connection's traffic, kept by sampling the byte
// counters the data path keeps anyway: no work per message. Between two samples the order of
// the bytes is unknown, so a connection is quiet only when the last sample that saw more than
// control frames saw them go to the client (an answer, a watch event), with no more from the
// client than the control frames that acknowledge them, and no byte has moved since for the
// quiet time: a request sent and not yet answered is in flight.
type quietness struct {
	sampled   bool
	up, down  int64     // the counters at the last sample
	changedAt time.Time // when a sample last saw them change
	toClient  bool      // that sample saw bytes to the client alone
	// asked: a sample saw a request, and none saw its answer since. Until an answer, the
	// member's own control frames (its answer to the client's PING, its WINDOW_UPDATE and
	// PING for the request's DATA) may come alone, seconds before it.
	asked bool
	// fromClientAlone: the bytes from the client, in samples each within control frames, since
	// a sample last saw any from the member. Control frames answer the member's bytes (the
	// WINDOW_UPDATE and PING for an answer may fall in the next sample) or are a keepalive
	// that the member answers; the frames of a request come together, so once these add up
	// to more than control frames they are a request.
	fromClientAlone int64
}

// controlAllowance is how many bytes of HTTP/2 control frames alone each side of a connection
// may send in one sample without it saying anything about a request in flight.
type controlAllowance struct {
	client int64 // member.ClientControlBytes: from the client, along with bytes to it
	member int64 // member.MemberControlBytes: from the member, while a request is in flight
}

// controlAllowanceOf returns the allowance for a member that serves scheme.
func controlAllowanceOf(scheme member.Scheme) controlAllowance {
	return controlAllowance{client: member.ClientControlBytes(scheme), member: member.MemberControlBytes(scheme)}
}

// sample records the counters up and down seen at now, with control frames up to allow.
func (q *quietness) sample(now time.Time, up, down int64, allow controlAllowance) {
	if !q.sampled {
		q.sampled, q.up, q.down, q.changedAt = true, up, down, now
		return // what came before is unknown: not quiet until it moves
	}
	if up == q.up && down == q.down {
		return
	}
	clientSent, memberSent := up-q.up, down-q.down
	if memberSent > 0 {
		q.fromClientAlone = 0
	} else {
		q.fromClientAlone += clientSent
	}
	switch {
	case clientSent > allow.client, q.fromClientAlone > allow.client:
		q.toClient, q.asked = false, true // a request, or the pieces of one
	case memberSent > allow.member, !q.asked && memberSent > allow.client:
		q.toClient, q.asked = true, false // an answer or an event, with the client's control frames at most
	}
	// Control frames, both ways or from the client alone, or from the member alone while a
	// request is in flight, say nothing about it: whether one is stays as it was.
	q.changedAt, q.up, q.down = now, up, down
}

// quiet reports whether the connection is quiet at now for quietFor.
func (q *quietness) quiet(now time.Time, quietFor time.Duration) bool {
	return q.sampled && q.toClient && now.Sub(q.changedAt) >= quietFor
}
