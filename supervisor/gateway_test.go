package supervisor

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const defaultTestTimeout = 10 * time.Second

// prepare is Prepare for a test, failing it on error.
func prepare(t *testing.T, cfg Config) *Plan {
	t.Helper()
	plan, err := Prepare(context.Background(), cfg, nil, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("Prepare = %v", err)
	}
	return plan
}

func startGateway(t *testing.T, cfg Config) (*Gateway, context.CancelFunc, <-chan error) {
	t.Helper()
	return startPlan(t, prepare(t, cfg))
}

// startPlan builds the gateway of plan and serves it until the test ends.
func startPlan(t *testing.T, plan *Plan) (*Gateway, context.CancelFunc, <-chan error) {
	t.Helper()
	gw, err := New(context.Background(), plan)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- gw.Serve(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	return gw, cancel, done
}

func echoConfig(t *testing.T, n int) Config {
	var eps []resolver.Endpoint
	for range n {
		ep, err := resolver.ParseEndpoint(testnet.Echo(t).Addr())
		if err != nil {
			t.Fatal(err)
		}
		eps = append(eps, ep)
	}
	return Config{ListenAddr: "127.0.0.1:0", Endpoints: eps, RetryDelay: time.Minute, DialTimeout: time.Second, ShutdownTimeout: time.Second, Health: DefaultHealth()}
}

func echoOnce(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(defaultTestTimeout))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo = %q, %v; want %q", buf, err, msg)
	}
}

func TestGatewayForwardsAndStopsCleanly(t *testing.T) {
	gw, cancel, done := startGateway(t, echoConfig(t, 3))
	for range 10 {
		c, err := net.Dial("tcp", gw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, c, "through the gateway")
		c.Close()
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v, want nil after a stop", err)
		}
	case <-time.After(defaultTestTimeout):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := net.DialTimeout("tcp", gw.Addr().String(), time.Second); err == nil {
		t.Error("gateway still accepts after it stopped")
	}
}

// On stop the gateway refuses new clients at once, lets a live connection finish within the
// shutdown timeout, and closes what is still open after it.
func TestGatewayDrainsOnStop(t *testing.T) {
	cfg := echoConfig(t, 1)
	cfg.ShutdownTimeout = 500 * time.Millisecond
	gw, cancel, done := startGateway(t, cfg)
	live, err := net.Dial("tcp", gw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	echoOnce(t, live, "before stop")
	stopped := time.Now()
	cancel()
	deadline := time.Now().Add(defaultTestTimeout)
	for {
		c, err := net.DialTimeout("tcp", gw.Addr().String(), 100*time.Millisecond)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("new connections still accepted after stop")
		}
		time.Sleep(10 * time.Millisecond)
	}
	echoOnce(t, live, "during the drain")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(defaultTestTimeout):
		t.Fatal("Serve did not return after the shutdown timeout")
	}
	if took := time.Since(stopped); took < cfg.ShutdownTimeout {
		t.Errorf("Serve returned %s after stop, before the %s grace ended", took, cfg.ShutdownTimeout)
	}
	live.SetReadDeadline(time.Now().Add(defaultTestTimeout))
	if _, err := live.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("connection not closed after the grace period: %v", err)
	}
}

func TestNewReportsBindFailure(t *testing.T) {
	taken := testnet.LocalListener(t)
	cfg := echoConfig(t, 1)
	cfg.ListenAddr = taken.Addr().String()
	_, err := New(context.Background(), prepare(t, cfg))
	var be *BindError
	if !errors.As(err, &be) {
		t.Fatalf("New = %v, want a BindError", err)
	}
}

// IPv6 endpoints work, and a name that does not resolve at start-up is not fatal: it is taken
// out of rotation like any failed endpoint while the others serve.
func TestGatewayIPv6AndUnresolvableEndpoints(t *testing.T) {
	v6, err := resolver.ParseEndpoint(testnet.EchoOn(t, "[::1]:0").Addr())
	if err != nil {
		t.Fatal(err)
	}
	// Not a valid DNS name, so the lookup fails without a query leaving the machine.
	unresolvable := resolver.Endpoint{Host: "unresolvable!host", Port: 2379}
	cfg := Config{ListenAddr: "127.0.0.1:0", Endpoints: []resolver.Endpoint{unresolvable, v6},
		RetryDelay: time.Minute, DialTimeout: time.Second, ShutdownTimeout: time.Second, Health: DefaultHealth()}
	gw, _, _ := startGateway(t, cfg)
	for range 4 {
		c, err := net.Dial("tcp", gw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, c, "to [::1]")
		c.Close()
	}
}
