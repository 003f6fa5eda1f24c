package listener

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// faultyListener is a real listener whose next Accept calls can be made to fail.
type faultyListener struct {
	*net.TCPListener
	mu     sync.Mutex
	faults []error
}

func (l *faultyListener) fail(errs ...error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.faults = append(l.faults, errs...)
}

// errPanic makes faultyListener panic instead of returning an error.
var errPanic = errors.New("panic")

func (l *faultyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.faults) > 0 {
		err := l.faults[0]
		l.faults = l.faults[1:]
		l.mu.Unlock()
		if err == errPanic {
			panic("injected panic in accept")
		}
		return nil, err
	}
	l.mu.Unlock()
	return l.TCPListener.Accept()
}

// dialTo returns a DialFunc that always connects to addr.
func dialTo(addr string) DialFunc {
	return func(ctx context.Context) (*net.TCPConn, resolver.Endpoint, *health.Load, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, resolver.Endpoint{}, nil, err
		}
		return c.(*net.TCPConn), resolver.Endpoint{Host: "backend"}, nil, nil
	}
}

// roundTrip writes msg on c and reads the echo back.
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(defaultTestTimeout))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read echo of %q: %v", msg, err)
	}
	if string(buf) != msg {
		t.Fatalf("echo = %q, want %q", buf, msg)
	}
}

func TestServiceBacksOffOnTemporaryAcceptErrors(t *testing.T) {
	echo := testnet.Echo(t)
	ln := &faultyListener{TCPListener: testnet.LocalListener(t)}
	var faults []error
	for range 12 {
		faults = append(faults, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE})
	}
	ln.fail(faults...)
	fwd := NewForwarder(ForwarderConfig{Dial: dialTo(echo.Addr()), Log: zaptest.NewLogger(t)})
	svc := NewService(ln, fwd, zaptest.NewLogger(t))
	var pauses []time.Duration
	svc.sleep = func(_ context.Context, d time.Duration) { pauses = append(pauses, d) }

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "served after EMFILE")
	c.Close()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve = %v, want context.Canceled", err)
	}
	fwd.Shutdown(defaultTestTimeout, nil)

	if len(pauses) != len(faults) {
		t.Fatalf("paused %d times for %d errors", len(pauses), len(faults))
	}
	for i := 1; i < len(pauses); i++ {
		if pauses[i] < pauses[i-1] {
			t.Errorf("pause %d = %s shorter than the one before (%s)", i, pauses[i], pauses[i-1])
		}
	}
	if first, last := pauses[0], pauses[len(pauses)-1]; first > 10*time.Millisecond || last != maxAcceptBackoff {
		t.Errorf("pauses went from %s to %s; want a few ms growing to %s", first, last, maxAcceptBackoff)
	}
}

// A listener that fails or panics is restarted by its supervisor on the same socket, and the
// connections it accepted before keep working.
func TestServiceRestartKeepsPortAndConnections(t *testing.T) {
	for _, fault := range []error{errors.New("injected accept failure"), errPanic} {
		t.Run(fault.Error(), func(t *testing.T) { testRestartAfter(t, fault) })
	}
}

func testRestartAfter(t *testing.T, fault error) {
	echo := testnet.Echo(t)
	ln := &faultyListener{TCPListener: testnet.LocalListener(t)}
	log := zaptest.NewLogger(t)
	fwd := NewForwarder(ForwarderConfig{Dial: dialTo(echo.Addr()), Log: log})
	restarted := make(chan struct{}, 1)
	sup := suture.New("listener", suture.Spec{
		FailureBackoff: time.Millisecond,
		EventHook: func(e suture.Event) {
			switch ev := e.(type) {
			case suture.EventServiceTerminate:
				if ev.Restarting {
					restarted <- struct{}{}
				}
			case suture.EventServicePanic:
				if ev.Restarting {
					restarted <- struct{}{}
				}
			}
		},
	})
	sup.Add(NewService(ln, fwd, log))
	ctx, cancel := context.WithCancel(context.Background())
	done := sup.ServeBackground(ctx)
	defer func() {
		cancel()
		<-done
		fwd.Shutdown(defaultTestTimeout, nil)
	}()

	live, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	roundTrip(t, live, "before the crash")

	ln.fail(fault)
	trigger, err := net.Dial("tcp", ln.Addr().String()) // wakes the blocked Accept, which then fails
	if err != nil {
		t.Fatal(err)
	}
	defer trigger.Close()
	select {
	case <-restarted:
	case <-time.After(defaultTestTimeout):
		t.Fatal("listener was not restarted")
	}
	roundTrip(t, live, "after the crash, same connection")
	roundTrip(t, trigger, "accepted by the restarted listener")
	fresh, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	roundTrip(t, fresh, "new connection after restart")
}

func TestForwarderShutdownDrainsThenCloses(t *testing.T) {
	echo := testnet.Echo(t)
	ln := testnet.LocalListener(t)
	fwd := NewForwarder(ForwarderConfig{Dial: dialTo(echo.Addr()), Log: zap.NewNop()})
	svc := NewService(ln, fwd, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx) }()

	finishing, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	stuck, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	roundTrip(t, finishing, "a")
	roundTrip(t, stuck, "b")
	cancel()
	<-done

	shut := make(chan int, 1)
	start := time.Now()
	const grace = 300 * time.Millisecond
	go func() {
		closed, _ := fwd.Shutdown(grace, nil)
		shut <- closed
	}()
	roundTrip(t, finishing, "still served while draining")
	finishing.Close()
	closed := <-shut
	if closed != 1 {
		t.Errorf("Shutdown closed %d connections, want 1 (the one that did not finish)", closed)
	}
	if took := time.Since(start); took < grace || took > grace+defaultTestTimeout/2 {
		t.Errorf("Shutdown took %s with a grace of %s", took, grace)
	}
	stuck.SetReadDeadline(time.Now().Add(defaultTestTimeout))
	if _, err := stuck.Read(make([]byte, 1)); err == nil {
		t.Error("connection still open after the grace period")
	}
}

func TestForwarderRecoversPanicPerConnection(t *testing.T) {
	calls := 0
	var mu sync.Mutex
	echo := testnet.Echo(t)
	dial := func(ctx context.Context) (*net.TCPConn, resolver.Endpoint, *health.Load, error) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			panic(fmt.Sprintf("injected panic in connection %d", n))
		}
		return dialTo(echo.Addr())(ctx)
	}
	addr := serveListener(t, dial)

	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	first.SetReadDeadline(time.Now().Add(defaultTestTimeout))
	if _, err := first.Read(make([]byte, 1)); err == nil {
		t.Fatal("the connection whose handler panicked is still open")
	}
	second, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	roundTrip(t, second, "served after a panic")
}

func TestListenTurnsOnKeepAlive(t *testing.T) {
	ln, err := Listen(context.Background(), "127.0.0.1:0", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	accepted, err := ln.(*net.TCPListener).AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer accepted.Close()
	if !testnet.KeepAlive(t, accepted) {
		t.Fatal("accepted client connection has no TCP keep-alive")
	}
}

// dialerOf is a DialFunc picking the first available endpoint of table; enough for tests that
// need the listener to follow health without the dialer package.
func dialerOf(table *health.Table) DialFunc {
	var next int
	var mu sync.Mutex
	return func(ctx context.Context) (*net.TCPConn, resolver.Endpoint, *health.Load, error) {
		av := table.Load().Available()
		mu.Lock()
		ep := av[next%len(av)]
		next++
		mu.Unlock()
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", ep.Addr())
		if err != nil {
			return nil, ep, nil, err
		}
		return c.(*net.TCPConn), ep, table.Load().LoadOf(ep), nil
	}
}

// serveListener runs the accept loop on a loopback listener, forwarding with dial, until the
// test ends, and returns the address clients connect to.
func serveListener(t testing.TB, dial DialFunc) string {
	t.Helper()
	return serveListenerWith(t, dial).ln.Addr().String()
}

// A unix:// listen address serves on a Unix socket with the given mode, replaces a stale socket
// file and refuses one that a live process serves.
func TestListenUnixSocket(t *testing.T) {
	backend := testnet.Serve(t, func(c *net.TCPConn) { testnet.EchoBuffered(c) })
	path := filepath.Join(t.TempDir(), "gw.sock")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close() // leaves the file, as a killed gateway does

	ln, err := Listen(context.Background(), UnixScheme+path, 0, 0o600)
	if err != nil {
		t.Fatalf("listen over a stale socket file: %v", err)
	}
	defer ln.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if _, err := Listen(context.Background(), UnixScheme+path, 0, 0o600); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listen on a served socket = %v, want it refused as in use", err)
	}

	fwd := NewForwarder(ForwarderConfig{Dial: dialTo(backend.Addr()), Log: zap.NewNop()})
	svc := NewService(ln, fwd, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx) }()
	defer func() {
		cancel()
		<-done
		fwd.Shutdown(defaultTestTimeout, nil)
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, "over a unix socket")
	big := strings.Repeat("b", 1<<20) // large enough for the copy path's bulk branch both ways
	roundTrip(t, c, big)
	if err := c.(*net.UnixConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(defaultTestTimeout))
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Fatalf("after half-closing the unix client: read %d bytes, %v; want a clean EOF", len(rest), err)
	}
}

// A socket whose owner is alive but does not accept (its backlog is full: a connect fails
// with EAGAIN) is not stale: it is neither replaced nor removed.
func TestListenUnixKeepsABusySocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "busy.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	full := false
	for range 16 { // fill the backlog; the owner never accepts
		c, err := net.DialTimeout("unix", path, time.Second)
		if err != nil {
			if !errors.Is(err, syscall.EAGAIN) {
				t.Fatalf("filling the backlog: %v", err)
			}
			full = true
			break
		}
		defer c.Close()
	}
	if !full {
		t.Fatal("the backlog never filled")
	}
	ln, err := Listen(context.Background(), UnixScheme+path, 0, 0o600)
	if err == nil {
		ln.Close()
		t.Fatal("replaced the socket of a live owner whose backlog is full")
	}
	if !strings.Contains(err.Error(), "may be in use") {
		t.Errorf("error %q does not say the socket may be in use", err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("the live owner's socket file is gone: %v", err)
	}
}

// The socket has its mode before it listens: bound, then chmod, then listen.
func TestListenUnixHasItsModeBeforeItListens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gw.sock")
	ln, err := Listen(context.Background(), UnixScheme+path, 0, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode = %v, %v; want 0640", fi.Mode().Perm(), err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("closing the listener left the socket file: %v", err)
	}
}

// When the gateway stops, it closes the socket and cancels the accept loop at about the same
// time, in either order: a closed socket is a stop, not a crash to restart.
func TestServiceTreatsAClosedSocketAsAStop(t *testing.T) {
	ln := testnet.LocalListener(t)
	forwarded := make(chan struct{}, 1)
	fwd := NewForwarder(ForwarderConfig{Dial: func(ctx context.Context) (*net.TCPConn, resolver.Endpoint, *health.Load, error) {
		forwarded <- struct{}{}
		return nil, resolver.Endpoint{}, nil, errors.New("no backend in this test")
	}, Log: zap.NewNop()})
	defer fwd.Shutdown(defaultTestTimeout, nil)
	svc := NewService(ln, fwd, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-forwarded // the loop accepts: it is past its start
	ln.Close()
	wait := time.NewTimer(100 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Serve returned %v when the socket closed before the stop; want it to wait for the stop", err)
	case <-wait.C:
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Serve returned %v after the stop, want context.Canceled", err)
		}
	case <-time.After(defaultTestTimeout):
		t.Fatal("Serve did not return after the stop")
	}
}

// A dial that returns only after Shutdown has closed the live connections must not start a
// connection nobody will close: Shutdown would wait for it forever.
func TestShutdownRefusesADialThatEndsLate(t *testing.T) {
	backend := testnet.Echo(t)
	dialing, release := make(chan struct{}), make(chan struct{})
	slowDial := func(ctx context.Context) (*net.TCPConn, resolver.Endpoint, *health.Load, error) {
		close(dialing)
		<-release // a dial that does not notice the cancel in time
		c, err := net.Dial("tcp", backend.Addr())
		if err != nil {
			return nil, resolver.Endpoint{}, nil, err
		}
		return c.(*net.TCPConn), resolver.Endpoint{Host: "backend"}, nil, nil
	}
	ln := testnet.LocalListener(t)
	fwd := NewForwarder(ForwarderConfig{Dial: slowDial, Log: zap.NewNop()})
	svc := NewService(ln, fwd, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- svc.Serve(ctx) }()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	<-dialing
	cancel()
	<-served
	shut := make(chan int, 1)
	go func() {
		closed, _ := fwd.Shutdown(20*time.Millisecond, nil)
		shut <- closed
	}()
	if !testnet.Eventually(defaultTestTimeout, func() bool {
		fwd.mu.Lock()
		defer fwd.mu.Unlock()
		return fwd.shutdown
	}) {
		t.Fatal("Shutdown never closed the rest")
	}
	close(release)
	select {
	case <-shut:
	case <-time.After(defaultTestTimeout):
		t.Fatal("Shutdown waits for a connection dialed after it closed the rest")
	}
	client.SetReadDeadline(time.Now().Add(defaultTestTimeout))
	if _, err := client.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the late client was not closed: read returned %v", err)
	}
}

// A second signal cuts the drain short: Shutdown closes what is left at once.
func TestShutdownCutShort(t *testing.T) {
	backend := testnet.Echo(t)
	addr := serveListenerWith(t, dialTo(backend.Addr()))
	c, err := net.Dial("tcp", addr.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, "live")
	addr.stop()
	cut := make(chan struct{})
	shut := make(chan [2]any, 1)
	go func() {
		closed, wasCut := addr.fwd.Shutdown(time.Hour, cut)
		shut <- [2]any{closed, wasCut}
	}()
	close(cut)
	select {
	case got := <-shut:
		if got[0] != 1 || got[1] != true {
			t.Fatalf("Shutdown = %v, %v; want 1 connection closed, cut", got[0], got[1])
		}
	case <-time.After(defaultTestTimeout):
		t.Fatal("a cut did not end a drain with an hour's grace")
	}
	expectClosed(t, c)
}

// servedListener is an accept loop on a loopback listener.
type servedListener struct {
	ln   *net.TCPListener
	fwd  *Forwarder
	stop func() // stops accepting; the forwarder is shut down when the test ends
}

func serveListenerWith(t testing.TB, dial DialFunc) servedListener {
	t.Helper()
	ln := testnet.LocalListener(t)
	fwd := NewForwarder(ForwarderConfig{Dial: dial, Log: zap.NewNop()})
	svc := NewService(ln, fwd, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(func() {
		stop()
		fwd.Shutdown(defaultTestTimeout, nil)
	})
	return servedListener{ln: ln, fwd: fwd, stop: stop}
}
