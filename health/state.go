package health

import (
	"errors"
	"syscall"
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

// noVerdict is what a probe found when it could not ask: the gateway itself was out of
// descriptors, buffers or memory. It says nothing about the member, whose state stays.
const noVerdict State = -1

// LocalShortage reports whether err is the gateway's own lack of resources (descriptors,
// socket buffers, memory), which says nothing about the member it was talking to.
func LocalShortage(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

func (s State) String() string {
	switch s {
	case Down:
		return "down"
	case Degraded:
		return "degraded"
	case Healthy:
		return "healthy"
	default:
		return "unknown"
	}
}
