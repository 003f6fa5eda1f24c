package dialer

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/health"
)

// A failed dial is weighed by what it says of the member, never of the gateway: each kind of
// fault (member.Classify has the whole table) becomes its evidence.
func TestClassify(t *testing.T) {
	const timeout = time.Second
	timedOut := fmt.Errorf("dial: %w", context.DeadlineExceeded)
	tests := []struct {
		err  error
		took time.Duration
		want health.Evidence
	}{
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), time.Millisecond, health.DialRefused},
		{timedOut, timeout, health.DialFailed},
		{fmt.Errorf("dial: %w", syscall.EHOSTUNREACH), time.Millisecond, health.DialFailed},
		{fmt.Errorf("dial: %w", syscall.EMFILE), time.Millisecond, localShortage},
		// Seen 1.5 s after a 1 s deadline: the gateway was paused, not the member.
		{timedOut, timeout + 1500*time.Millisecond, seenLate},
	}
	for _, tt := range tests {
		if got := classify(tt.err, tt.took, timeout); got != tt.want {
			t.Errorf("classify(%v after %s) = %v, want %v", tt.err, tt.took, got, tt.want)
		}
	}
}
