package resolver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/etcd-gateway/etcd-gateway/internal/clock"
	"github.com/etcd-gateway/etcd-gateway/internal/dnstest"
	"github.com/etcd-gateway/etcd-gateway/internal/testcert"
	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
	"github.com/etcd-gateway/etcd-gateway/member"
)

const defaultTestTimeout = 10 * time.Second

type refresherFixture struct {
	dns     *dnstest.Server
	refresh *Refresher
	clock   *clock.Fake // nil on the real clock
	updates *Updates
	logs    *observer.ObservedLogs
	cancel  context.CancelFunc
	done    chan error
}

func testSRVConfig(_ *testing.T, s *dnstest.Server) SRVConfig {
	return SRVConfig{Domain: "example.com", DNSServer: s.Addr(), MinRefresh: 100 * time.Millisecond,
		MaxRefresh: time.Minute, DialTimeout: time.Second}
}

// startRefresher runs a Refresher of cfg, for a gateway on 127.0.0.1:23790, serving fallback
// until discovery first succeeds.
func startRefresher(t *testing.T, s *dnstest.Server, cfg SRVConfig, fallback ...Endpoint) *refresherFixture {
	t.Helper()
	return startTrustingRefresher(t, s, cfg, nil, fallback...)
}

// startTrustingRefresher is startRefresher verifying _etcd-client-ssl members against roots
// (the system roots when nil).
func startTrustingRefresher(t *testing.T, s *dnstest.Server, cfg SRVConfig, roots *x509.CertPool, fallback ...Endpoint) *refresherFixture {
	t.Helper()
	return runRefresher(t, s, cfg, roots, nil, fallback...)
}

// startClockedRefresher is startRefresher whose waits between lookups pass only when the test
// advances fake.
func startClockedRefresher(t *testing.T, s *dnstest.Server, cfg SRVConfig, fake *clock.Fake, fallback ...Endpoint) *refresherFixture {
	t.Helper()
	return runRefresher(t, s, cfg, nil, fake, fallback...)
}

// runRefresher runs a Refresher of cfg verifying against roots, on fake's timers unless it is
// nil, until the test ends.
func runRefresher(t *testing.T, s *dnstest.Server, cfg SRVConfig, roots *x509.CertPool, fake *clock.Fake, fallback ...Endpoint) *refresherFixture {
	t.Helper()
	guard, err := NewLoopGuard(context.Background(), "127.0.0.1:23790")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	f := &refresherFixture{dns: s, clock: fake, updates: NewUpdates(), logs: logs, done: make(chan error, 1)}
	r, err := NewRefresher(cfg, member.Policy{Roots: roots, Domain: cfg.Domain, InsecureDiscovery: cfg.Insecure}, fallback, guard, f.updates, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if fake != nil {
		r.clock = fake
	}
	f.refresh = r
	var ctx context.Context
	ctx, f.cancel = context.WithCancel(context.Background())
	go func() { f.done <- r.Serve(ctx) }()
	t.Cleanup(func() {
		f.cancel()
		<-f.done
	})
	return f
}

// waitSet waits until the published set is want and returns how long that took.
func (f *refresherFixture) waitSet(t *testing.T, want []Endpoint) time.Duration {
	t.Helper()
	began := time.Now()
	deadline := time.After(defaultTestTimeout)
	for {
		if got, ok := f.updates.Latest(); ok && slices.Equal(got, want) {
			return time.Since(began)
		}
		select {
		case <-f.updates.Kicked():
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			got, _ := f.updates.Latest()
			t.Fatalf("published set = %v, want %v", got, want)
		}
	}
}

// waitIdle waits until the refresher, on the fake clock, is done with its lookup and waits for
// the next, and returns how long that wait is.
func (f *refresherFixture) waitIdle(t *testing.T) time.Duration {
	t.Helper()
	left, ok := f.clock.WaitTimer(defaultTestTimeout)
	if !ok {
		t.Fatal("the refresher never waited for its next lookup")
	}
	return left
}

// tick lets the refresher's wait pass once it waits, so that it looks up again.
func (f *refresherFixture) tick(t *testing.T) {
	t.Helper()
	f.clock.Advance(f.waitIdle(t))
}

// tickUntil ticks until cond holds, for at most defaultTestTimeout.
func (f *refresherFixture) tickUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(defaultTestTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never %s", what)
		}
		f.tick(t)
	}
}

func plainZone(ttl int, members ...string) []string {
	var zone []string
	for i, ip := range members {
		name := "m" + strconv.Itoa(i) + ".example.com."
		zone = append(zone,
			"_etcd-client._tcp.example.com. "+strconv.Itoa(ttl)+" IN SRV 0 0 2379 "+name,
			name+" "+strconv.Itoa(ttl)+" IN A "+ip)
	}
	return zone
}

func plainSet(members ...string) []Endpoint {
	var eps []Endpoint
	for i, ip := range members {
		eps = append(eps, Endpoint{Host: ip, Port: 2379, Target: "m" + strconv.Itoa(i) + ".example.com"})
	}
	return Normalize(eps)
}

// The refresher follows the zone while it runs: a member added, re-addressed, removed, each
// within the TTL plus a second.
func TestRefresherFollowsTheZone(t *testing.T) {
	t.Parallel()
	s := dnstest.Start(t)
	s.SetZone(plainZone(1, "127.0.0.11", "127.0.0.12")...)
	f := startRefresher(t, s, testSRVConfig(t, s))
	f.waitSet(t, plainSet("127.0.0.11", "127.0.0.12"))
	for _, step := range [][]string{
		{"127.0.0.11", "127.0.0.12", "127.0.0.13"}, // added
		{"127.0.0.11", "127.0.0.22", "127.0.0.13"}, // re-addressed
		{"127.0.0.11", "127.0.0.22"},               // removed
	} {
		s.SetZone(plainZone(1, step...)...)
		if took := f.waitSet(t, plainSet(step...)); took > 2*time.Second {
			t.Errorf("change to %v followed after %s, TTL 1s", step, took)
		}
	}
	if n := f.logs.FilterMessage("members from _etcd-client records serve without TLS and are used unauthenticated").Len(); n != 1 {
		t.Errorf("logged the unauthenticated members %d times, want once", n)
	}
}

// A long TTL is not re-queried early; the wait is bounded by the refresh flags.
func TestRefresherHonoursTTL(t *testing.T) {
	t.Parallel()
	s := dnstest.Start(t)
	s.SetZone(plainZone(300, "127.0.0.11")...)
	cfg := testSRVConfig(t, s)
	fake := clock.NewFake(time.Unix(0, 0))
	f := startClockedRefresher(t, s, cfg, fake)
	f.waitSet(t, plainSet("127.0.0.11"))
	if wait := f.waitIdle(t); wait != cfg.MaxRefresh {
		t.Errorf("after a 300s TTL the refresher waits %s, want --discovery-srv-max-refresh=%s", wait, cfg.MaxRefresh)
	}
	fake.Advance(cfg.MaxRefresh - time.Second)
	f.waitIdle(t)
	if n := s.Queries("_etcd-client._tcp.example.com.", dns.TypeSRV); n != 1 {
		t.Errorf("queried %d times within %s of a 300s TTL, want 1", n, cfg.MaxRefresh-time.Second)
	}

	s2 := dnstest.Start(t)
	s2.SetZone(plainZone(300, "127.0.0.11")...)
	cfg2 := testSRVConfig(t, s2)
	cfg2.MaxRefresh = 200 * time.Millisecond
	f2 := startClockedRefresher(t, s2, cfg2, clock.NewFake(time.Unix(0, 0)))
	f2.waitSet(t, plainSet("127.0.0.11"))
	for range 3 {
		if wait := f2.waitIdle(t); wait != cfg2.MaxRefresh {
			t.Errorf("with --discovery-srv-max-refresh=200ms the refresher waits %s", wait)
		}
		f2.tick(t)
	}
	f2.waitIdle(t)
	if n := s2.Queries("_etcd-client._tcp.example.com.", dns.TypeSRV); n != 4 {
		t.Errorf("queried %d times over three waits of --discovery-srv-max-refresh=200ms, want 4", n)
	}
}

// DNS failures keep the last good set, are logged once per outage, and the refresher picks up
// the zone again when the server recovers, also after a restart of the server.
func TestRefresherKeepsLastGoodSetThroughFailures(t *testing.T) {
	t.Parallel()
	s := dnstest.Start(t)
	s.SetZone(plainZone(1, "127.0.0.11", "127.0.0.12")...)
	cfg := testSRVConfig(t, s)
	cfg.MaxRefresh = 300 * time.Millisecond
	f := startClockedRefresher(t, s, cfg, clock.NewFake(time.Unix(0, 0)))
	good := plainSet("127.0.0.11", "127.0.0.12")
	f.waitSet(t, good)

	outages := []func(){
		func() { s.SetMode(dnstest.ServFail) },
		func() { s.SetMode(dnstest.Silent) },
		func() { s.SetMode(dnstest.Garbage) },
		func() { s.SetZone() }, // every name gone: NXDOMAIN for both
		func() { s.Stop() },
	}
	recoveries := []func(){
		func() { s.SetMode(dnstest.Normal) },
		func() { s.SetMode(dnstest.Normal) },
		func() { s.SetMode(dnstest.Normal) },
		func() { s.SetZone(plainZone(1, "127.0.0.11", "127.0.0.12")...) },
		func() { s.Restart() },
	}
	for i := range outages {
		warnBefore := f.logs.FilterMessage("SRV discovery failed; keeping the last good endpoint set and retrying").Len()
		outages[i]()
		f.tickUntil(t, fmt.Sprintf("warned of outage %d", i), func() bool {
			return f.logs.FilterMessage("SRV discovery failed; keeping the last good endpoint set and retrying").Len() > warnBefore
		})
		f.tick(t) // two failed retries later
		f.tick(t)
		f.waitIdle(t)
		if got, _ := f.updates.Latest(); !slices.Equal(got, good) {
			t.Fatalf("outage %d: published %v, want the last good set kept", i, got)
		}
		if n := f.logs.FilterMessage("SRV discovery failed; keeping the last good endpoint set and retrying").Len() - warnBefore; n != 1 {
			t.Errorf("outage %d: %d warnings, want 1", i, n)
		}
		recoveries[i]()
		s.SetZone(plainZone(1, "127.0.0.11", "127.0.0.1"+strconv.Itoa(3+i))...)
		good = plainSet("127.0.0.11", "127.0.0.1"+strconv.Itoa(3+i))
		f.tickUntil(t, fmt.Sprintf("recovered from outage %d", i), func() bool {
			got, _ := f.updates.Latest()
			return slices.Equal(got, good)
		})
	}
	if n := f.logs.FilterMessage("SRV discovery recovered").Len(); n != len(outages) {
		t.Errorf("%d recovery lines for %d outages", n, len(outages))
	}
}

// Explicit --endpoints serve until discovery first succeeds; nothing is published otherwise.
func TestRefresherFallback(t *testing.T) {
	t.Parallel()
	s := dnstest.Start(t)
	s.SetMode(dnstest.ServFail)
	fallback := []Endpoint{{Host: "10.0.1.10", Port: 2379}}
	f := startRefresher(t, s, testSRVConfig(t, s), fallback...)
	f.waitSet(t, fallback)
	s.SetZone(plainZone(1, "127.0.0.11")...)
	s.SetMode(dnstest.Normal)
	f.waitSet(t, plainSet("127.0.0.11"))

	s2 := dnstest.Start(t)
	s2.SetMode(dnstest.ServFail)
	f2 := startClockedRefresher(t, s2, testSRVConfig(t, s2), clock.NewFake(time.Unix(0, 0)))
	for range 3 {
		f2.tick(t)
	}
	f2.waitIdle(t)
	if got, ok := f2.updates.Latest(); ok {
		t.Fatalf("published %v without discovery or explicit endpoints", got)
	}
}

func TestRefresherRefusesLoop(t *testing.T) {
	t.Parallel()
	s := dnstest.Start(t)
	s.SetZone(
		"_etcd-client._tcp.example.com. 1 IN SRV 0 0 23790 self.example.com.",
		"_etcd-client._tcp.example.com. 1 IN SRV 0 0 2379 m1.example.com.",
		"self.example.com. 1 IN A 127.0.0.1",
		"m1.example.com. 1 IN A 127.0.0.11",
	)
	f := startRefresher(t, s, testSRVConfig(t, s))
	f.waitSet(t, []Endpoint{{Host: "127.0.0.11", Port: 2379, Target: "m1.example.com"}})
	if n := f.logs.FilterMessage("member left out: it is the gateway's own listen address").Len(); n != 1 {
		t.Errorf("loop logged %d times, want once", n)
	}
}

// tlsMember serves TLS with cert on loopback and returns its port.
func tlsMember(t *testing.T, cert tls.Certificate, clientAuth tls.ClientAuthType) uint16 {
	addr, _ := testcert.ServeTLS(t, "127.0.0.1:0", cert, clientAuth, tls.VersionTLS13)
	_, port := splitTestAddr(t, addr)
	return port
}

func TestTLSVerification(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t, "cluster CA")
	other := testcert.NewCA(t, "someone else")
	lo := []net.IP{net.IPv4(127, 0, 0, 1)}
	tests := []struct {
		name     string
		cert     tls.Certificate
		auth     tls.ClientAuthType
		insecure bool
		want     bool
	}{
		{"valid for the SRV domain", ca.Issue(t, []string{"example.com"}, nil), tls.NoClientCert, false, true},
		{"valid for the target name", ca.Issue(t, []string{"m1.example.com"}, nil), tls.NoClientCert, false, true},
		{"member requires a client certificate", ca.Issue(t, []string{"example.com"}, nil), tls.RequireAnyClientCert, false, true},
		{"signed by another CA", other.Issue(t, []string{"example.com"}, lo), tls.NoClientCert, false, false},
		{"valid for another name", ca.Issue(t, []string{"elsewhere.example.org"}, lo), tls.NoClientCert, false, false},
		{"another CA, --insecure-discovery", other.Issue(t, []string{"example.com"}, nil), tls.NoClientCert, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			port := tlsMember(t, tt.cert, tt.auth)
			s := dnstest.Start(t)
			p := strconv.Itoa(int(port))
			s.SetZone(
				"_etcd-client-ssl._tcp.example.com. 1 IN SRV 0 0 "+p+" m1.example.com.",
				"_etcd-client._tcp.example.com. 1 IN SRV 0 0 2379 m2.example.com.",
				"m1.example.com. 1 IN A 127.0.0.1",
				"m2.example.com. 1 IN A 127.0.0.12",
			)
			cfg := testSRVConfig(t, s)
			cfg.Insecure = tt.insecure
			f := startTrustingRefresher(t, s, cfg, ca.Pool())
			member := Endpoint{Host: "127.0.0.1", Port: port, Target: "m1.example.com", TLS: true}
			plain := Endpoint{Host: "127.0.0.12", Port: 2379, Target: "m2.example.com"}
			want := []Endpoint{plain}
			if tt.want {
				want = Normalize([]Endpoint{member, plain})
			}
			f.waitSet(t, want)
			done, _ := f.refresh.Lookups()
			if !testnet.Eventually(defaultTestTimeout, func() bool { n, _ := f.refresh.Lookups(); return n >= done+2 }) {
				t.Fatal("the refresher did not look up again")
			}
			// A refresh later, the verdict and its log stand.
			if got, _ := f.updates.Latest(); !slices.Equal(got, want) {
				t.Fatalf("published %v, want %v", got, want)
			}
			refusals := f.logs.FilterMessageSnippet("member left out: it did not prove it holds a TLS certificate that verifies").Len()
			if wantLogs := map[bool]int{true: 0, false: 1}[tt.want]; refusals != wantLogs {
				t.Errorf("%d refusal lines, want %d", refusals, wantLogs)
			}
		})
	}
}

// DNS chaos in a loop: garbage, truncation, silence, SERVFAIL, the server killed and
// restarted, and zone changes. The set is never empty once one was known, and the refresher
// follows the final zone.
func TestRefresherThroughDNSChaos(t *testing.T) {
	t.Parallel()
	s := dnstest.Start(t)
	s.SetZone(plainZone(1, "127.0.0.11", "127.0.0.12")...)
	cfg := testSRVConfig(t, s)
	cfg.MaxRefresh = 2 * time.Second // bounds the backoff after failures
	f := startRefresher(t, s, cfg)
	f.waitSet(t, plainSet("127.0.0.11", "127.0.0.12"))

	stop := make(chan struct{})
	watched := make(chan int)
	go func() { // checks the published set every millisecond
		empties := 0
		for {
			select {
			case <-stop:
				watched <- empties
				return
			case <-time.After(time.Millisecond):
			}
			if set, ok := f.updates.Latest(); !ok || len(set) == 0 {
				empties++
			}
		}
	}()
	zones := [][]string{{"127.0.0.21"}, {"127.0.0.21", "127.0.0.22", "127.0.0.23"}, {"127.0.0.31", "127.0.0.32"}}
	steps := 0
	for round := range 4 {
		for _, mode := range []dnstest.Mode{dnstest.Garbage, dnstest.Truncate, dnstest.Silent, dnstest.ServFail} {
			s.SetMode(mode)
			time.Sleep(300 * time.Millisecond)
			steps++
		}
		s.SetMode(dnstest.Normal)
		s.Stop()
		time.Sleep(300 * time.Millisecond)
		s.Restart()
		s.SetZone(plainZone(1, zones[round%len(zones)]...)...)
		time.Sleep(300 * time.Millisecond)
		steps += 2
	}
	final := []string{"127.0.0.41", "127.0.0.42", "127.0.0.43"}
	s.SetZone(plainZone(1, final...)...)
	took := f.waitSet(t, plainSet(final...))
	close(stop)
	if empties := <-watched; empties > 0 {
		t.Errorf("the published set was empty %d times during DNS chaos", empties)
	}
	t.Logf("%d chaos steps; the final zone was followed %s after it was set", steps, took)
}

// A member that cannot be reached while it is verified is tried again within seconds, not at
// the records' next refresh, and the log says what happened rather than blaming its
// certificate.
func TestTransientVerificationFailureIsRetriedSoon(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t, "cluster CA")
	port, err := testnet.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s := dnstest.Start(t)
	s.SetZone(
		"_etcd-client-ssl._tcp.example.com. 300 IN SRV 0 0 "+strconv.Itoa(port)+" m1.example.com.",
		"_etcd-client._tcp.example.com. 300 IN SRV 0 0 2379 m2.example.com.",
		"m1.example.com. 300 IN A 127.0.0.1",
		"m2.example.com. 300 IN A 127.0.0.12",
	)
	cfg := testSRVConfig(t, s)
	f := startTrustingRefresher(t, s, cfg, ca.Pool())
	plain := Endpoint{Host: "127.0.0.12", Port: 2379, Target: "m2.example.com"}
	f.waitSet(t, []Endpoint{plain}) // nothing listens on the member's port yet: refused

	testcert.ServeTLS(t, "127.0.0.1:"+strconv.Itoa(port), ca.Issue(t, []string{"example.com"}, nil), tls.NoClientCert, tls.VersionTLS13)
	member := Endpoint{Host: "127.0.0.1", Port: uint16(port), Target: "m1.example.com", TLS: true}
	if took := f.waitSet(t, Normalize([]Endpoint{member, plain})); took > 5*time.Second {
		t.Errorf("admitted %s after it listened; want it within seconds, not at the 300 s refresh", took)
	}
	if n := f.logs.FilterMessageSnippet("could not be verified").Len(); n != 1 {
		t.Errorf("%d lines say the member could not be verified; want 1", n)
	}
	if n := f.logs.FilterMessageSnippet("did not prove").Len(); n != 0 {
		t.Errorf("a refused connection was blamed on the certificate %d times", n)
	}
}

func splitTestAddr(t *testing.T, addr string) (string, uint16) {
	t.Helper()
	ap, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ap.IP.String(), uint16(ap.Port)
}
