// Package clock gives a service its timers: the real ones, or a Fake that a test advances, so
// that a test can let time pass, and count what happened meanwhile, without sleeping.
package clock

import (
	"sync"
	"time"
)

// Clock makes timers.
type Clock interface {
	// After returns a channel that receives once d has passed, and a stop that releases the
	// timer early.
	After(d time.Duration) (<-chan time.Time, func())
}

// Real is the system clock.
type Real struct{}

// After is time.NewTimer's.
func (Real) After(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}

// Fake is a clock whose time passes only when the test advances it. It is safe for concurrent
// use.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed chan struct{} // closed when a timer is made or stopped
}

type fakeTimer struct {
	at time.Time
	c  chan time.Time
}

// NewFake returns a Fake clock at start.
func NewFake(start time.Time) *Fake { return &Fake{now: start, changed: make(chan struct{})} }

// After makes a timer that fires when the clock has been advanced by d.
func (f *Fake) After(d time.Duration) (<-chan time.Time, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{at: f.now.Add(d), c: make(chan time.Time, 1)}
	f.timers = append(f.timers, t)
	f.signal()
	return t.c, func() { f.stop(t) }
}

func (f *Fake) stop(t *fakeTimer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, p := range f.timers {
		if p == t {
			f.timers = append(f.timers[:i], f.timers[i+1:]...)
			f.signal()
			return
		}
	}
}

// signal wakes WaitTimer. Call it with f.mu held.
func (f *Fake) signal() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Advance moves the clock by d and fires every timer due by then.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	kept := f.timers[:0]
	for _, t := range f.timers {
		if t.at.After(f.now) {
			kept = append(kept, t)
			continue
		}
		t.c <- f.now
	}
	f.timers = kept
	f.signal()
}

// WaitTimer waits until a timer is pending, for at most within in real time, and returns how
// long until it fires; false when none was made in time.
func (f *Fake) WaitTimer(within time.Duration) (time.Duration, bool) {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		if len(f.timers) > 0 {
			left := f.timers[0].at.Sub(f.now)
			f.mu.Unlock()
			return left, true
		}
		changed := f.changed
		f.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			return 0, false
		}
	}
}
