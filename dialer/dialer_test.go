package dialer_test

import (
	"bufio"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/dialer"
	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const defaultTestTimeout = 10 * time.Second

// fixture runs a real health Manager for eps and returns a Dialer on its table.
type fixture struct {
	table   *health.Table
	reports health.Reports
	dialer  *dialer.Dialer
}

func start(t *testing.T, dialTimeout, retryDelay time.Duration, addrs ...string) *fixture {
	t.Helper()
	var eps []resolver.Endpoint
	for _, a := range addrs {
		eps = append(eps, mustEndpoint(t, a))
	}
	return startEndpoints(t, dialTimeout, retryDelay, eps)
}

func startEndpoints(t *testing.T, dialTimeout, retryDelay time.Duration, eps []resolver.Endpoint) *fixture {
	t.Helper()
	f := &fixture{table: health.NewTable(), reports: health.NewReports(64)}
	reprobe := health.NewReprobe()
	updates := resolver.NewUpdates()
	updates.Publish(resolver.Normalize(eps))
	m := health.NewManager(health.ManagerConfig{
		Table: f.table, Updates: updates, Reports: f.reports, Reprobe: reprobe,
		Probe: health.ProbeConfig{Mode: health.CheckTCP, Interval: time.Hour, Timeout: dialTimeout,
			RetryDelay: retryDelay, Rise: 1, Fall: 1},
		Log: zap.NewNop(),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Serve(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitFor(t, "the first endpoint set", func() bool { return len(f.table.Load().Known()) == len(eps) })
	f.dialer = dialer.New(f.table, f.reports, reprobe, dialTimeout, 0, nil)
	return f
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(defaultTestTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// named starts n servers that greet with their own name and returns their addresses.
func named(t *testing.T, n int) []string {
	var addrs []string
	for i := range n {
		addrs = append(addrs, testnet.Named(t, strconv.Itoa(i)).Addr())
	}
	return addrs
}

// greeting dials through d and returns the name the backend greeted with.
func greeting(t *testing.T, d *dialer.Dialer) string {
	t.Helper()
	c, _, load, err := d.Dial(context.Background())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer load.Done()
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(defaultTestTimeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read greeting: %v", err)
	}
	return line[:len(line)-1]
}

// With equal loads, least-loaded picking is round robin.
func TestEqualLoadsGoRoundRobin(t *testing.T) {
	f := start(t, time.Second, time.Minute, named(t, 3)...)
	counts := map[string]int{}
	var order []string
	for range 300 {
		name := greeting(t, f.dialer)
		counts[name]++
		order = append(order, name)
	}
	for _, name := range []string{"0", "1", "2"} {
		if counts[name] != 100 {
			t.Errorf("backend %s got %d of 300 connections, want 100: %v", name, counts[name], counts)
		}
	}
	for i := 3; i < len(order); i++ {
		if order[i] != order[i-3] {
			t.Fatalf("picks are not round robin: %v", order[:i+1])
		}
	}
}

func TestFailedDialMovesClientToNextEndpoint(t *testing.T) {
	tests := []struct {
		name string
		bad  func(testing.TB) string
	}{
		{"closed port", testnet.ClosedPort},
		{"endpoint that drops SYNs", testnet.SYNDropper},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const dialTimeout = 300 * time.Millisecond
			bad := tt.bad(t)
			good := testnet.Named(t, "good").Addr()
			f := start(t, dialTimeout, time.Hour, bad, good)
			// Whichever endpoint the cursor starts at, two clients cover the bad one once.
			for i := range 2 {
				began := time.Now()
				if name := greeting(t, f.dialer); name != "good" {
					t.Fatalf("client %d served by %q", i, name)
				}
				if took := time.Since(began); took > dialTimeout+time.Second {
					t.Errorf("client %d took %s with a dial timeout of %s", i, took, dialTimeout)
				}
			}
			waitFor(t, "the bad endpoint to be unavailable", func() bool {
				av := f.table.Load().Available()
				return len(av) == 1 && av[0].Addr() == good
			})
			// Once it is known bad, clients no longer pay its timeout.
			for range 5 {
				began := time.Now()
				greeting(t, f.dialer)
				if took := time.Since(began); took >= dialTimeout {
					t.Errorf("client paid %s for a known-bad endpoint", took)
				}
			}
		})
	}
}

// With no endpoint in rotation, a client triggers an immediate re-probe and is held until an
// endpoint comes back, instead of being refused; retry-delay does not delay it.
func TestNothingHealthyReprobesAndHoldsTheClient(t *testing.T) {
	closed := testnet.ClosedPort(t)
	good := testnet.Named(t, "late")
	f := start(t, 2*time.Second, time.Hour, closed, good.Addr())
	waitFor(t, "the closed port to be down", func() bool { return len(f.table.Load().Available()) == 1 })
	// A failed dial marks the good one down too: nothing is in rotation.
	f.reports <- health.Report{Endpoint: mustEndpoint(t, good.Addr()), Evidence: health.DialRefused, State: health.Down, Reason: "test"}
	waitFor(t, "no endpoint in rotation", func() bool { return len(f.table.Load().Available()) == 0 })

	began := time.Now()
	if name := greeting(t, f.dialer); name != "late" {
		t.Fatalf("served by %q", name)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("client waited %s for a member that answers at once", took)
	}
	waitFor(t, "the endpoint that answered to be back in rotation", func() bool {
		av := f.table.Load().Available()
		return len(av) == 1 && av[0].Addr() == good.Addr()
	})
}

func TestNoEndpointReachable(t *testing.T) {
	f := start(t, 200*time.Millisecond, time.Hour, testnet.ClosedPort(t), testnet.ClosedPort(t))
	c, _, _, err := f.dialer.Dial(context.Background())
	if c != nil || !errors.Is(err, dialer.ErrNoEndpoint) {
		t.Fatalf("Dial = %v, %v; want ErrNoEndpoint", c, err)
	}
}

func mustEndpoint(t *testing.T, addr string) resolver.Endpoint {
	ep, err := resolver.ParseEndpoint(addr)
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

func TestBackendConnectionHasKeepAlive(t *testing.T) {
	f := start(t, time.Second, time.Minute, testnet.Echo(t).Addr())
	c, _, _, err := f.dialer.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !testnet.KeepAlive(t, c) {
		t.Fatal("backend connection has no TCP keep-alive")
	}
}

// Connections go to the lowest priority while any of it is available, and to the next
// priority only when the lowest is all down.
func TestPriorityTiers(t *testing.T) {
	primary := testnet.Named(t, "primary").Addr()
	backup := testnet.Named(t, "backup").Addr()
	deadPrimary := testnet.ClosedPort(t)
	eps := []resolver.Endpoint{
		withPriority(t, primary, 0), withPriority(t, deadPrimary, 0), withPriority(t, backup, 10),
	}
	f := startEndpoints(t, 300*time.Millisecond, time.Hour, eps)
	for i := range 50 {
		if name := greeting(t, f.dialer); name != "primary" {
			t.Fatalf("connection %d went to %q while a priority-0 endpoint was available", i, name)
		}
	}
	f.reports <- health.Report{Endpoint: eps[0], Evidence: health.DialRefused, State: health.Down, Reason: "test: primary down"}
	waitFor(t, "the primary to be unavailable", func() bool { return len(f.table.Load().Available()) == 1 })
	for i := range 10 {
		if name := greeting(t, f.dialer); name != "backup" {
			t.Fatalf("connection %d went to %q with priority 0 all down", i, name)
		}
	}
}

func withPriority(t *testing.T, addr string, priority uint16) resolver.Endpoint {
	ep := mustEndpoint(t, addr)
	ep.Priority = priority
	return ep
}

// heldDials dials n times at once through d, keeping every connection, and returns how many
// each backend holds, by the name it greeted with.
func heldDials(t *testing.T, d *dialer.Dialer, n int) map[string]int {
	t.Helper()
	type held struct {
		name string
		err  error
	}
	results := make(chan held, n)
	for range n {
		go func() {
			c, _, load, err := d.Dial(context.Background())
			if err != nil {
				results <- held{err: err}
				return
			}
			t.Cleanup(func() {
				c.Close()
				load.Done()
			})
			c.SetReadDeadline(time.Now().Add(defaultTestTimeout))
			line, err := bufio.NewReader(c).ReadString('\n')
			results <- held{name: strings.TrimSuffix(line, "\n"), err: err}
		}()
	}
	counts := map[string]int{}
	for range n {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		counts[r.name]++
	}
	return counts
}

// A burst of clients arriving at once spreads evenly: each dial is counted from the moment it
// starts, so they do not all see the same counts and pile onto one member.
func TestBurstOfDialsSpreadsEvenly(t *testing.T) {
	f := start(t, time.Second, time.Minute, named(t, 3)...)
	counts := heldDials(t, f.dialer, 30)
	for _, name := range []string{"0", "1", "2"} {
		if counts[name] < 9 || counts[name] > 11 {
			t.Fatalf("30 clients at once went %v, want 10 each within 1", counts)
		}
	}
}

// SRV weights shape the load: with weights 1 and 3, 40 long-lived clients end 10 and 30.
func TestWeightsShapeTheLoad(t *testing.T) {
	light, heavy := mustEndpoint(t, testnet.Named(t, "light").Addr()), mustEndpoint(t, testnet.Named(t, "heavy").Addr())
	light.Weight, heavy.Weight = 1, 3
	f := startEndpoints(t, time.Second, time.Minute, []resolver.Endpoint{light, heavy})
	counts := heldDials(t, f.dialer, 40)
	if counts["light"] < 9 || counts["light"] > 11 || counts["heavy"] < 29 || counts["heavy"] > 31 {
		t.Fatalf("40 clients went %v with weights 1:3, want 10:30 within 1", counts)
	}
}
