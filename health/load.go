package health

import (
	"sync/atomic"
	"time"
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
	// resting is set by the member's prober (watch) and cleared by the next bytes a client
	// sends the member (Sent), which fire sent: heartbeats run while clients talk to the
	// member, and wake with the first bytes after a rest.
	resting atomic.Bool
	sent    wakeup
	// slowFrom is when the member's slow start began, in Unix nanoseconds; 0 when none did.
	slowFrom atomic.Int64
}

// Active returns the connections counted now.
func (l *Load) Active() int64 { return l.active.Load() }

// Start counts a connection whose dial starts now.
func (l *Load) Start() { l.active.Add(1) }

// Sent notes bytes a client sent the member. It costs an atomic load, but for the first bytes
// after the prober's last watch, which wake the prober. A nil Load notes nothing.
func (l *Load) Sent() {
	if l != nil && l.resting.Load() && l.resting.CompareAndSwap(true, false) {
		l.sent.fire()
	}
}

// watch returns a channel closed at the next bytes a client sends the member, and whether any
// were sent since the last watch (before the first, it says so).
func (l *Load) watch() (<-chan struct{}, bool) {
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
