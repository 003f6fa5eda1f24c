package listener

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// leastLoadedDial dials the least loaded endpoint of table's first tier, counting the
// connection on its Load as the dialer does.
func leastLoadedDial(table *health.Table) DialFunc {
	return func(ctx context.Context) (*net.TCPConn, resolver.Endpoint, *health.Load, error) {
		snap := table.Load()
		tier := &snap.Tiers()[0]
		k := tier.Pick(snap.Next(), time.Now)
		ep, load := tier.Endpoints()[k], tier.Loads()[k]
		load.Start()
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", ep.Addr())
		if err != nil {
			load.Done()
			return nil, ep, nil, err
		}
		return c.(*net.TCPConn), ep, load, nil
	}
}

// slowEcho echoes what it reads, except that a chunk starting with "slow" is answered after
// slowAnswer, a request in flight that long, and one starting with "late" after lateAnswer, so
// that the sampler sees the request and its answer apart.
const (
	slowAnswer = 3 * time.Second
	lateAnswer = 100 * time.Millisecond
)

func slowEcho(c *net.TCPConn) {
	defer c.Close()
	buf := make([]byte, 1024)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		switch {
		case bytes.HasPrefix(buf[:n], []byte("slow")):
			time.Sleep(slowAnswer) // the member takes this long to answer
		case bytes.HasPrefix(buf[:n], []byte("late")):
			time.Sleep(lateAnswer)
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

// lateHello is answered late, with more bytes to the client than the control frames a member
// may send while a request is in flight: after it a connection is quiet.
const lateHello = "late hello, answered with more bytes than the HTTP/2 control frames that a member " +
	"sends while a request is in flight, over TLS or not"

// roundTripped writes msg on c and reads it back.
func roundTripped(c net.Conn, msg string) error {
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	_, err := io.ReadFull(c, make([]byte, len(msg)))
	return err
}

// The rebalancer moves quiet connections from the most loaded member to one just added, and
// never a connection that does back-to-back requests or one whose request is in flight.
func TestRebalancerMovesOnlyQuietConnections(t *testing.T) {
	busyBackend := testnet.Serve(t, slowEcho)
	idleBackend := testnet.Echo(t)
	loaded, err := resolver.ParseEndpoint(busyBackend.Addr())
	if err != nil {
		t.Fatal(err)
	}
	added, err := resolver.ParseEndpoint(idleBackend.Addr())
	if err != nil {
		t.Fatal(err)
	}
	table, updates := health.NewTable(), resolver.NewUpdates()
	updates.Publish([]resolver.Endpoint{loaded})
	manager := health.NewManager(health.ManagerConfig{Table: table, Updates: updates, Reports: health.NewReports(8),
		Reprobe: health.NewReprobe(),
		Probe:   health.ProbeConfig{Mode: health.CheckTCP, Interval: time.Hour, Timeout: time.Second, RetryDelay: time.Hour, Rise: 1, Fall: 1},
		Log:     zap.NewNop()})
	fwd := NewForwarder(ForwarderConfig{Dial: leastLoadedDial(table), Log: zap.NewNop()})
	ln := testnet.LocalListener(t)
	core, logs := observer.New(zap.InfoLevel)
	rb := NewRebalancer(table, fwd, 300*time.Millisecond, zap.New(core))
	rb.sampleEvery, rb.checkEvery = 20*time.Millisecond, 50*time.Millisecond
	rb.newPolicy = func(quietFor time.Duration) *balancePolicy {
		b := newBalancePolicy(quietFor)
		b.minAge, b.settle = 500*time.Millisecond, 200*time.Millisecond
		return b
	}
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	for _, svc := range []interface{ Serve(context.Context) error }{manager, NewService(ln, fwd, zap.NewNop())} {
		running.Add(1)
		go func() {
			defer running.Done()
			svc.Serve(ctx)
		}()
	}
	clientsDone := make(chan struct{})
	var clients sync.WaitGroup
	t.Cleanup(func() {
		close(clientsDone)
		clients.Wait()
		cancel()
		running.Wait()
		fwd.Shutdown(defaultTestTimeout, nil)
	})
	if !testnet.Eventually(defaultTestTimeout, func() bool { return len(table.Load().Available()) == 1 }) {
		t.Fatal("the first member never came into rotation")
	}
	gateway := ln.Addr().String()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", gateway)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(4 * defaultTestTimeout))
		return c
	}

	// On the loaded member: one connection doing back-to-back requests, one whose only request
	// stays in flight for 3 s, and four quiet ones that reconnect when moved.
	var busyErr, slowErr atomic.Value
	var busyTrips atomic.Int64
	busy := dial()
	clients.Add(1)
	go func() {
		defer clients.Done()
		defer busy.Close()
		for {
			select {
			case <-clientsDone:
				return
			default:
			}
			if err := roundTripped(busy, "busy"); err != nil {
				busyErr.Store(err)
				return
			}
			busyTrips.Add(1)
		}
	}()
	slow := dial()
	defer slow.Close()
	var moved atomic.Int64
	const quietClients = 4
	rebalancing := make(chan struct{})
	for range quietClients {
		c := dial()
		if err := roundTripped(c, "hello"); err != nil {
			t.Fatal(err)
		}
		clients.Add(1)
		go func() {
			defer clients.Done()
			// A connection idle since before the loads drifted apart cannot be judged: it
			// carries one answer once the sampler runs.
			select {
			case <-rebalancing:
			case <-clientsDone:
				c.Close()
				return
			}
			if roundTripped(c, lateHello) != nil {
				c.Close()
				return
			}
			for {
				// Quiet: the last bytes went to the client. Wait to be moved, then reconnect.
				readDone := make(chan error, 1)
				go func() {
					_, err := c.Read(make([]byte, 1))
					readDone <- err
				}()
				select {
				case <-readDone:
				case <-clientsDone:
					c.Close()
					<-readDone
					return
				}
				c.Close()
				moved.Add(1)
				c2, err := net.Dial("tcp", gateway)
				if err != nil {
					return
				}
				c = c2
				if roundTripped(c, "again") != nil {
					c.Close()
					return
				}
			}
		}()
	}
	loadOf := func(ep resolver.Endpoint) int64 { return table.Load().LoadOf(ep).Active() }
	if !testnet.Eventually(defaultTestTimeout, func() bool { return loadOf(loaded) == 2+quietClients }) {
		t.Fatalf("%d connections on the loaded member, want %d", loadOf(loaded), 2+quietClients)
	}

	// The slow request goes out, then a second member is added.
	slowDone := make(chan struct{})
	clients.Add(1)
	go func() {
		defer clients.Done()
		defer close(slowDone)
		if err := roundTripped(slow, "slow request"); err != nil {
			slowErr.Store(err)
		}
	}()
	updates.Publish(resolver.Normalize([]resolver.Endpoint{loaded, added}))
	running.Add(1)
	go func() {
		defer running.Done()
		rb.Serve(ctx)
	}()
	if !testnet.Eventually(defaultTestTimeout, rb.Balancing) {
		t.Fatal("the rebalancer never saw the loads uneven")
	}
	close(rebalancing)

	if !testnet.Eventually(defaultTestTimeout, func() bool {
		return loadOf(loaded) == 3 && loadOf(added) == 3 && !rb.Balancing()
	}) {
		t.Fatalf("loads %d/%d after rebalancing, want 3/3; moved %d; busy %v; spread %.1f; available %v; logs %v", loadOf(loaded), loadOf(added), moved.Load(), busyErr.Load(), rb.Spread(), table.Load().Available(), logs.All())
	}
	<-slowDone
	if err := slowErr.Load(); err != nil {
		t.Fatalf("the connection with a request in flight was cut: %v", err)
	}
	if err := busyErr.Load(); err != nil {
		t.Fatalf("the busy connection was cut after %d round trips: %v", busyTrips.Load(), err)
	}
	if n := moved.Load(); n < 3 {
		t.Fatalf("%d quiet connections moved, want at least 3", n)
	}
	if got := fwd.Counters()[loaded.HostPort()].Rebalanced; got != uint64(moved.Load()) {
		t.Errorf("endpoint_rebalanced_total of the loaded member %d, want %d", got, moved.Load())
	}
	if n := logs.FilterMessageSnippet("rebalanced connections").Len(); n != 1 {
		t.Errorf("%d log lines for one round, want 1: %v", n, logs.All())
	}
	if rb.Spread() > 1 {
		t.Errorf("spread %.1f after the round, want at most 1", rb.Spread())
	}
}
