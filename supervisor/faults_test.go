package supervisor

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thejerf/suture/v4"
)

// faulty wraps a service so that a test can make it panic while it runs: the service is
// stopped, then its Serve goroutine panics, as a bug in it would.
type faulty struct {
	inner   suture.Service
	trigger chan struct{}
	starts  atomic.Int64
}

func (f *faulty) String() string { return fmt.Sprint(f.inner) }

func (f *faulty) Serve(ctx context.Context) error {
	f.starts.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.inner.Serve(ctx) }()
	select {
	case err := <-done:
		return err
	case <-f.trigger:
		cancel()
		<-done
		panic("injected fault in " + f.String())
	}
}

// injectFaults makes every service of the gateway plan builds faulty, and returns them as
// they are built.
func injectFaults(plan *Plan) func() []*faulty {
	var (
		mu       sync.Mutex
		wrappers []*faulty
	)
	plan.wrap = func(s suture.Service) suture.Service {
		f := &faulty{inner: s, trigger: make(chan struct{})}
		mu.Lock()
		wrappers = append(wrappers, f)
		mu.Unlock()
		return f
	}
	return func() []*faulty {
		mu.Lock()
		defer mu.Unlock()
		return wrappers
	}
}

// panicOnce makes f panic and waits until its supervisor has started it again.
func panicOnce(t *testing.T, f *faulty) {
	t.Helper()
	before := f.starts.Load()
	select {
	case f.trigger <- struct{}{}:
	case <-time.After(defaultTestTimeout):
		t.Fatalf("%s is not running", f)
	}
	deadline := time.Now().Add(defaultTestTimeout)
	for f.starts.Load() == before {
		if time.Now().After(deadline) {
			t.Fatalf("%s was not restarted after its panic", f)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A panic in each service in turn is recovered and the service restarted, while a live
// connection keeps flowing and new ones are served; repeated panics back off instead of
// restarting in a busy loop.
func TestEveryServiceSurvivesAPanic(t *testing.T) {
	cfg := echoConfig(t, 2)
	cfg.MetricsAddr = "127.0.0.1:0"
	plan := prepare(t, cfg)
	services := injectFaults(plan)
	gw, _, _ := startPlan(t, plan)
	live, err := net.Dial("tcp", gw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	echoOnce(t, live, "before the faults")

	var names []string
	for _, f := range services() {
		names = append(names, f.String())
		panicOnce(t, f)
		echoOnce(t, live, "live through a panic in "+f.String())
		c, err := net.Dial("tcp", gw.Addr().String())
		if err != nil {
			t.Fatalf("after a panic in %s: %v", f, err)
		}
		echoOnce(t, c, "new after a panic in "+f.String())
		c.Close()
	}
	joined := strings.Join(names, " ")
	for _, want := range []string{"listener/", "listener/evictor", "resolver/static", "systemd-notify", "status/", "health/manager"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no fault injected into %s; services: %s", want, joined)
		}
	}

	// Panics in a row: the root supervisor backs off after a few (its failure threshold)
	// instead of restarting the service as fast as it fails.
	var notifier *faulty
	for _, f := range services() {
		if f.String() == "systemd-notify" {
			notifier = f
		}
	}
	began, delivered := time.Now(), 0
	for time.Since(began) < 3*time.Second {
		select {
		case notifier.trigger <- struct{}{}:
			delivered++
		case <-time.After(100 * time.Millisecond):
		}
	}
	if delivered > 10 {
		t.Errorf("%d panics delivered in 3s: restarts do not back off", delivered)
	}
	echoOnce(t, live, "live through repeated panics")
	t.Logf("services faulted: %s; repeated panics delivered before backoff: %d", joined, delivered)
}
