package dialer

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/health"
)

func dialErr(err error) error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// A failed dial is weighed by what it says of the member, never of the gateway.
func TestClassify(t *testing.T) {
	const timeout = time.Second
	tests := []struct {
		err  error
		took time.Duration
		want health.Evidence
	}{
		{dialErr(syscall.ECONNREFUSED), time.Millisecond, health.DialRefused},
		{dialErr(syscall.ECONNRESET), time.Millisecond, health.DialRefused},
		{&net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}, timeout, health.DialFailed},
		{fmt.Errorf("dial: %w", context.DeadlineExceeded), timeout + 400*time.Millisecond, health.DialFailed},
		{dialErr(syscall.EHOSTUNREACH), time.Millisecond, health.DialFailed},
		{dialErr(syscall.ENETUNREACH), time.Millisecond, health.DialFailed},
		{dialErr(syscall.EMFILE), time.Millisecond, localShortage},
		{dialErr(syscall.ENFILE), time.Millisecond, localShortage},
		{dialErr(syscall.ENOMEM), time.Millisecond, localShortage},
		{dialErr(syscall.ENOBUFS), time.Millisecond, localShortage},
		{dialErr(syscall.EADDRNOTAVAIL), time.Millisecond, localShortage},
		// Seen 1.5 s after a 1 s deadline: the gateway was paused, not the member.
		{&net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}, timeout + 1500*time.Millisecond, seenLate},
	}
	for _, tt := range tests {
		if got := classify(tt.err, tt.took, timeout); got != tt.want {
			t.Errorf("classify(%v after %s) = %v, want %v", tt.err, tt.took, got, tt.want)
		}
	}
}
