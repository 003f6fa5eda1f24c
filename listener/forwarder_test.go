package listener

import (
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// Metrics read the byte counters of every live connection while new connections start; under
// the race detector this fails if a connection is visible before its counters are set up.
func TestCountersWhileConnectionsStart(t *testing.T) {
	backend := testnet.Echo(t)
	fwd := NewForwarder(ForwarderConfig{Dial: dialTo(backend.Addr()), Log: zap.NewNop()})
	defer fwd.Shutdown(defaultTestTimeout, nil)
	stop := make(chan struct{})
	var scraper sync.WaitGroup
	scraper.Add(1)
	go func() {
		defer scraper.Done()
		for {
			select {
			case <-stop:
				return
			default:
				fwd.Counters()
			}
		}
	}()
	front := testnet.LocalListener(t)
	var clients []net.Conn
	for range 50 {
		c, err := net.Dial("tcp", front.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		accepted, err := front.Accept()
		if err != nil {
			t.Fatal(err)
		}
		fwd.Forward(accepted)
	}
	for _, c := range clients {
		roundTrip(t, c, "counted")
		c.Close()
	}
	close(stop)
	scraper.Wait()
	if got := fwd.Counters()[resolver.HostPort{Host: "backend"}].Total; got != 50 {
		t.Fatalf("connections counted = %d, want 50", got)
	}
}

// The Forwarder tells Occupancy when its first connection comes and when its last goes, and
// not for the connections in between.
func TestForwarderTellsOccupancy(t *testing.T) {
	backend := testnet.Echo(t)
	occupancy := make(chan struct{}, 1)
	fwd := NewForwarder(ForwarderConfig{Dial: dialTo(backend.Addr()), Occupancy: occupancy, Log: zap.NewNop()})
	defer fwd.Shutdown(defaultTestTimeout, nil)
	front := testnet.LocalListener(t)
	connect := func() net.Conn {
		c, err := net.Dial("tcp", front.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		accepted, err := front.Accept()
		if err != nil {
			t.Fatal(err)
		}
		fwd.Forward(accepted)
		roundTrip(t, c, "tracked") // answered: the connection is live
		return c
	}
	await := func(wantActive int) {
		t.Helper()
		select {
		case <-occupancy:
		case <-time.After(defaultTestTimeout):
			t.Fatalf("Occupancy not told, want it told with %d live", wantActive)
		}
		if !testnet.Eventually(defaultTestTimeout, func() bool { return fwd.Active() == wantActive }) {
			t.Fatalf("%d live after Occupancy was told, want %d", fwd.Active(), wantActive)
		}
	}
	first := connect()
	await(1)
	second := connect()
	second.Close()
	if !testnet.Eventually(defaultTestTimeout, func() bool { return fwd.Active() == 1 }) {
		t.Fatalf("%d live after the second connection closed, want 1", fwd.Active())
	}
	select {
	case <-occupancy:
		t.Fatal("Occupancy told of a second connection, or of its end while the first lives")
	default:
	}
	first.Close()
	await(0)
}
