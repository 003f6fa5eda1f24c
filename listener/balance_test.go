package listener

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// policyAt returns a policy without jitter, and a start time.
func policyAt() (*balancePolicy, time.Time) {
	b := newBalancePolicy(2 * time.Second)
	b.jitter = func(time.Duration) time.Duration { return 0 }
	return b, time.Unix(100_000, 0)
}

// loads returns members with the given connection counts and equal shares, healthy long ago.
func loads(active ...int64) []balanceMember {
	ms := make([]balanceMember, len(active))
	for i, a := range active {
		ms[i] = balanceMember{share: 1, active: a}
	}
	return ms
}

// oldQuietConns returns count quiet connections on each member, born long before now.
func oldQuietConns(now time.Time, members []balanceMember) []balanceConn {
	var conns []balanceConn
	for i, m := range members {
		for range m.active {
			conns = append(conns, balanceConn{member: i, born: now.Add(-time.Hour), quiet: true, quietSince: now.Add(-time.Minute)})
		}
	}
	return conns
}

func TestBalanceTriggerAndTolerance(t *testing.T) {
	tests := []struct {
		name       string
		members    []balanceMember
		imbalanced bool
	}{
		{"even", loads(10, 10, 10), false},
		{"spread 2 of 32 is tolerated", loads(10, 10, 12), false},
		{"spread 4 of 32", loads(9, 10, 13), true},
		{"a member back with none", loads(15, 15, 0), true},
		{"5 % of 200 is tolerated", loads(63, 67, 70), false},
		{"more than 5 % of 200", loads(60, 66, 74), true},
		{"one member", loads(30), false},
		{"weights 1:3 at 10:30", []balanceMember{{share: 1, active: 10}, {share: 3, active: 30}}, false},
		{"weights 1:3 at 20:20", []balanceMember{{share: 1, active: 20}, {share: 3, active: 20}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, now := policyAt()
			conns := oldQuietConns(now, tt.members)
			var closed int
			for i := range 40 { // 10 s
				d := b.decide(now.Add(time.Duration(i)*250*time.Millisecond), tt.members, conns)
				if d.imbalanced != tt.imbalanced {
					t.Fatalf("imbalanced = %v with spread %.2f, want %v", d.imbalanced, d.spread, tt.imbalanced)
				}
				if d.victim >= 0 {
					closed++
					_, devs, _ := spreadOf(tt.members)
					if got := devs[conns[d.victim].member] - devs[d.to]; got <= 1 {
						t.Fatalf("moved a connection between members %.2f apart", got)
					}
				}
			}
			if tt.imbalanced != (closed > 0) {
				t.Fatalf("closed %d connections; imbalanced %v", closed, tt.imbalanced)
			}
		})
	}
}

func TestBalanceMovesFromTheMostLoadedTowardTheWeights(t *testing.T) {
	b, now := policyAt()
	members := []balanceMember{{share: 1, active: 20}, {share: 3, active: 20}}
	conns := oldQuietConns(now, members)
	now = now.Add(rebalanceSettle)
	b.decide(now.Add(-rebalanceSettle), members, conns)
	d := b.decide(now, members, conns)
	if d.victim < 0 || conns[d.victim].member != 0 || d.to != 1 {
		t.Fatalf("decision %+v, want a connection of the weight-1 member moved toward the weight-3 one", d)
	}
}

func TestBalanceWaitsForTheSettleTime(t *testing.T) {
	b, start := policyAt()
	members := loads(15, 15, 0)
	members[2].since = start // just back
	conns := oldQuietConns(start, members)
	for at := time.Duration(0); at < rebalanceSettle; at += 100 * time.Millisecond {
		if d := b.decide(start.Add(at), members, conns); d.victim >= 0 {
			t.Fatalf("moved a connection %s after the least loaded member came back", at)
		}
	}
	if d := b.decide(start.Add(rebalanceSettle), members, conns); d.victim < 0 || d.to != 2 {
		t.Fatalf("after the settle time: %+v, want a move toward the member back", d)
	}

	// Uneven loads must last the settle time too: a blip moves nothing.
	b, start = policyAt()
	b.decide(start, loads(10, 10, 10), nil)
	if d := b.decide(start.Add(time.Second), loads(10, 10, 5), oldQuietConns(start, loads(10, 10, 5))); d.victim >= 0 {
		t.Fatal("loads uneven for a second moved a connection")
	}
	if d := b.decide(start.Add(2*time.Second), loads(10, 10, 10), nil); d.imbalanced {
		t.Fatal("even loads are imbalanced")
	}
	if d := b.decide(start.Add(4*time.Second), loads(10, 10, 5), oldQuietConns(start, loads(10, 10, 5))); d.victim >= 0 {
		t.Fatal("a second blip, well after the first, moved a connection at once")
	}
}

func TestBalancePacesItsCloses(t *testing.T) {
	b, start := policyAt()
	members := loads(30, 30, 0)
	conns := oldQuietConns(start, members)
	b.decide(start, members, conns)
	var closes []time.Time
	for at := rebalanceSettle; at < rebalanceSettle+5*time.Second; at += 10 * time.Millisecond {
		now := start.Add(at)
		if d := b.decide(now, members, conns); d.victim >= 0 {
			closes = append(closes, now)
		}
	}
	for i := 1; i < len(closes); i++ {
		if gap := closes[i].Sub(closes[i-1]); gap < rebalanceGap {
			t.Fatalf("closes %d and %d were %s apart, want at least %s", i-1, i, gap, rebalanceGap)
		}
	}
	if len(closes) > 25 || len(closes) < 20 {
		t.Fatalf("%d closes in 5 s, want at most 5 a second", len(closes))
	}

	// With the real jitter, the first close of a round comes within the start jitter, and the
	// gaps stay between one and two rebalanceGap.
	b = newBalancePolicy(2 * time.Second)
	b.decide(start, members, conns)
	closes = closes[:0]
	for at := rebalanceSettle; at < rebalanceSettle+5*time.Second; at += 10 * time.Millisecond {
		now := start.Add(at)
		if d := b.decide(now, members, conns); d.victim >= 0 {
			closes = append(closes, now)
		}
	}
	if len(closes) == 0 || closes[0].Sub(start.Add(rebalanceSettle)) > rebalanceStartJitter {
		t.Fatalf("first close at %v, want within %s of the settle time", closes, rebalanceStartJitter)
	}
	for i := 1; i < len(closes); i++ {
		if gap := closes[i].Sub(closes[i-1]); gap < rebalanceGap || gap > 2*rebalanceGap+10*time.Millisecond {
			t.Fatalf("jittered gap %s, want between %s and %s", gap, rebalanceGap, 2*rebalanceGap)
		}
	}
}

func TestBalanceMovesOnlyQuietOldConnections(t *testing.T) {
	b, start := policyAt()
	members := loads(5, 0)
	now := start.Add(time.Hour)
	conns := []balanceConn{
		{member: 0, born: now.Add(-5 * time.Second), quiet: true},                // too young
		{member: 0, born: start, quiet: false},                                   // a request in flight
		{member: 0, born: start, quiet: true, quietSince: now.Add(-time.Second)}, // quiet
		{member: 0, born: start, quiet: true, quietSince: now.Add(-time.Minute)}, // quiet longest
		{member: 0, born: now.Add(-rebalanceMinAge + time.Millisecond), quiet: true},
	}
	b.decide(now.Add(-rebalanceSettle), members, conns)
	if d := b.decide(now, members, conns); d.victim != 3 {
		t.Fatalf("victim %d, want the connection quiet the longest (3)", d.victim)
	}
	only := []balanceConn{conns[0], conns[1], conns[4]}
	for i := range 100 {
		if d := b.decide(now.Add(time.Duration(i)*time.Millisecond), members, only); d.victim >= 0 {
			t.Fatalf("moved connection %d, which is young or busy", d.victim)
		}
	}
}

// A simulated rolling return: 15/15/0, the reconnecting clients land on the least loaded member.
// The round moves exactly what evens the loads, and never a connection it has placed.
func TestBalanceRoundEvensTheLoads(t *testing.T) {
	b := newBalancePolicy(2 * time.Second)
	start := time.Unix(100_000, 0)
	type conn struct {
		member int
		born   time.Time
	}
	var live []conn
	for i := range 30 {
		live = append(live, conn{member: i % 2, born: start.Add(-time.Hour)})
	}
	members := loads(0, 0, 0)
	members[2].since = start
	moved, placedMoved := 0, 0
	end := start.Add(30 * time.Second)
	for now := start; now.Before(end); now = now.Add(250 * time.Millisecond) {
		for i := range members {
			members[i].active = 0
		}
		conns := make([]balanceConn, len(live))
		for i, c := range live {
			members[c.member].active++
			conns[i] = balanceConn{member: c.member, born: c.born, quiet: true, quietSince: c.born}
		}
		d := b.decide(now, members, conns)
		if d.victim < 0 {
			continue
		}
		moved++
		if live[d.victim].born.After(start) {
			placedMoved++
		}
		// The client reconnects to the least loaded member.
		live[d.victim] = conn{member: d.to, born: now}
	}
	counts := [3]int{}
	for _, c := range live {
		counts[c.member]++
	}
	if moved != 10 || placedMoved != 0 {
		t.Fatalf("moved %d (%d of them placed by the round), want 10 and 0; loads now %v", moved, placedMoved, counts)
	}
	if counts != [3]int{10, 10, 10} {
		t.Fatalf("loads %v after the round, want 10/10/10", counts)
	}
}

// In steady state nothing is closed: over a simulated hour, 30 long-lived clients, balanced,
// and short connections coming and going (placed least loaded, as the dialer does) while
// their connections' traffic comes and goes.
func TestBalanceClosesNothingInSteadyState(t *testing.T) {
	b := newBalancePolicy(2 * time.Second)
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Unix(100_000, 0)
	type conn struct {
		member int
		born   time.Time
		ends   time.Time // zero: long-lived
	}
	var live []conn
	for i := range 30 {
		live = append(live, conn{member: i % 3, born: start.Add(-time.Hour)})
	}
	members := loads(0, 0, 0)
	closes := 0
	for now := start; now.Before(start.Add(time.Hour)); now = now.Add(250 * time.Millisecond) {
		kept := live[:0]
		for _, c := range live {
			if c.ends.IsZero() || now.Before(c.ends) {
				kept = append(kept, c)
			}
		}
		live = kept
		for i := range members {
			members[i].active = 0
		}
		for _, c := range live {
			members[c.member].active++
		}
		for range rng.IntN(3) { // short connections: a Get and gone
			least := 0
			for i := range members {
				if members[i].active < members[least].active {
					least = i
				}
			}
			members[least].active++
			live = append(live, conn{member: least, born: now, ends: now.Add(time.Duration(rng.IntN(1500)) * time.Millisecond)})
		}
		conns := make([]balanceConn, len(live))
		for i, c := range live {
			conns[i] = balanceConn{member: c.member, born: c.born, quiet: rng.IntN(2) == 0, quietSince: c.born}
		}
		if d := b.decide(now, members, conns); d.victim >= 0 {
			closes++
		}
	}
	if closes != 0 {
		t.Fatalf("closed %d connections in a simulated hour of steady state", closes)
	}
}

func TestQuietness(t *testing.T) {
	const quietFor = 2 * time.Second
	at := time.Unix(100_000, 0)
	var q quietness
	plainControl := member.ClientControlBytes(member.SchemePlain)
	allow := controlAllowanceOf(member.SchemePlain)
	step := func(d time.Duration, up, down int64) { at = at.Add(d); q.sample(at, up, down, allow) }
	step(0, 100, 100)
	if q.quiet(at.Add(time.Hour), quietFor) {
		t.Fatal("a connection whose last bytes were never seen is quiet")
	}
	step(time.Second, 100, 170) // an answer, or a watch event
	if q.quiet(at.Add(quietFor-time.Millisecond), quietFor) || !q.quiet(at.Add(quietFor), quietFor) {
		t.Fatal("bytes to the client then silence for the quiet time: not judged quiet")
	}
	step(time.Second, 140, 170) // a request, not yet answered
	if q.quiet(at.Add(time.Hour), quietFor) {
		t.Fatal("a request in flight is quiet")
	}
	step(time.Second, 180, 240) // a request and bytes to the client in one sample: the order is unknown
	if q.quiet(at.Add(time.Hour), quietFor) {
		t.Fatal("a sample that saw bytes both ways counts as quiet")
	}
	step(time.Second, 180+plainControl, 310) // a watch event, its WINDOW_UPDATE and PING, the PING's answer
	if !q.quiet(at.Add(quietFor), quietFor) {
		t.Fatal("bytes to the client with the client's control frames are not quiet")
	}
	step(time.Second, 180+2*plainControl+1, 350) // one byte more than control frames: a request
	if q.quiet(at.Add(time.Hour), quietFor) {
		t.Fatal("a request sent along with bytes to the client counts as quiet")
	}
	step(time.Second, 180+2*plainControl+1, 420) // the answer
	step(time.Second, 180+2*plainControl+1, 420) // nothing moved: the last change stands
	if !q.quiet(at.Add(time.Second), quietFor) {
		t.Fatal("a connection whose last change went to the client is not quiet after the quiet time")
	}
	// A slow request: the member acknowledges it with a PING (gRPC's BDP estimate) and answers
	// seconds later. Control frames both ways say nothing about the request in flight.
	step(time.Second, 300, 420)    // a request
	step(time.Second, 300+17, 437) // the member's PING and the client's answer to it
	if q.quiet(at.Add(time.Hour), quietFor) {
		t.Fatal("a request in flight is quiet once the member sent a PING before its answer")
	}
	step(time.Second, 300+17, 520) // the answer
	if !q.quiet(at.Add(quietFor), quietFor) {
		t.Fatal("the answer to a slow request, then silence for the quiet time: not judged quiet")
	}
	step(time.Second, 300+34, 537) // a keepalive PING each way: still quiet since the answer
	if !q.quiet(at.Add(quietFor), quietFor) {
		t.Fatal("keepalive PINGs after an answer made the connection busy")
	}
	// A small request whose HEADERS and DATA frames fall in two samples, each no larger than
	// control frames: bytes from the client alone are a request.
	step(time.Second, 334+24, 537)
	step(time.Millisecond, 334+48, 537)
	if q.quiet(at.Add(time.Hour), quietFor) {
		t.Fatal("a request sent in two small pieces is quiet")
	}
}

// Rebalancing moves load only between the healthy members of the tier that takes new
// connections: never toward a degraded or down member, and not at all while none is healthy.
func TestBalanceViewHoldsOnlyHealthyMembers(t *testing.T) {
	eps := []resolver.Endpoint{
		{Host: "a", Port: 2379}, {Host: "b", Port: 2379}, {Host: "c", Port: 2379}, {Host: "backup", Port: 2379, Priority: 10},
	}
	snap := health.NewSnapshot(eps, []health.State{health.Healthy, health.Degraded, health.Healthy, health.Healthy}, nil)
	got, members := balanceView(snap)
	if len(got) != 2 || got[0].Host != "a" || got[1].Host != "c" || len(members) != 2 {
		t.Fatalf("balanced between %v, want the healthy members of priority 0, a and c", got)
	}
	snap = health.NewSnapshot(eps[:2], []health.State{health.Degraded, health.Degraded}, nil)
	if got, _ := balanceView(snap); len(got) != 0 {
		t.Fatalf("with no member healthy, balanced between %v, want none", got)
	}
}

// A Put sent right after the answer to the one before, as recorded between etcd 3.6 and
// clientv3: the client sends its WINDOW_UPDATE and PING for that answer and the Put (41
// bytes); the member at once answers the PING and sends a WINDOW_UPDATE and a PING of its own
// for the Put's DATA frame (47 bytes), which the client answers; then its answer (63 bytes)
// when the Put is committed. Behind a slow link or a slow commit the two reach the client
// seconds apart: the control frames alone are no answer, and the Put stays in flight until its
// answer.
func TestQuietnessWaitsForTheAnswerBehindTheMembersControlFrames(t *testing.T) {
	const quietFor = 2 * time.Second
	for _, tc := range []struct {
		scheme member.Scheme
		record int64 // bytes of a TLS record around frames, 0 for plain
	}{{member.SchemePlain, 0}, {member.SchemeTLS, 29}} {
		t.Run(tc.scheme.String(), func(t *testing.T) {
			at := time.Unix(100_000, 0)
			var q quietness
			step := func(d time.Duration, up, down int64) {
				at = at.Add(d)
				q.sample(at, up, down, controlAllowanceOf(tc.scheme))
			}
			up, down := int64(1000), int64(1000)
			step(0, up, down)
			down += 63 + tc.record // the answer to the Put before
			step(time.Second, up, down)
			up += 30 + 41 + tc.record // the client's WINDOW_UPDATE and PING for it, and the next Put
			step(10*time.Millisecond, up, down)
			down += 17 + tc.record      // the member answers the PING...
			down += 13 + 17 + tc.record // ...and sends a WINDOW_UPDATE and a PING for the Put, in two records
			up += 17 + tc.record        // the client answers the member's PING
			step(3*time.Second, up, down)
			if q.quiet(at.Add(time.Hour), quietFor) {
				t.Fatal("a Put whose member sent only control frames so far is quiet: it would be cut")
			}
			down += 63 + tc.record // the Put's answer, at last
			step(3*time.Second, up, down)
			if tc.scheme == member.SchemePlain && !q.quiet(at.Add(quietFor), quietFor) {
				t.Fatal("the Put's answer, then silence for the quiet time: not judged quiet")
			}
			// Over TLS an answer this small, alone in its sample, is not told from control
			// frames: the connection is judged at its next answer, which a member that
			// commits at once sends with its control frames.
			up += 30 + 41 + tc.record
			step(time.Second, up, down)
			down += 17 + 13 + 17 + 63 + tc.record
			step(rebalanceSample, up, down)
			if !q.quiet(at.Add(quietFor), quietFor) {
				t.Fatal("a Put answered at once, then silence for the quiet time: not judged quiet")
			}
		})
	}
}

// A watch that has seen no request since sampling began is judged by its first event, however
// small: only while a request is in flight may the member's control frames come alone.
func TestQuietnessJudgesAnIdleWatchByItsFirstEvent(t *testing.T) {
	const quietFor = 2 * time.Second
	for _, tc := range []struct {
		scheme member.Scheme
		record int64
	}{{member.SchemePlain, 0}, {member.SchemeTLS, 29}, {member.SchemeUnknown, 0}} {
		at := time.Unix(100_000, 0)
		var q quietness
		q.sample(at, 500, 500, controlAllowanceOf(tc.scheme))
		at = at.Add(time.Minute)
		q.sample(at, 500+30+tc.record, 500+70+tc.record, controlAllowanceOf(tc.scheme)) // a 70-byte event, the client's WINDOW_UPDATE and PING
		if !q.quiet(at.Add(quietFor), quietFor) {
			t.Errorf("%s: an idle watch's first event, then silence for the quiet time: not judged quiet", tc.scheme)
		}
		// The next event's WINDOW_UPDATE and PING fall in the sample after it, alone, and the
		// member's answer to the PING in the one after: control frames, no request.
		at = at.Add(time.Minute)
		q.sample(at, 500+30+tc.record, 500+140+2*tc.record, controlAllowanceOf(tc.scheme))
		at = at.Add(rebalanceSample)
		q.sample(at, 500+60+2*tc.record, 500+140+2*tc.record, controlAllowanceOf(tc.scheme))
		at = at.Add(rebalanceSample)
		q.sample(at, 500+60+2*tc.record, 500+157+3*tc.record, controlAllowanceOf(tc.scheme))
		if !q.quiet(at.Add(quietFor), quietFor) {
			t.Errorf("%s: an event whose client's control frames came in the next sample is not judged quiet", tc.scheme)
		}
	}
}
