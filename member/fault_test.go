package member

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func dialErr(err error) error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// What a failed exchange says of the member, and never of the gateway.
func TestClassify(t *testing.T) {
	deadline := time.Unix(100, 0)
	timeout := &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}
	tests := []struct {
		err   error
		after time.Duration // seen after the deadline
		bound time.Duration
		want  Fault
	}{
		{dialErr(syscall.ECONNREFUSED), -time.Second, time.Second, Refused},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), -time.Second, time.Second, Refused},
		{dialErr(syscall.EHOSTUNREACH), -time.Second, time.Second, Failed},
		{errors.New("not an HTTP answer"), -time.Second, time.Second, Failed},
		{dialErr(syscall.EMFILE), -time.Second, time.Second, LocalShortage},
		{dialErr(syscall.ENFILE), 0, time.Second, LocalShortage},
		{dialErr(syscall.ENOMEM), 0, time.Second, LocalShortage},
		{dialErr(syscall.ENOBUFS), 0, time.Second, LocalShortage},
		{dialErr(syscall.EADDRNOTAVAIL), 0, time.Second, LocalShortage},
		// A timeout counts when seen within half its bound after the deadline; later, the
		// gateway itself was not scheduled.
		{timeout, 0, time.Second, TimedOut},
		{timeout, 10 * time.Millisecond, time.Second, TimedOut},
		{fmt.Errorf("get: %w", context.DeadlineExceeded), 500 * time.Millisecond, time.Second, TimedOut},
		{timeout, 501 * time.Millisecond, time.Second, SeenLate},
		{timeout, 1500 * time.Millisecond, 250 * time.Millisecond, SeenLate},
	}
	for _, tt := range tests {
		got := Classify(tt.err, deadline, deadline.Add(tt.after), tt.bound)
		if got != tt.want {
			t.Errorf("Classify(%v, seen %s after the deadline, bound %s) = %s, want %s", tt.err, tt.after, tt.bound, got, tt.want)
		}
		if got.NoNews() != (tt.want == SeenLate || tt.want == LocalShortage) {
			t.Errorf("%s.NoNews() = %v", got, got.NoNews())
		}
	}
}
