package health

import (
	"sync/atomic"
	"time"

	"github.com/etcd-gateway/etcd-gateway/member"
)

// Slow start: a member that comes back (or is added) while others serve takes connections at a
// bounded rate for a while, so that least-connections does not hand it every new client at
// once: it holds at most slowStartBurst connections at first and slowStartRate more each
// second, for slowStartWindow. The bound is on the connections it holds, not on those it was
// given, so that short connections coming and going do not use it up. When every candidate of
// a tier is slow-starting, the bound is lifted.
const (
	slowStartWindow = 10 * time.Second
	slowStartBurst  = 2
	slowStartRate   = 5 // per second
)

// Load counts the connections through this gateway to one member's address: from the moment a
// dial to it starts until the forwarded connection ends. The dialer and the forwarder change
// it with atomics and read it without a lock; the Table keeps one per address, across
// snapshots.
type Load struct {
	active atomic.Int64
	// resting is set by the member's prober (watch) and cleared by the next request a client
	// sends the member (Sent), which fires sent: heartbeats run while clients talk to the
	// member, and wake with the first request after a rest. Control frames alone (a keepalive
	// PING, a WINDOW_UPDATE) are no request: a client that waits on nothing needs no
	// heartbeats, and an idle watch pings its member every few seconds.
	resting atomic.Bool
	sent    wakeup
	// control is the most bytes a burst of control frames to the member takes
	// (member.ClientControlBytes of its scheme, set by watch); small and smallAt are the bytes of
	// the current burst of small writes and when its last write came, in Unix nanoseconds.
	control atomic.Int64
	small   atomic.Int64
	smallAt atomic.Int64
	// slowFrom is when the member's slow start began, in Unix nanoseconds; 0 when none did.
	slowFrom atomic.Int64
	// traffic is the gateway's, told of every request to any member; nil for a Load made
	// outside a Table.
	traffic *Traffic
}

// Traffic tells whether clients send requests through the gateway, to any member: the gateway
// rests while they send none (supervisor's rest), and wakes at the first one. Control frames
// alone are no request, as for a member's heartbeats. The Table owns the gateway's one
// Traffic; every Load it makes tells it.
type Traffic struct {
	resting atomic.Bool
	sent    wakeup
}

// Rest starts a rest: it returns a channel closed at the next request a client sends any
// member, and whether any was sent since the last Rest (before the first, it says so).
func (t *Traffic) Rest() (<-chan struct{}, bool) {
	ch := t.sent.wait()
	return ch, !t.resting.Swap(true)
}

// Active returns the connections counted now.
func (l *Load) Active() int64 { return l.active.Load() }

// Start counts a connection whose dial starts now.
func (l *Load) Start() { l.active.Add(1) }

// Sent notes n bytes a client sent the member. While heartbeats run and the gateway is busy it
// costs two atomic loads; at rest, a write larger than control frames, or small writes that
// add up to more within burstWindow (a request whose frames came apart), wake the prober, and
// the gateway. A nil Load notes nothing.
func (l *Load) Sent(n int) {
	if l == nil {
		return
	}
	memberRests := l.resting.Load()
	gatewayRests := l.traffic != nil && l.traffic.resting.Load()
	if !(memberRests || gatewayRests) || !l.isRequest(n) {
		return
	}
	if memberRests && l.resting.CompareAndSwap(true, false) {
		l.sent.fire()
	}
	if gatewayRests && l.traffic.resting.CompareAndSwap(true, false) {
		l.traffic.sent.fire()
	}
}

// burstWindow is how close together small writes must come to be taken as one burst: the
// frames of one request come within it, a keepalive's PINGs seconds apart.
const burstWindow = 100 * time.Millisecond

// isRequest reports whether n bytes, with the small writes just before them, are more than
// control frames. Writes from several connections at once may be summed loosely: it only
// decides whether heartbeats start a little sooner.
func (l *Load) isRequest(n int) bool {
	control := l.control.Load()
	if control == 0 { // the prober has not said the member's scheme (its heartbeats never ran)
		control = member.ClientControlBytes(member.SchemeUnknown)
	}
	if int64(n) > control {
		return true
	}
	now := time.Now().UnixNano()
	if now-l.smallAt.Swap(now) > int64(burstWindow) {
		l.small.Store(int64(n))
		return false
	}
	return l.small.Add(int64(n)) > control
}

// watch returns a channel closed at the next request a client sends the member, and whether
// any was sent since the last watch (before the first, it says so). scheme is what the member
// serves, which says how large its clients' control frames are.
func (l *Load) watch(scheme member.Scheme) (<-chan struct{}, bool) {
	l.control.Store(member.ClientControlBytes(scheme))
	ch := l.sent.wait()
	return ch, !l.resting.Swap(true)
}

// Done uncounts a connection that failed to dial or ended. A nil Load counts nothing.
func (l *Load) Done() {
	if l != nil {
		l.active.Add(-1)
	}
}

// beginSlowStart starts the member's slow start at now.
func (l *Load) beginSlowStart(now time.Time) { l.slowFrom.Store(now.UnixNano()) }

// slowUntil is when the member's slow start ends; zero when it has none.
func (l *Load) slowUntil() time.Time {
	from := l.slowFrom.Load()
	if from == 0 {
		return time.Time{}
	}
	return time.Unix(0, from).Add(slowStartWindow)
}

// admits reports whether the member may take one more new connection at now under its slow
// start.
func (l *Load) admits(now time.Time) bool {
	from := l.slowFrom.Load()
	if from == 0 {
		return true
	}
	elapsed := now.Sub(time.Unix(0, from))
	if elapsed >= slowStartWindow || elapsed < 0 {
		return true
	}
	allowed := slowStartBurst + int64(elapsed*slowStartRate/time.Second)
	return l.Active() < allowed
}
