package health

import (
	"context"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
	"github.com/etcd-gateway/etcd-gateway/member"
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

// A probe that times out is the member's fault only when the gateway saw the timeout in time.
func TestProbeTimeoutSeenLateIsNotCounted(t *testing.T) {
	ep := silentMember(t)
	for _, mode := range []CheckMode{CheckReadyz, CheckHealth} {
		onTime := newChecker(ep, mode, 100*time.Millisecond, member.Policy{})
		if got, reason := judge(t, onTime); got != Down || !strings.Contains(reason, "no answer") {
			t.Errorf("%s: a silent member seen in time: %s %q, want down", mode, got, reason)
		}
		onTime.close()

		late := newChecker(ep, mode, 100*time.Millisecond, member.Policy{})
		late.now = lateClock()
		if v := late.check(context.Background()); v.noNews != member.SeenLate {
			t.Errorf("%s: a timeout seen a second late: %+v, want it not counted", mode, v)
		}
		late.close()
	}
}

// A heartbeat that times out counts as a miss only when the gateway saw the timeout in time.
func TestHeartbeatTimeoutSeenLateIsNotCounted(t *testing.T) {
	ep := silentMember(t)
	onTime := newHeartbeater(&member.Client{Addr: ep.Addr()}, time.Now)
	onTime.speak(member.SchemePlain)
	defer onTime.close()
	if err := onTime.beat(context.Background(), 100*time.Millisecond); err == nil || isLate(err) {
		t.Fatalf("a silent member seen in time: %v, want a miss", err)
	}
	late := newHeartbeater(&member.Client{Addr: ep.Addr()}, lateClock())
	late.speak(member.SchemePlain)
	defer late.close()
	if err := late.beat(context.Background(), 100*time.Millisecond); !isLate(err) {
		t.Fatalf("a heartbeat timeout seen a second late: %v, want it not counted", err)
	}
}

// After a missed heartbeat, a heartbeat the gateway cannot even dial (out of descriptors) is
// no news of the member: the prober waits a whole heartbeat period before it tries again,
// instead of trying again at once without end.
func TestHeartbeatLocalShortageDoesNotSpin(t *testing.T) {
	var stall atomic.Bool
	release := make(chan struct{})
	defer close(release)
	ep := fakeMember(t, map[string]http.HandlerFunc{
		"/readyz":  answer(200, "ok\n"),
		"/livez":   answer(200, "ok\n"),
		"/version": freezable(&stall, release, answer(200, "{}")),
	}, nil)
	var shortage atomic.Bool
	var dials atomic.Int64
	var d net.Dialer
	out := make(Reports, 64)
	p := newTestProber(ep, out, ProbeConfig{Mode: CheckReadyz, Interval: time.Hour, Timeout: time.Second, RetryDelay: time.Hour,
		Rise: 1, Fall: 1, Heartbeat: 20 * time.Millisecond, HeartbeatTimeout: 50 * time.Millisecond})
	load := p.table.Load().LoadOf(ep)
	load.Start() // a client that talks to the member: heartbeats run
	defer chatter(load)()
	p.dialHeartbeat = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if shortage.Load() {
			dials.Add(1)
			return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("socket", syscall.EMFILE)}
		}
		return d.DialContext(ctx, network, addr)
	}
	runProber(t, p)
	<-out // the first probe
	shortage.Store(true)
	stall.Store(true) // the next heartbeat is missed; the one after cannot dial
	if !testnet.Eventually(defaultTestTimeout, func() bool { return dials.Load() > 0 }) {
		t.Fatal("the heartbeat never needed a new connection")
	}
	window := time.NewTimer(300 * time.Millisecond) // 15 heartbeat periods
	<-window.C
	if n := dials.Load(); n > 30 {
		t.Fatalf("%d heartbeat dials in 300 ms of descriptor shortage with 20 ms heartbeats: the prober spins", n)
	}
	select {
	case rep := <-out:
		t.Fatalf("report %+v during a shortage of the gateway's own", rep)
	default:
	}
}
