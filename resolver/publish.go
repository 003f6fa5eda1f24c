package resolver

import (
	"slices"
	"sync/atomic"
)

// Updates hands the latest endpoint set from the one resolver service to the health manager.
// The set itself lives in an atomic pointer and a capacity-1 channel kicks the reader, so the
// writer never blocks, the reader never sees a stale set, and a restarted reader finds the
// current set at once. Create it with NewUpdates; it outlives restarts of both sides.
type Updates struct {
	latest atomic.Pointer[[]Endpoint]
	kick   chan struct{}
}

// NewUpdates returns Updates holding no set yet.
func NewUpdates() *Updates { return &Updates{kick: make(chan struct{}, 1)} }

// Publish makes set the latest set and wakes the reader. It must be called by one writer only.
func (u *Updates) Publish(set []Endpoint) {
	cp := slices.Clone(set)
	u.latest.Store(&cp)
	select {
	case u.kick <- struct{}{}:
	default:
	}
}

// Latest returns the latest published set and whether one was published. The caller must not
// modify the slice.
func (u *Updates) Latest() ([]Endpoint, bool) {
	p := u.latest.Load()
	if p == nil {
		return nil, false
	}
	return *p, true
}

// Kicked receives a value after each Publish that the reader has not yet seen.
func (u *Updates) Kicked() <-chan struct{} { return u.kick }
