package health

import (
	"errors"
	"syscall"
	"time"
)

// State is what the gateway knows of one endpoint.
type State int8

// The states, from worst to best.
const (
	// Down: no answer in time, refused, a learner, or a failed dial. Used only as the last
	// resort, when every known endpoint is down.
	Down State = iota
	// Degraded: answers, but is not ready (no leader, an alarm, a failed linearizable read).
	// Used only while no endpoint is healthy.
	Degraded
	// Healthy: ready to serve clients.
	Healthy
)

// Results of a probe that say nothing about the member, whose state stays.
const (
	// noVerdict: the gateway could not ask; it was out of descriptors, ports, buffers or memory.
	noVerdict State = -1
	// tooLate: the probe timed out, but the gateway saw it only long after its deadline: the
	// gateway itself was not scheduled (paused, starved of CPU). It is retried at once.
	tooLate State = -2
)

// LocalShortage reports whether err is the gateway's own lack of resources (descriptors, local
// ports, socket buffers, memory), which says nothing about the member it was talking to.
func LocalShortage(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EADDRNOTAVAIL} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// ObservedLate reports whether a timeout of an operation bounded by bound, due at deadline,
// was observed more than half its bound after the deadline. Then the gateway itself was not
// scheduled in time (it was paused, or starved of CPU), and the timeout says nothing about the
// member: it must not count, and the operation is retried at once.
func ObservedLate(deadline, observed time.Time, bound time.Duration) bool {
	return observed.Sub(deadline) > bound/2
}

func (s State) String() string {
	switch s {
	case Down:
		return "down"
	case Degraded:
		return "degraded"
	case Healthy:
		return "healthy"
	case noVerdict:
		return "no verdict"
	case tooLate:
		return "too late"
	default:
		return "unknown"
	}
}
