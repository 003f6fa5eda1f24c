package health

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const defaultTestTimeout = 10 * time.Second

type managerFixture struct {
	table   *Table
	updates *resolver.Updates
	reports Reports
	reprobe Reprobe
	logs    *observer.ObservedLogs
	m       *Manager
}

func newManagerFixture(retryDelay time.Duration) *managerFixture {
	return newManagerFixtureProbing(ProbeConfig{Mode: CheckTCP, Interval: time.Hour, Timeout: time.Second, RetryDelay: retryDelay, Rise: 1, Fall: 1})
}

func newManagerFixtureProbing(probe ProbeConfig) *managerFixture {
	core, logs := observer.New(zap.DebugLevel)
	f := &managerFixture{table: NewTable(), updates: resolver.NewUpdates(), reports: NewReports(16), reprobe: NewReprobe(), logs: logs}
	f.m = NewManager(ManagerConfig{
		Table: f.table, Updates: f.updates, Reports: f.reports, Reprobe: f.reprobe,
		Probe: probe,
		Log:   zap.New(core),
	})
	return f
}

// run serves the Manager until the returned function is called.
func (f *managerFixture) run(t *testing.T) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.m.Serve(ctx) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Serve = %v, want context.Canceled", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func (f *managerFixture) waitAvailable(t *testing.T, want ...resolver.Endpoint) {
	t.Helper()
	deadline := time.After(defaultTestTimeout)
	for {
		snap := f.table.Load()
		if slices.Equal(snap.Available(), want) || (len(want) == 0 && len(snap.Available()) == 0 && len(snap.Known()) > 0) {
			return
		}
		select {
		case <-snap.Changed():
		case <-deadline:
			t.Fatalf("available = %v, want %v", snap.Available(), want)
		}
	}
}

// transitions counts the logged state changes of ep to state.
func (f *managerFixture) transitions(ep resolver.Endpoint, to State) int {
	return f.logs.FilterMessage("endpoint state changed").FilterField(zap.Stringer("endpoint", ep)).
		FilterField(zap.Stringer("to", to)).Len()
}

func endpointOf(t *testing.T, addr string) resolver.Endpoint {
	t.Helper()
	ep, err := resolver.ParseEndpoint(addr)
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

func TestManagerPublishesTheSetAsAvailable(t *testing.T) {
	f := newManagerFixture(time.Hour)
	a, b := endpointOf(t, testnet.Echo(t).Addr()), endpointOf(t, testnet.Echo(t).Addr())
	if b.Port < a.Port {
		a, b = b, a
	}
	f.updates.Publish([]resolver.Endpoint{a, b})
	f.run(t)
	f.waitAvailable(t, a, b)
	if got := f.table.Load().Known(); !slices.Equal(got, []resolver.Endpoint{a, b}) {
		t.Fatalf("known = %v", got)
	}
	f.updates.Publish([]resolver.Endpoint{b})
	f.waitAvailable(t, b)
	if got := f.table.Load().Known(); !slices.Equal(got, []resolver.Endpoint{b}) {
		t.Fatalf("known after removal = %v", got)
	}
}

// A failed endpoint leaves rotation on the first report, is logged once however often it is
// reported, and is taken back by its prober after the retry delay once it answers again.
func TestManagerFailedEndpointComesBackThroughItsProber(t *testing.T) {
	ln := testnet.LocalListener(t)
	addr := ln.Addr().String()
	down := endpointOf(t, addr)
	other := endpointOf(t, testnet.Echo(t).Addr())

	const retryDelay = 50 * time.Millisecond
	f := newManagerFixture(retryDelay)
	f.updates.Publish(resolver.Normalize([]resolver.Endpoint{down, other}))
	f.run(t)
	f.waitAvailable(t, resolver.Normalize([]resolver.Endpoint{down, other})...)
	ln.Close()

	for range 3 {
		f.reports <- Report{Endpoint: down, Evidence: DialRefused, State: Down, Reason: "connection refused"}
	}
	f.waitAvailable(t, other)
	f.waitProbes(t, down, 3) // probes fail while nothing listens
	if got := f.table.Load().Available(); !slices.Equal(got, []resolver.Endpoint{other}) {
		t.Fatalf("available = %v while %s is still closed", got, down)
	}

	back, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	defer back.Close()
	began := time.Now()
	f.waitAvailable(t, resolver.Normalize([]resolver.Endpoint{down, other})...)
	if took := time.Since(began); took > 10*retryDelay {
		t.Errorf("endpoint came back %s after it answered, with a retry delay of %s", took, retryDelay)
	}
	if n := f.transitions(down, Down); n != 1 {
		t.Errorf("logged %d transitions to down for one outage, want 1", n)
	}
	if n := f.transitions(down, Healthy); n != 1 {
		t.Errorf("logged %d transitions to healthy for one recovery, want 1", n)
	}
}

// A restarted Manager keeps what the previous run learnt: a down endpoint stays down and is
// still probed.
func TestManagerRestartKeepsState(t *testing.T) {
	ln := testnet.LocalListener(t)
	addr := ln.Addr().String()
	down := endpointOf(t, addr)
	other := endpointOf(t, testnet.Echo(t).Addr())
	ln.Close()
	f := newManagerFixture(20 * time.Millisecond)
	set := resolver.Normalize([]resolver.Endpoint{down, other})
	f.updates.Publish(set)
	stop := f.run(t)
	f.waitAvailable(t, other) // the first probe finds the closed port
	stop()

	f.run(t)
	f.waitProbes(t, down, 1) // the restarted run probes it, and it stays down
	if got := f.table.Load().Available(); !slices.Equal(got, []resolver.Endpoint{other}) {
		t.Fatalf("after restart available = %v, want only %v", got, other)
	}
	back, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	defer back.Close()
	f.waitAvailable(t, set...)
}

func TestSnapshotCopiesAndSignalsChange(t *testing.T) {
	known := []resolver.Endpoint{{Host: "a", Port: 1}}
	s := NewSnapshot(known, []State{Healthy}, nil)
	known[0].Port = 2
	if s.Known()[0].Port != 1 || s.Available()[0].Port != 1 {
		t.Fatal("snapshot shares the caller's slice")
	}
	table := NewTable()
	old := table.Load()
	table.store(s)
	select {
	case <-old.Changed():
	default:
		t.Fatal("old snapshot not marked changed")
	}
	if table.Load() != s {
		t.Fatal("Load does not return the stored snapshot")
	}
}
