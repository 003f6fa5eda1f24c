package supervisor

import (
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thejerf/suture/v4"

	"github.com/etcd-gateway/etcd-gateway/internal/clock"
)

// knobs stand for the runtime's collector target and processors in the rest tests.
type knobs struct {
	mu                  sync.Mutex
	gcPercent, procs    int
	defaultProcs, frees int
	turned              chan struct{} // a word at each turn
}

// turn sets knob to v, says so, and returns what it was.
func (k *knobs) turn(knob *int, v int) int {
	k.mu.Lock()
	old := *knob
	*knob = v
	k.mu.Unlock()
	k.turned <- struct{}{}
	return old
}

func (k *knobs) setGCPercent(p int) int { return k.turn(&k.gcPercent, p) }

func (k *knobs) freeOSMemory() {
	k.mu.Lock()
	k.frees++
	k.mu.Unlock()
}

func (k *knobs) setMaxProcs(n int) int { return k.turn(&k.procs, n) }

func (k *knobs) setDefaultMaxProcs() { k.setMaxProcs(k.defaultProcs) }

// await waits for n turns and returns the knobs then.
func (k *knobs) await(t *testing.T, n int) (gcPercent, procs, frees int) {
	t.Helper()
	for range n {
		select {
		case <-k.turned:
		case <-time.After(defaultTestTimeout):
			t.Fatal("a knob was not turned")
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.gcPercent, k.procs, k.frees
}

// leaveKnobsToTheGateway unsets, for the test, the environment that keeps the gateway from
// turning the runtime's knobs.
func leaveKnobsToTheGateway(t *testing.T) {
	for _, env := range []string{"GOGC", "GOMEMLIMIT", "GOMAXPROCS"} {
		t.Setenv(env, "") // restored when the test ends
		os.Unsetenv(env)
	}
}

// A gateway whose clients send no request for a window rests: the collector at restGCPercent,
// one processor. A client's request through it gives back what rest found at once, and a
// window with a request in it keeps it busy; when it stops at rest, it gives back what it
// found.
func TestGatewayRestsBetweenRequests(t *testing.T) {
	leaveKnobsToTheGateway(t)
	plan := prepare(t, echoConfig(t, 2))
	fake := clock.NewFake(time.Unix(1000, 0))
	k := &knobs{gcPercent: 100, procs: 2, defaultProcs: 2, turned: make(chan struct{}, 16)}
	plan.wrap = func(s suture.Service) suture.Service {
		if r, ok := s.(*rest); ok {
			r.clock = fake
			r.setGCPercent, r.freeOSMemory, r.setMaxProcs, r.defaultMaxProcs = k.setGCPercent, k.freeOSMemory, k.setMaxProcs, k.setDefaultMaxProcs
		}
		return s
	}
	gw, cancel, done := startPlan(t, plan)
	// begun waits until the next window has begun: the service has judged the one before.
	begun := func() {
		t.Helper()
		if left, ok := fake.WaitTimer(defaultTestTimeout); !ok || left != restAfter {
			t.Fatalf("next window in %v (%v), want one of %v", left, ok, restAfter)
		}
	}
	window := func() { t.Helper(); begun(); fake.Advance(restAfter) }
	request := func(c net.Conn) { echoOnce(t, c, strings.Repeat("r", 100)) }

	window() // no client since the start
	if gc, procs, frees := k.await(t, 2); gc != restGCPercent || procs != 1 || frees != 1 {
		t.Fatalf("at rest: collector target %d, %d processors, memory freed %d times; want %d, 1, once", gc, procs, frees, restGCPercent)
	}

	c, err := net.Dial("tcp", gw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	request(c)
	if gc, procs, _ := k.await(t, 2); gc != 100 || procs != 2 {
		t.Fatalf("after a request: collector target %d, %d processors; want the 100 and 2 found", gc, procs)
	}

	window() // the one the request woke it in
	begun()
	request(c)
	fake.Advance(restAfter) // a request within this window: busy still, so another follows
	if left, ok := fake.WaitTimer(defaultTestTimeout); !ok || left != restAfter {
		t.Fatalf("no window after one with a request: the gateway rested while busy (%v, %v)", left, ok)
	}
	window()
	if gc, procs, _ := k.await(t, 2); gc != restGCPercent || procs != 1 {
		t.Fatalf("a window without a request after a busy one: target %d, %d processors; want %d, 1", gc, procs, restGCPercent)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v after a stop", err)
	}
	if gc, procs, _ := k.await(t, 2); gc != 100 || procs != 2 {
		t.Errorf("stopped at rest: target %d, %d processors; want the 100 and 2 found", gc, procs)
	}
}

// A user who sets GOGC or GOMEMLIMIT, or GOMAXPROCS, gets what they asked: the gateway leaves
// that knob alone at rest.
func TestUserTunesTheRuntime(t *testing.T) {
	for env, want := range map[string][2]bool{"GOGC": {false, true}, "GOMEMLIMIT": {false, true}, "GOMAXPROCS": {true, false}} {
		t.Run(env, func(t *testing.T) {
			leaveKnobsToTheGateway(t)
			t.Setenv(env, "1")
			if gc, procs := restKnobs(); gc != want[0] || procs != want[1] {
				t.Errorf("%s set: the gateway tunes the collector %v, the processors %v; want %v, %v", env, gc, procs, want[0], want[1])
			}
		})
	}
}
