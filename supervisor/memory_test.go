package supervisor

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/internal/clock"
	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
)

// gcRecorder stands for runtime/debug's collector settings in the idle-memory tests.
type gcRecorder struct {
	mu      sync.Mutex
	percent int
	frees   int
	changed chan struct{} // a word at each call
}

func (r *gcRecorder) setGCPercent(p int) int {
	r.mu.Lock()
	old := r.percent
	r.percent = p
	r.mu.Unlock()
	r.changed <- struct{}{}
	return old
}

func (r *gcRecorder) freeOSMemory() {
	r.mu.Lock()
	r.frees++
	r.mu.Unlock()
}

func (r *gcRecorder) state() (percent, frees int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.percent, r.frees
}

// awaitSet waits for the next setGCPercent and returns the target then.
func (r *gcRecorder) awaitSet(t *testing.T) int {
	t.Helper()
	select {
	case <-r.changed:
	case <-time.After(5 * time.Second):
		t.Fatal("the collector's target was never set")
	}
	p, _ := r.state()
	return p
}

// The collector runs at idleGCPercent once no connection has been forwarded for idleAfter,
// and at the target it had at the first connection; a connection within idleAfter starts
// the wait again; the target found comes back when the service stops.
func TestIdleMemory(t *testing.T) {
	var active atomic.Int64
	occupancy := make(chan struct{}, 1)
	fake := clock.NewFake(time.Unix(1000, 0))
	gc := &gcRecorder{percent: 100, changed: make(chan struct{}, 8)}
	m := newIdleMemory(func() int { return int(active.Load()) }, occupancy, zap.NewNop())
	m.clock, m.setGCPercent, m.freeOSMemory = fake, gc.setGCPercent, gc.freeOSMemory
	tell := func(n int64) {
		active.Store(n)
		select {
		case occupancy <- struct{}{}:
		default:
		}
	}
	awaitTimer := func(want time.Duration) {
		t.Helper()
		if left, ok := fake.WaitTimer(5 * time.Second); !ok || left != want {
			t.Fatalf("timer in %v (%v), want one in %v", left, ok, want)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx) }()

	awaitTimer(idleAfter) // no connection since the start
	fake.Advance(idleAfter)
	if p := gc.awaitSet(t); p != idleGCPercent {
		t.Fatalf("target %d after %v without a connection, want %d", p, idleAfter, idleGCPercent)
	}
	if _, frees := gc.state(); frees != 1 {
		t.Errorf("memory freed %d times on going idle, want once", frees)
	}

	tell(1)
	if p := gc.awaitSet(t); p != 100 {
		t.Fatalf("target %d with a connection, want the 100 found", p)
	}
	tell(0)
	awaitTimer(idleAfter)
	fake.Advance(idleAfter - time.Second)
	tell(1) // a client reconnects within idleAfter: no switch
	if !testnet.Eventually(5*time.Second, func() bool { _, pending := fake.WaitTimer(time.Millisecond); return !pending }) {
		t.Fatal("the wait for idleness goes on with a connection")
	}
	tell(0)
	awaitTimer(idleAfter) // the wait starts again from the last connection
	fake.Advance(idleAfter - time.Second)
	select {
	case <-gc.changed:
		t.Fatal("the target changed before idleAfter passed since the last connection")
	default:
	}
	fake.Advance(time.Second)
	if p := gc.awaitSet(t); p != idleGCPercent {
		t.Fatalf("target %d, want %d", p, idleGCPercent)
	}

	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Serve returned %v, want context.Canceled", err)
	}
	if p, _ := gc.state(); p != 100 {
		t.Errorf("target %d after the service stopped idle, want the 100 it found", p)
	}
}

// A user who sets GOGC or GOMEMLIMIT gets what they asked: the gateway does not tune.
func TestUserTunesMemory(t *testing.T) {
	for _, env := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, "50")
			if !userTunesMemory() {
				t.Errorf("%s set, and the gateway would tune the collector", env)
			}
		})
	}
}
