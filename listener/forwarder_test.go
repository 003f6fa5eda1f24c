package listener

import (
	"net"
	"sync"
	"testing"

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
