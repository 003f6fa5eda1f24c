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
	"github.com/etcd-gateway/etcd-gateway/member"
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
		{"no readyz, a learner by its status (etcd 3.4)", CheckReadyz, map[string]http.HandlerFunc{
			"/health":                answer(200, `{"health":"true","reason":""}`),
			"/v3/maintenance/status": answer(200, `{"header":{"member_id":"1"},"version":"3.4.23","isLearner":true}`)},
			Down, "learner", CheckHealth},
		{"no readyz, a voter by its status", CheckReadyz, map[string]http.HandlerFunc{
			"/health":                answer(200, `{"health":"true","reason":""}`),
			"/v3/maintenance/status": answer(200, `{"header":{"member_id":"1"},"version":"3.4.23"}`)},
			Healthy, "", CheckHealth},
		{"health alarm", CheckHealth, map[string]http.HandlerFunc{
			"/health": answer(503, `{"health":"false","reason":"ALARM NOSPACE"}`)}, Degraded, "NOSPACE", CheckHealth},
		{"health false with 200", CheckHealth, map[string]http.HandlerFunc{
			"/health": answer(200, `{"health":"false","reason":"RAFT NO LEADER"}`)}, Degraded, "NO LEADER", CheckHealth},
		{"neither path: TCP", CheckReadyz, map[string]http.HandlerFunc{}, Healthy, "", CheckTCP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep := fakeMember(t, tt.handlers, nil)
			c := newChecker(ep, tt.mode, time.Second, member.Policy{})
			defer c.close()
			got, reason := judge(t, c)
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
		c := newChecker(endpointOf(t, silentClose.Addr()), CheckReadyz, time.Second, member.Policy{})
		defer c.close()
		if got, reason := judge(t, c); got != Healthy {
			t.Errorf("check = %s %q, want healthy by TCP", got, reason)
		}
	})
	t.Run("refused", func(t *testing.T) {
		c := newChecker(endpointOf(t, testnet.ClosedPort(t)), CheckReadyz, time.Second, member.Policy{})
		defer c.close()
		if got, _ := judge(t, c); got != Down {
			t.Errorf("check = %s, want down", got)
		}
	})
	t.Run("frozen: accepts, never answers", func(t *testing.T) {
		frozen := testnet.Serve(t, func(c *net.TCPConn) { io.Copy(io.Discard, c) })
		const timeout = 200 * time.Millisecond
		c := newChecker(endpointOf(t, frozen.Addr()), CheckReadyz, timeout, member.Policy{})
		defer c.close()
		began := time.Now()
		got, reason := judge(t, c)
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
	with := newChecker(ep, CheckReadyz, time.Second, member.Policy{Roots: ca.Pool(), Certificates: []tls.Certificate{clientCert}, Domain: "example.com"})
	defer with.close()
	if got, reason := judge(t, with); got != Healthy {
		t.Errorf("with a client certificate: %s %q, want healthy", got, reason)
	}
	other := testcert.NewCA(t, "other")
	wrongRoots := newChecker(ep, CheckReadyz, time.Second, member.Policy{Roots: other.Pool(), Certificates: []tls.Certificate{clientCert}, Domain: "example.com"})
	defer wrongRoots.close()
	if got, reason := judge(t, wrongRoots); got != Down || !strings.Contains(reason, "certificate") {
		t.Errorf("a member whose certificate does not verify: %s %q, want down", got, reason)
	}
}

// Probes of a TLS member resume its session, and a full handshake proves its chain and key
// again every minute and after any probe that did not find it healthy: a certificate rotated
// to one the gateway does not trust is seen within a minute.
func TestCheckResumesTLSSessionsAndProvesTheKeyEveryMinute(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	trusted := ca.Issue(t, []string{"example.com"}, nil)
	untrusted := testcert.NewCA(t, "other").Issue(t, []string{"example.com"}, nil)
	var served atomic.Pointer[tls.Certificate]
	served.Store(&trusted)
	resumed := make(chan bool, 16)
	ep := fakeMember(t, map[string]http.HandlerFunc{"/readyz": func(w http.ResponseWriter, r *http.Request) {
		resumed <- r.TLS.DidResume
		answer(200, "ok\n")(w, r)
	}}, &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return served.Load(), nil }})
	c := newChecker(ep, CheckReadyz, time.Second, member.Policy{Roots: ca.Pool(), Domain: "example.com"})
	defer c.close()
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	c.now = func() time.Time { return time.Unix(0, clock.Load()) }
	probe := func(step string, want State, wantResumed bool) {
		t.Helper()
		got, reason := judge(t, c)
		if got != want {
			t.Fatalf("%s: %s %q, want %s", step, got, reason, want)
		}
		if want != Healthy {
			return // no request was made
		}
		if r := <-resumed; r != wantResumed {
			t.Fatalf("%s: resumed %v, want %v", step, r, wantResumed)
		}
	}
	probe("the first probe", Healthy, false)
	probe("the second", Healthy, true)
	clock.Add(int64(fullHandshakeEvery - time.Second))
	probe("59 s after the full handshake", Healthy, true)
	served.Store(&untrusted)
	clock.Add(int64(time.Second))
	probe("a minute after the full handshake, the certificate rotated to an untrusted one", Down, false)
	served.Store(&trusted)
	probe("after a failure", Healthy, false)
	probe("after a full handshake again", Healthy, true)
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
	c := newChecker(ep, CheckReadyz, 200*time.Millisecond, member.Policy{})
	defer c.close()
	if got, reason := judge(t, c); got != Degraded || !strings.Contains(reason, "alive") {
		t.Errorf("check = %s %q, want degraded", got, reason)
	}
}

// A member that answers /readyz at once, healthy or not, is asked nothing else: one
// connection per probe. /livez is asked only when /readyz is slow (above).
func TestCheckAsksLivenessOnlyWhenReadinessIsSlow(t *testing.T) {
	var readyz, livez atomic.Int64
	var ready atomic.Bool
	ready.Store(true)
	ep := fakeMember(t, map[string]http.HandlerFunc{
		"/readyz": func(w http.ResponseWriter, r *http.Request) {
			readyz.Add(1)
			if ready.Load() {
				answer(200, "ok\n")(w, r)
				return
			}
			answer(503, "[-]linearizable_read failed: etcdserver: leader changed\n")(w, r)
		},
		"/livez": func(w http.ResponseWriter, r *http.Request) {
			livez.Add(1)
			answer(200, "ok\n")(w, r)
		},
	}, nil)
	c := newChecker(ep, CheckReadyz, time.Second, member.Policy{})
	defer c.close()
	for range 3 {
		if got, reason := judge(t, c); got != Healthy {
			t.Fatalf("check = %s %q, want healthy", got, reason)
		}
	}
	ready.Store(false)
	if got, _ := judge(t, c); got != Degraded {
		t.Fatalf("check = %s, want degraded by the 503", got)
	}
	if readyz.Load() != 4 || livez.Load() != 0 {
		t.Fatalf("4 probes asked /readyz %d and /livez %d times, want 4 and 0", readyz.Load(), livez.Load())
	}
}

// Heartbeats find a member that stops answering well within the probe interval.
func TestHeartbeatsFindAFrozenMember(t *testing.T) {
	ep, frozen, release := freezableMember(t)
	defer release()
	out := NewReports(4)
	p := newTestProber(ep, out, ProbeConfig{Mode: CheckReadyz, Interval: time.Hour, Timeout: time.Second, RetryDelay: time.Hour,
		Rise: 1, Fall: 1, Heartbeat: 50 * time.Millisecond, HeartbeatTimeout: 50 * time.Millisecond})
	load := p.table.Load().LoadOf(ep)
	load.Start() // heartbeats protect the member's clients that talk to it
	defer chatter(load)()
	runProber(t, p)
	if rep := <-out; rep.Evidence != Probed || rep.State != Healthy {
		t.Fatalf("first report %+v, want a healthy probe", rep)
	}
	quiet := time.NewTimer(300 * time.Millisecond) // healthy heartbeats report nothing
	select {
	case rep := <-out:
		t.Fatalf("report %+v while the member answers", rep)
	case <-quiet.C:
	}
	froze := time.Now()
	frozen.Store(true)
	awaitHeartbeatsLost(t, out, froze)
}

// awaitHeartbeatsLost waits for the prober's report that the member's heartbeats went
// unanswered, and fails unless it comes within 500 ms of since (with 50 ms heartbeats; the
// probe interval is an hour).
func awaitHeartbeatsLost(t *testing.T, out Reports, since time.Time) {
	t.Helper()
	select {
	case rep := <-out:
		if rep.Evidence != HeartbeatsLost || rep.State != Down || !strings.Contains(rep.Reason, "heartbeat") {
			t.Fatalf("report %+v, want heartbeats lost", rep)
		}
		if took := time.Since(since); took > 500*time.Millisecond {
			t.Errorf("down %s after the member froze, or the client asked, with 50 ms heartbeats", took)
		}
	case <-time.After(defaultTestTimeout):
		t.Fatal("the frozen member was never reported down; the probe interval is an hour")
	}
}

// A client whose member froze while the client was silent (the heartbeats resting) sends a
// request: the heartbeats resume at once and find the member frozen within two timeouts.
func TestHeartbeatsFindAFrozenMemberOnTheFirstRequestAfterARest(t *testing.T) {
	var frozen atomic.Bool
	var beats atomic.Int64
	release := make(chan struct{})
	defer close(release)
	ep := fakeMember(t, map[string]http.HandlerFunc{
		"/readyz": answer(200, "ok\n"),
		"/version": func(w http.ResponseWriter, r *http.Request) {
			beats.Add(1)
			freezable(&frozen, release, answer(200, "{}"))(w, r)
		},
	}, nil)
	out := NewReports(4)
	p := newTestProber(ep, out, ProbeConfig{Mode: CheckReadyz, Interval: time.Hour, Timeout: time.Second, RetryDelay: time.Hour,
		Rise: 1, Fall: 1, Heartbeat: 50 * time.Millisecond, HeartbeatTimeout: 50 * time.Millisecond})
	load := p.table.Load().LoadOf(ep)
	load.Start() // a client, silent: the heartbeats rest after the linger
	runProber(t, p)
	if rep := <-out; rep.Evidence != Probed || rep.State != Healthy {
		t.Fatalf("first report %+v, want a healthy probe", rep)
	}
	if !testnet.Eventually(defaultTestTimeout, func() bool {
		before := beats.Load()
		settle := time.NewTimer(200 * time.Millisecond)
		<-settle.C
		return beats.Load() == before
	}) {
		t.Fatal("heartbeats never rested for a silent client")
	}
	frozen.Store(true)
	asked := time.Now()
	load.Sent(testRequest) // the client's request, which the frozen member leaves unanswered
	awaitHeartbeatsLost(t, out, asked)
}

// A member that freezes just before a probe is due is found by the heartbeat in flight, not by
// the probe, which would wait out its whole timeout while no heartbeat runs.
func TestHeartbeatsFindAFrozenMemberBeforeTheNextProbe(t *testing.T) {
	ep, frozen, release := freezableMember(t)
	defer release()
	out := NewReports(16)
	// A probe every other heartbeat, each allowed 5 s.
	p := newTestProber(ep, out, ProbeConfig{Mode: CheckReadyz, Interval: 100 * time.Millisecond, Timeout: 5 * time.Second, RetryDelay: time.Hour,
		Rise: 1, Fall: 1, Heartbeat: 50 * time.Millisecond, HeartbeatTimeout: 50 * time.Millisecond})
	load := p.table.Load().LoadOf(ep)
	load.Start()
	defer chatter(load)()
	runProber(t, p)
	if !testnet.Eventually(defaultTestTimeout, func() bool { return len(out) >= 3 }) {
		t.Fatal("no probes")
	}
	for len(out) > 0 {
		if rep := <-out; rep.State != Healthy {
			t.Fatalf("report %+v before the freeze, want healthy probes", rep)
		}
	}
	frozen.Store(true)
	select {
	case rep := <-out:
		if rep.Evidence != HeartbeatsLost {
			t.Fatalf("report %+v, want the heartbeats to find the frozen member before a probe times out", rep)
		}
	case <-time.After(defaultTestTimeout):
		t.Fatal("the frozen member was never reported down")
	}
}

// freezableMember is a fake member whose every answer stalls once frozen is set, until
// release is called.
func freezableMember(t *testing.T) (ep resolver.Endpoint, frozen *atomic.Bool, release func()) {
	frozen = new(atomic.Bool)
	stalled := make(chan struct{})
	stall := freezable(frozen, stalled, answer(200, "ok\n"))
	ep = fakeMember(t, map[string]http.HandlerFunc{"/readyz": stall, "/livez": stall, "/version": stall}, nil)
	return ep, frozen, func() { close(stalled) }
}

// freezable answers with then, unless frozen is set: then it answers nothing until release is
// closed or the request ends, as a frozen member.
func freezable(frozen *atomic.Bool, release <-chan struct{}, then http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if frozen.Load() {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		then(w, r)
	}
}

// testRequest is the size of a client's request in the heartbeat tests: more than control
// frames.
const testRequest = 100

// chatter is a client that talks to the member of load: it notes bytes sent every 10 ms
// until stop is called.
func chatter(load *Load) (stop func()) {
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			load.Sent(testRequest)
			select {
			case <-tick.C:
			case <-done:
				return
			}
		}
	}()
	return func() {
		close(done)
		<-ended
	}
}

// elsewhere is a member beside the probed one in the Tables of newTestProber.
var elsewhere = resolver.Endpoint{Host: "elsewhere.example.com", Port: 2379}

// newTestProber returns a Prober of ep, in a Table that holds it and elsewhere healthy,
// reporting to out.
func newTestProber(ep resolver.Endpoint, out Reports, cfg ProbeConfig) *Prober {
	table := NewTable()
	table.store(NewSnapshot([]resolver.Endpoint{ep, elsewhere}, []State{Healthy, Healthy}, nil))
	return &Prober{ep: ep, table: table, out: out, log: zap.NewNop(), cfg: cfg,
		probeNow: make(chan struct{}), now: time.Now}
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

// With no client talking to the member there is no client of it to protect: probes go on,
// heartbeats pause (a client of another member does not resume them, nor does a silent one
// after the linger), and they resume as soon as a client of the member sends it bytes.
func TestHeartbeatsOnlyWhileTheMemberHasClients(t *testing.T) {
	var probes, beats atomic.Int64
	count := func(n *atomic.Int64) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			answer(200, "ok\n")(w, r)
		}
	}
	ep := fakeMember(t, map[string]http.HandlerFunc{"/readyz": count(&probes), "/livez": answer(200, "ok\n"), "/version": count(&beats)}, nil)
	out := make(Reports, 64)
	p := newTestProber(ep, out, ProbeConfig{Mode: CheckReadyz, Interval: time.Hour, Timeout: time.Second, RetryDelay: time.Hour,
		Rise: 1, Fall: 1, Heartbeat: 10 * time.Millisecond, HeartbeatTimeout: 50 * time.Millisecond})
	runProber(t, p)
	<-out                                         // the first probe
	idle := time.NewTimer(300 * time.Millisecond) // 30 heartbeat periods
	<-idle.C
	if n := beats.Load(); n != 0 {
		t.Fatalf("%d heartbeats with no client connected, want none", n)
	}
	other := p.table.Load().LoadOf(elsewhere)
	other.Start()
	other.Sent(testRequest)
	idle = time.NewTimer(300 * time.Millisecond)
	<-idle.C
	if n := beats.Load(); n != 0 {
		t.Fatalf("%d heartbeats with a client of another member only, want none", n)
	}
	load := p.table.Load().LoadOf(ep)
	load.Start()
	stop := chatter(load)
	if !testnet.Eventually(defaultTestTimeout, func() bool { return beats.Load() >= 3 }) {
		t.Fatalf("%d heartbeats after a client connected, want them to resume", beats.Load())
	}
	if n := probes.Load(); n != 1 {
		t.Fatalf("%d probes at a 1h interval, want only the first one: heartbeats resumed by themselves, not after a probe", n)
	}
	stop() // the client goes silent, still connected (an idle watch)
	stopped := func() bool {
		before := beats.Load()
		settle := time.NewTimer(100 * time.Millisecond)
		<-settle.C
		return beats.Load() == before
	}
	if !testnet.Eventually(defaultTestTimeout, stopped) {
		t.Fatal("heartbeats go on while the member's only client is silent")
	}
	before := beats.Load()
	ping := int(member.ClientControlBytes(member.SchemePlain)) // a keepalive PING, a WINDOW_UPDATE: no request
	for range 3 {
		load.Sent(ping)
		apart := time.NewTimer(burstWindow + 20*time.Millisecond) // keepalives come seconds apart: pacing
		<-apart.C
	}
	if n := beats.Load(); n != before {
		t.Fatalf("%d heartbeats for control frames alone, want none", n-before)
	}
	load.Sent(ping / 2) // a request whose HEADERS and DATA frames came in two writes
	load.Sent(ping/2 + 3)
	if !testnet.Eventually(defaultTestTimeout, func() bool { return beats.Load() >= before+3 }) {
		t.Fatal("a silent client's request did not resume the heartbeats")
	}
	load.Done()
	if !testnet.Eventually(defaultTestTimeout, stopped) { // after the linger, or at once
		t.Fatal("heartbeats go on after the last client left")
	}
}

// judge probes once with c and returns its verdict on the member; a probe that said nothing of
// the member fails the test.
func judge(t *testing.T, c *checker) (State, string) {
	t.Helper()
	v := c.check(context.Background())
	if v.noNews != 0 {
		t.Fatalf("the probe said nothing of the member: %s, %s", v.noNews, v.reason)
	}
	return v.state, v.reason
}
