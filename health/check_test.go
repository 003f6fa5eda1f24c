package health

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/internal/testcert"
	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// fakeMember serves HTTP on loopback like an etcd client port: handlers by path, others 404.
func fakeMember(t *testing.T, handlers map[string]http.HandlerFunc, tlsCfg *tls.Config) resolver.Endpoint {
	t.Helper()
	mux := http.NewServeMux()
	for path, h := range handlers {
		mux.HandleFunc(path, h)
	}
	ln := testnet.LocalListener(t)
	srv := &http.Server{Handler: mux}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if tlsCfg != nil {
			srv.TLSConfig = tlsCfg
			srv.ServeTLS(ln, "", "")
			return
		}
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	port := ln.Addr().(*net.TCPAddr).Port
	return resolver.Endpoint{Host: "127.0.0.1", Port: uint16(port), TLS: tlsCfg != nil, Target: "m1.example.com"}
}

func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func TestCheckModes(t *testing.T) {
	tests := []struct {
		name       string
		mode       CheckMode
		handlers   map[string]http.HandlerFunc
		want       State
		wantReason string
		wantMode   CheckMode // the mode the checker settles on
	}{
		{"readyz ok", CheckReadyz, map[string]http.HandlerFunc{"/readyz": answer(200, "ok\n")}, Healthy, "", CheckReadyz},
		{"readyz no leader", CheckReadyz, map[string]http.HandlerFunc{
			"/readyz": answer(503, "[+]serializable_read ok\n[-]linearizable_read failed: etcdserver: leader changed\n")},
			Degraded, "linearizable_read failed", CheckReadyz},
		{"readyz learner", CheckReadyz, map[string]http.HandlerFunc{
			"/readyz": answer(503, "[+]serializable_read ok\n[-]non_learner failed: this member is a learner\n")},
			Down, "learner", CheckReadyz},
		{"no readyz: falls back to /health", CheckReadyz, map[string]http.HandlerFunc{
			"/health": answer(200, `{"health":"true","reason":""}`)}, Healthy, "", CheckHealth},
		{"health alarm", CheckHealth, map[string]http.HandlerFunc{
			"/health": answer(503, `{"health":"false","reason":"ALARM NOSPACE"}`)}, Degraded, "NOSPACE", CheckHealth},
		{"health false with 200", CheckHealth, map[string]http.HandlerFunc{
			"/health": answer(200, `{"health":"false","reason":"RAFT NO LEADER"}`)}, Degraded, "NO LEADER", CheckHealth},
		{"neither path: TCP", CheckReadyz, map[string]http.HandlerFunc{}, Healthy, "", CheckTCP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep := fakeMember(t, tt.handlers, nil)
			c := newChecker(ep, tt.mode, time.Second, TLSConfig{})
			defer c.close()
			got, reason := c.check(context.Background())
			if got != tt.want || !strings.Contains(reason, tt.wantReason) {
				t.Errorf("check = %s %q, want %s with %q", got, reason, tt.want, tt.wantReason)
			}
			if c.mode != tt.wantMode {
				t.Errorf("mode = %s, want %s", c.mode, tt.wantMode)
			}
		})
	}
}

func TestCheckWithoutHTTP(t *testing.T) {
	t.Run("not HTTP: TCP connect decides", func(t *testing.T) {
		silentClose := testnet.Serve(t, func(c *net.TCPConn) { c.Write([]byte("garbage\r\n\r\n")) })
		c := newChecker(endpointOf(t, silentClose.Addr()), CheckReadyz, time.Second, TLSConfig{})
		defer c.close()
		if got, reason := c.check(context.Background()); got != Healthy {
			t.Errorf("check = %s %q, want healthy by TCP", got, reason)
		}
	})
	t.Run("refused", func(t *testing.T) {
		c := newChecker(endpointOf(t, testnet.ClosedPort(t)), CheckReadyz, time.Second, TLSConfig{})
		defer c.close()
		if got, _ := c.check(context.Background()); got != Down {
			t.Errorf("check = %s, want down", got)
		}
	})
	t.Run("frozen: accepts, never answers", func(t *testing.T) {
		frozen := testnet.Serve(t, func(c *net.TCPConn) { io.Copy(io.Discard, c) })
		const timeout = 200 * time.Millisecond
		c := newChecker(endpointOf(t, frozen.Addr()), CheckReadyz, timeout, TLSConfig{})
		defer c.close()
		began := time.Now()
		got, reason := c.check(context.Background())
		if got != Down || time.Since(began) > timeout+time.Second {
			t.Errorf("check = %s %q after %s, want down within %s", got, reason, time.Since(began), timeout)
		}
	})
}

func TestCheckTLSMemberWithClientCertificate(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	serverCert := ca.Issue(t, []string{"example.com"}, nil)
	clientCert := ca.Issue(t, []string{"gateway"}, nil)
	ep := fakeMember(t, map[string]http.HandlerFunc{"/readyz": answer(200, "ok\n")}, &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
	})
	with := newChecker(ep, CheckReadyz, time.Second, TLSConfig{Roots: ca.Pool(), Certificates: []tls.Certificate{clientCert}, Domain: "example.com"})
	defer with.close()
	if got, reason := with.check(context.Background()); got != Healthy {
		t.Errorf("with a client certificate: %s %q, want healthy", got, reason)
	}
	other := testcert.NewCA(t, "other")
	wrongRoots := newChecker(ep, CheckReadyz, time.Second, TLSConfig{Roots: other.Pool(), Certificates: []tls.Certificate{clientCert}, Domain: "example.com"})
	defer wrongRoots.close()
	if got, reason := wrongRoots.check(context.Background()); got != Down || !strings.Contains(reason, "certificate") {
		t.Errorf("a member whose certificate does not verify: %s %q, want down", got, reason)
	}
}

// The prober applies rise and fall: a state changes only after that many results in a row.
func TestProberRiseAndFall(t *testing.T) {
	var ready atomic.Bool
	ready.Store(true)
	ep := fakeMember(t, map[string]http.HandlerFunc{"/readyz": func(w http.ResponseWriter, _ *http.Request) {
		if ready.Load() {
			answer(200, "ok\n")(w, nil)
			return
		}
		answer(503, "[-]linearizable_read failed: no leader\n")(w, nil)
	}}, nil)
	out := NewReports(4)
	table := NewTable()
	table.store(NewSnapshot([]resolver.Endpoint{ep}, []State{Healthy}))
	p := &Prober{
		ep: ep, state: Healthy, table: table, out: out, log: zap.NewNop(),
		cfg:        ProbeConfig{Mode: CheckReadyz, Interval: 20 * time.Millisecond, Timeout: time.Second, RetryDelay: time.Hour, Rise: 2, Fall: 3},
		markedDown: make(chan struct{}), now: make(chan struct{}),
	}
	runProber(t, p)
	expect := func(want State, within time.Duration) {
		t.Helper()
		select {
		case rep := <-out:
			if rep.State != want {
				t.Fatalf("report %s (%s), want %s", rep.State, rep.Reason, want)
			}
		case <-time.After(within):
			t.Fatalf("no report of %s", want)
		}
	}
	began := time.Now()
	ready.Store(false)
	expect(Degraded, defaultTestTimeout)
	if took := time.Since(began); took < 2*p.cfg.Interval {
		t.Errorf("degraded after %s: fewer than 3 failed probes", took)
	}
	ready.Store(true)
	expect(Healthy, defaultTestTimeout)
	select {
	case rep := <-out:
		t.Fatalf("unexpected report %v", rep)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestParseCheckMode(t *testing.T) {
	for _, s := range []string{"readyz", "health", "tcp"} {
		if m, err := ParseCheckMode(s); err != nil || string(m) != s {
			t.Errorf("ParseCheckMode(%q) = %q, %v", s, m, err)
		}
	}
	if _, err := ParseCheckMode("options"); err == nil {
		t.Error("ParseCheckMode accepted options")
	}
}

// A member that is alive but cannot serve a linearizable read in time (no leader: /readyz
// hangs) is degraded, not down.
func TestCheckAliveButNotReadyInTime(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	ep := fakeMember(t, map[string]http.HandlerFunc{
		"/readyz": func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		},
		"/livez": answer(200, "ok\n"),
	}, nil)
	c := newChecker(ep, CheckReadyz, 200*time.Millisecond, TLSConfig{})
	defer c.close()
	if got, reason := c.check(context.Background()); got != Degraded || !strings.Contains(reason, "alive") {
		t.Errorf("check = %s %q, want degraded", got, reason)
	}
}

// Heartbeats find a member that stops answering well within the probe interval.
func TestHeartbeatsFindAFrozenMember(t *testing.T) {
	var frozen atomic.Bool
	release := make(chan struct{})
	defer close(release)
	stall := func(w http.ResponseWriter, r *http.Request) {
		if frozen.Load() {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		answer(200, "ok\n")(w, r)
	}
	ep := fakeMember(t, map[string]http.HandlerFunc{"/readyz": stall, "/livez": stall, "/version": stall}, nil)
	out := NewReports(4)
	table := NewTable()
	table.store(NewSnapshot([]resolver.Endpoint{ep}, []State{Healthy}))
	table.AddClients(1) // heartbeats protect connected clients
	p := &Prober{
		ep: ep, state: Healthy, table: table, out: out, log: zap.NewNop(),
		cfg: ProbeConfig{Mode: CheckReadyz, Interval: time.Hour, Timeout: time.Second, RetryDelay: time.Hour, Rise: 1, Fall: 1,
			Heartbeat: 50 * time.Millisecond, HeartbeatTimeout: 50 * time.Millisecond},
		markedDown: make(chan struct{}), now: make(chan struct{}),
	}
	runProber(t, p)
	time.Sleep(300 * time.Millisecond) // healthy heartbeats change nothing
	select {
	case rep := <-out:
		t.Fatalf("report %v while the member answers", rep)
	default:
	}
	froze := time.Now()
	frozen.Store(true)
	select {
	case rep := <-out:
		if rep.State != Down || !strings.Contains(rep.Reason, "heartbeat") {
			t.Fatalf("report %v, want down by heartbeat", rep)
		}
		if took := time.Since(froze); took > 500*time.Millisecond {
			t.Errorf("down after %s with 50 ms heartbeats", took)
		}
	case <-time.After(defaultTestTimeout):
		t.Fatal("the frozen member was never reported down; the probe interval is an hour")
	}
}

// runProber serves p until the test ends.
func runProber(t *testing.T, p *Prober) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Serve(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// With no connection forwarded there is no client to protect: probes go on, heartbeats pause,
// and they resume as soon as a connection is forwarded.
func TestHeartbeatsOnlyWhileClientsAreConnected(t *testing.T) {
	var probes, beats atomic.Int64
	count := func(n *atomic.Int64) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			answer(200, "ok\n")(w, r)
		}
	}
	ep := fakeMember(t, map[string]http.HandlerFunc{"/readyz": count(&probes), "/livez": answer(200, "ok\n"), "/version": count(&beats)}, nil)
	table := NewTable()
	table.store(NewSnapshot([]resolver.Endpoint{ep}, []State{Healthy}))
	p := &Prober{
		ep: ep, state: Healthy, table: table, out: NewReports(4), log: zap.NewNop(),
		cfg: ProbeConfig{Mode: CheckReadyz, Interval: time.Second, Timeout: time.Second, RetryDelay: time.Hour, Rise: 1, Fall: 1,
			Heartbeat: 10 * time.Millisecond, HeartbeatTimeout: 50 * time.Millisecond},
		markedDown: make(chan struct{}), now: make(chan struct{}),
	}
	runProber(t, p)
	time.Sleep(300 * time.Millisecond)
	if n := beats.Load(); n != 0 {
		t.Fatalf("%d heartbeats with no client connected, want none", n)
	}
	if n := probes.Load(); n != 1 {
		t.Fatalf("%d probes in the first 300ms at a 1s interval, want the first one", n)
	}
	table.AddClients(1)
	time.Sleep(100 * time.Millisecond) // long before the next probe is due
	if n := beats.Load(); n < 3 {
		t.Fatalf("%d heartbeats in the 100ms after a client connected, want them to resume at once, every 10ms", n)
	}
	table.AddClients(-1)
	time.Sleep(200 * time.Millisecond) // the current wait may still beat
	before := beats.Load()
	time.Sleep(300 * time.Millisecond)
	if n := beats.Load() - before; n != 0 {
		t.Fatalf("%d heartbeats after the last client left, want none", n)
	}
}
