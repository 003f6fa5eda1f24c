package member

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"
)

// Fault is what a failed exchange with a member (a dial, a probe, a heartbeat) says about it.
type Fault uint8

// The faults. The last two say nothing about the member.
const (
	// Refused: refused or reset; the process is gone or refuses connections.
	Refused Fault = iota + 1
	// TimedOut: no answer within the bound.
	TimedOut
	// Failed: anything else the member may have caused (no route to it, a broken answer).
	Failed
	// SeenLate: a timeout the gateway saw more than half its bound after the deadline; the
	// gateway itself was not scheduled in time (paused, starved of CPU). Retried at once.
	SeenLate
	// LocalShortage: the gateway's own lack of descriptors, local ports, socket buffers or
	// memory.
	LocalShortage
)

// NoNews reports whether f says nothing about the member, whose state must stay as it is.
func (f Fault) NoNews() bool { return f == SeenLate || f == LocalShortage }

func (f Fault) String() string {
	switch f {
	case Refused:
		return "refused"
	case TimedOut:
		return "timed out"
	case SeenLate:
		return "seen late"
	case LocalShortage:
		return "local shortage"
	default:
		return "failed"
	}
}

// ErrSeenLate is the error of a timeout seen late (SeenLate).
var ErrSeenLate = errors.New("timed out, but seen long after the deadline: the gateway was not scheduled; not counted")

// Classify says what err, from an exchange with a member bounded by bound and due at deadline,
// seen at seen, tells of the member. err is not nil.
func Classify(err error, deadline, seen time.Time, bound time.Duration) Fault {
	switch {
	case IsLocalShortage(err):
		return LocalShortage
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return Refused
	case IsTimeout(err) && seen.Sub(deadline) > bound/2:
		return SeenLate
	case IsTimeout(err):
		return TimedOut
	default: // EHOSTUNREACH, ENETUNREACH or anything else the member may have caused
		return Failed
	}
}

// IsTimeout reports whether err is a timeout.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}

// shortages are the errors of the gateway's own lack of resources.
var shortages = []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EADDRNOTAVAIL}

// IsLocalShortage reports whether err is the gateway's own lack of resources (descriptors,
// local ports, socket buffers, memory), which says nothing about the member it was talking to.
func IsLocalShortage(err error) bool {
	for _, errno := range shortages {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// DialError returns the failed dial inside err, or nil when err is not one.
func DialError(err error) *net.OpError {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return op
	}
	return nil
}
