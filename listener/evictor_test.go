package listener

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// When an endpoint turns down, the evictor closes the connections proxied to it, and only those.
func TestEvictorClosesConnectionsOfADownEndpoint(t *testing.T) {
	testEviction(t, false)
}

// An evictor that starts (or restarts) after an endpoint went down still closes its
// connections.
func TestEvictorStartedLateClosesConnectionsOfADownEndpoint(t *testing.T) {
	testEviction(t, true)
}

func testEviction(t *testing.T, startEvictorLate bool) {
	sick, fine := testnet.Named(t, "sick"), testnet.Named(t, "fine")
	var eps []resolver.Endpoint
	for _, s := range []*testnet.Server{sick, fine} {
		ep, err := resolver.ParseEndpoint(s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		eps = append(eps, ep)
	}
	eps = resolver.Normalize(eps)
	table, reports, updates, reprobe := health.NewTable(), health.NewReports(8), resolver.NewUpdates(), health.NewReprobe()
	updates.Publish(eps)
	manager := health.NewManager(health.ManagerConfig{Table: table, Updates: updates, Reports: reports, Reprobe: reprobe,
		Probe: health.ProbeConfig{Mode: health.CheckTCP, Interval: time.Hour, Timeout: time.Second, RetryDelay: time.Hour, Rise: 1, Fall: 1},
		Log:   zap.NewNop()})
	ln := testnet.LocalListener(t)
	fwd := NewForwarder(dialerOf(table), zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 3)
	run := func(svc interface{ Serve(context.Context) error }) {
		go func() {
			svc.Serve(ctx)
			done <- struct{}{}
		}()
	}
	evictor := NewEvictor(table, fwd, zaptest.NewLogger(t))
	run(manager)
	run(NewService(ln, fwd, zap.NewNop()))
	if !startEvictorLate {
		run(evictor)
	}
	defer func() {
		cancel()
		for range 3 {
			<-done
		}
		fwd.Shutdown(defaultTestTimeout)
	}()
	for len(table.Load().Available()) != 2 {
		<-table.Load().Changed()
	}

	conns := map[string][]net.Conn{}
	for range 6 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(defaultTestTimeout))
		buf := make([]byte, 5)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		name := string(buf[:n])
		if name != "sick\n" {
			name = "fine"
		} else {
			name = "sick"
		}
		conns[name] = append(conns[name], c)
	}
	if len(conns["sick"]) == 0 || len(conns["fine"]) == 0 {
		t.Fatalf("connections not spread over both endpoints: %v", conns)
	}
	sickEP, _ := resolver.ParseEndpoint(sick.Addr())
	began := time.Now()
	reports <- health.Report{Endpoint: sickEP, State: health.Down, Reason: "test", FromDial: true}
	if startEvictorLate {
		for len(table.Load().Available()) != 1 {
			<-table.Load().Changed()
		}
		run(evictor)
	}
	for _, c := range conns["sick"] {
		c.SetReadDeadline(time.Now().Add(defaultTestTimeout))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("a connection to the down endpoint is still open")
		}
	}
	if took := time.Since(began); took > evictionSpread {
		t.Errorf("eviction of %d connections took %s", len(conns["sick"]), took)
	}
	if got := fwd.Counters()[sickEP].Evicted; got != uint64(len(conns["sick"])) {
		t.Errorf("Counters say %d connections to %s evicted, want %d", got, sickEP, len(conns["sick"]))
	}
	for _, c := range conns["fine"] {
		roundTrip(t, c, "still served")
	}
}
