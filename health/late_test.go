package health

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// silentMember accepts connections and never answers.
func silentMember(t *testing.T) resolver.Endpoint {
	srv := testnet.Serve(t, func(c *net.TCPConn) {
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	})
	return endpointOf(t, srv.Addr())
}

// lateClock reads the real time first, then a second later on every call: whatever times out
// is seen long after its deadline, as when the gateway was paused.
func lateClock() func() time.Time {
	calls := 0
	return func() time.Time {
		calls++
		if calls > 1 {
			return time.Now().Add(time.Second)
		}
		return time.Now()
	}
}

func TestObservedLate(t *testing.T) {
	deadline := time.Unix(100, 0)
	tests := []struct {
		observed time.Duration // after the deadline
		bound    time.Duration
		want     bool
	}{
		{0, time.Second, false},
		{10 * time.Millisecond, time.Second, false},
		{500 * time.Millisecond, time.Second, false},
		{501 * time.Millisecond, time.Second, true},
		{1500 * time.Millisecond, 250 * time.Millisecond, true},
		{-time.Second, time.Second, false},
	}
	for _, tt := range tests {
		if got := ObservedLate(deadline, deadline.Add(tt.observed), tt.bound); got != tt.want {
			t.Errorf("ObservedLate(%s after the deadline, bound %s) = %v, want %v", tt.observed, tt.bound, got, tt.want)
		}
	}
}

// A probe that times out is the member's fault only when the gateway saw the timeout in time.
func TestProbeTimeoutSeenLateIsNotCounted(t *testing.T) {
	ep := silentMember(t)
	for _, mode := range []CheckMode{CheckReadyz, CheckHealth} {
		onTime := newChecker(ep, mode, 100*time.Millisecond, TLSConfig{})
		if got, reason := onTime.check(context.Background()); got != Down || !strings.Contains(reason, "no answer") {
			t.Errorf("%s: a silent member seen in time: %s %q, want down", mode, got, reason)
		}
		onTime.close()

		late := newChecker(ep, mode, 100*time.Millisecond, TLSConfig{})
		late.now = lateClock()
		if got, reason := late.check(context.Background()); got != tooLate {
			t.Errorf("%s: a timeout seen a second late: %s %q, want it not counted", mode, got, reason)
		}
		late.close()
	}
}

// A heartbeat that times out counts as a miss only when the gateway saw the timeout in time.
func TestHeartbeatTimeoutSeenLateIsNotCounted(t *testing.T) {
	ep := silentMember(t)
	onTime := newHeartbeater(ep.Addr(), nil)
	defer onTime.close()
	if err := onTime.beat(context.Background(), 100*time.Millisecond); err == nil || isLate(err) {
		t.Fatalf("a silent member seen in time: %v, want a miss", err)
	}
	late := newHeartbeater(ep.Addr(), nil)
	defer late.close()
	late.now = lateClock()
	if err := late.beat(context.Background(), 100*time.Millisecond); !isLate(err) {
		t.Fatalf("a heartbeat timeout seen a second late: %v, want it not counted", err)
	}
}
