package listener

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// When an endpoint turns down, the evictor closes the connections proxied to it, and only
// those, once a fresh probe has found the other one better.
func TestEvictorClosesConnectionsOfADownEndpoint(t *testing.T) {
	testEviction(t, false)
}

// An evictor that starts (or restarts) after an endpoint went down still closes its
// connections.
func TestEvictorStartedLateClosesConnectionsOfADownEndpoint(t *testing.T) {
	testEviction(t, true)
}

// evictionFixture is a gateway's forwarding and health parts over two named backends, "sick"
// and "fine", each behind a relay that can stop accepting new connections, with six
// connections spread over both.
type evictionFixture struct {
	relays  map[string]*testnet.Relay
	table   *health.Table
	reports health.Reports
	fwd     *Forwarder
	evictor *Evictor
	sickEP  resolver.Endpoint
	fineEP  resolver.Endpoint
	conns   map[string][]net.Conn
	run     func(svc interface{ Serve(context.Context) error })
}

func newEvictionFixture(t *testing.T, startEvictor bool) *evictionFixture {
	f := &evictionFixture{conns: map[string][]net.Conn{}, relays: map[string]*testnet.Relay{}}
	for _, name := range []string{"sick", "fine"} {
		r, err := testnet.StartRelay(testnet.Named(t, name).Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		f.relays[name] = r
	}
	var err error
	if f.sickEP, err = resolver.ParseEndpoint(f.relays["sick"].Addr()); err != nil {
		t.Fatal(err)
	}
	if f.fineEP, err = resolver.ParseEndpoint(f.relays["fine"].Addr()); err != nil {
		t.Fatal(err)
	}
	eps := resolver.Normalize([]resolver.Endpoint{f.sickEP, f.fineEP})
	updates := resolver.NewUpdates()
	f.table, f.reports = health.NewTable(), health.NewReports(8)
	reprobe := health.NewReprobe()
	updates.Publish(eps)
	manager := health.NewManager(health.ManagerConfig{Table: f.table, Updates: updates, Reports: f.reports, Reprobe: reprobe,
		Probe: health.ProbeConfig{Mode: health.CheckTCP, Interval: time.Hour, Timeout: time.Second, RetryDelay: time.Hour, Rise: 1, Fall: 1},
		Log:   zap.NewNop()})
	ln := testnet.LocalListener(t)
	f.fwd = NewForwarder(ForwarderConfig{Dial: dialerOf(f.table), Log: zap.NewNop()})
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	f.run = func(svc interface{ Serve(context.Context) error }) {
		running.Add(1)
		go func() {
			defer running.Done()
			svc.Serve(ctx)
		}()
	}
	f.evictor = NewEvictor(f.table, f.fwd, reprobe, zaptest.NewLogger(t))
	f.run(manager)
	f.run(NewService(ln, f.fwd, zap.NewNop()))
	if startEvictor {
		f.run(f.evictor)
	}
	t.Cleanup(func() {
		cancel()
		running.Wait()
		f.fwd.Shutdown(defaultTestTimeout, nil)
	})
	f.waitRotation(t, func(s *health.Snapshot) bool { return len(s.Available()) == 2 })
	for range 6 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetReadDeadline(time.Now().Add(defaultTestTimeout))
		buf := make([]byte, 5)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		name := "fine"
		if string(buf[:n]) == "sick\n" {
			name = "sick"
		}
		f.conns[name] = append(f.conns[name], c)
	}
	if len(f.conns["sick"]) == 0 || len(f.conns["fine"]) == 0 {
		t.Fatalf("connections not spread over both endpoints: %v", f.conns)
	}
	return f
}

// waitRotation waits until the table's snapshot satisfies cond.
func (f *evictionFixture) waitRotation(t *testing.T, cond func(*health.Snapshot) bool) {
	t.Helper()
	deadline := time.NewTimer(defaultTestTimeout)
	defer deadline.Stop()
	for snap := f.table.Load(); !cond(snap); snap = f.table.Load() {
		select {
		case <-snap.Changed():
		case <-deadline.C:
			t.Fatalf("snapshot never as wanted: %v in rotation of %v", snap.Available(), snap.Known())
		}
	}
}

// expectClosed checks that the peer closed c: a read ends with EOF or a reset, not a timeout.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(defaultTestTimeout))
	_, err := c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a connection to the down endpoint is still open: read returned %v", err)
	}
}

func testEviction(t *testing.T, startEvictorLate bool) {
	f := newEvictionFixture(t, !startEvictorLate)
	began := time.Now()
	if err := f.relays["sick"].StopAccepting(testnet.Refuse); err != nil {
		t.Fatal(err)
	}
	f.reports <- health.Report{Endpoint: f.sickEP, Evidence: health.DialRefused, State: health.Down, Reason: "test"}
	if startEvictorLate {
		f.waitRotation(t, func(s *health.Snapshot) bool { return len(s.Available()) == 1 })
		f.run(f.evictor)
	}
	for _, c := range f.conns["sick"] {
		expectClosed(t, c)
	}
	if took := time.Since(began); took > evictionSpread {
		t.Errorf("eviction of %d connections took %s", len(f.conns["sick"]), took)
	}
	if got := f.fwd.Counters()[f.sickEP.HostPort()].Evicted; got != uint64(len(f.conns["sick"])) {
		t.Errorf("Counters say %d connections to %s evicted, want %d", got, f.sickEP, len(f.conns["sick"]))
	}
	for _, c := range f.conns["fine"] {
		roundTrip(t, c, "still served")
	}
}

// With every endpoint down there is nothing better to move clients to: no connection is
// closed. When one endpoint is healthy again, the others' clients move to it.
func TestEvictorClosesNothingWhenNothingIsBetter(t *testing.T) {
	f := newEvictionFixture(t, true)
	// Both stop accepting before either is reported: a probe of the second, asked for once the
	// first turned down, must not find it still accepting and prove it better.
	for _, name := range []string{"sick", "fine"} {
		if err := f.relays[name].StopAccepting(testnet.Refuse); err != nil {
			t.Fatal(err)
		}
	}
	for _, ep := range []resolver.Endpoint{f.sickEP, f.fineEP} {
		f.reports <- health.Report{Endpoint: ep, Evidence: health.DialRefused, State: health.Down, Reason: "test: stops accepting"}
	}
	f.waitRotation(t, func(s *health.Snapshot) bool { return s.Rotation() == health.RotationLastResort })
	settle := time.NewTimer(200 * time.Millisecond) // far longer than an eviction takes to start
	<-settle.C
	for name, conns := range f.conns {
		for _, c := range conns {
			roundTrip(t, c, "served by "+name+" while every endpoint is down")
		}
	}
	for hp, c := range f.fwd.Counters() {
		if c.Evicted != 0 {
			t.Fatalf("%d connections to %s evicted with nothing better to go to", c.Evicted, hp)
		}
	}

	if err := f.relays["fine"].Resume(); err != nil {
		t.Fatal(err)
	}
	f.reports <- health.Report{Endpoint: f.fineEP, Evidence: health.Probed, State: health.Healthy, At: time.Now()}
	for _, c := range f.conns["sick"] {
		expectClosed(t, c)
	}
	for _, c := range f.conns["fine"] {
		roundTrip(t, c, "still served")
	}
}
