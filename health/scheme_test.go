package health

import (
	"context"
	"crypto/tls"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/internal/testcert"
	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// loggingMember is an HTTP or HTTPS server standing in for an etcd member on a given address. It
// keeps what a real member would log about failed TLS handshakes.
type loggingMember struct {
	srv      *http.Server
	done     chan struct{}
	accepted atomic.Int64
	mu       sync.Mutex
	warns    []string // failed handshakes other than a clean EOF, which etcd logs at WARN
}

// serveMember serves handlers on addr ("127.0.0.1:0" for any port), over TLS with tlsCfg
// unless it is nil.
func serveMember(t *testing.T, addr string, handlers map[string]http.HandlerFunc, tlsCfg *tls.Config) (*loggingMember, string) {
	t.Helper()
	mux := http.NewServeMux()
	for path, h := range handlers {
		mux.HandleFunc(path, h)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	m := &loggingMember{done: make(chan struct{})}
	m.srv = &http.Server{Handler: mux, TLSConfig: tlsCfg, ErrorLog: log.New(m, "", 0),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				m.accepted.Add(1)
			}
		}}
	go func() {
		defer close(m.done)
		if tlsCfg != nil {
			m.srv.ServeTLS(ln, "", "")
			return
		}
		m.srv.Serve(ln)
	}()
	t.Cleanup(m.stop)
	return m, ln.Addr().String()
}

// Write takes the server's error log.
func (m *loggingMember) Write(b []byte) (int, error) {
	line := strings.TrimSpace(string(b))
	if strings.Contains(line, "TLS handshake error") && !strings.HasSuffix(line, ": EOF") {
		m.mu.Lock()
		m.warns = append(m.warns, line)
		m.mu.Unlock()
	}
	return len(b), nil
}

func (m *loggingMember) warnings() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.warns...)
}

func (m *loggingMember) stop() {
	m.srv.Close()
	<-m.done
}

var readyzOK = map[string]http.HandlerFunc{"/readyz": answer(200, "ok\n"), "/livez": answer(200, "ok\n"), "/version": answer(200, "{}")}

// listed is the endpoint of a member listed with --endpoints: no scheme given.
func listed(t *testing.T, addr string) resolver.Endpoint { return endpointOf(t, addr) }

func TestSchemeIsFoundWithoutPlaintextToATLSMember(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	serverTLS := &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, []string{"example.com"}, []net.IP{net.IPv4(127, 0, 0, 1)})}}
	learner := map[string]http.HandlerFunc{"/readyz": answer(503, "[-]non_learner failed: this member is a learner\n"), "/livez": answer(200, "ok\n")}
	for _, tt := range []struct {
		name       string
		handlers   map[string]http.HandlerFunc
		tls        *tls.Config
		wantScheme member.Scheme
		want       State
	}{
		{"plain member", readyzOK, nil, member.SchemePlain, Healthy},
		{"TLS member", readyzOK, serverTLS, member.SchemeTLS, Healthy},
		{"TLS learner", learner, serverTLS, member.SchemeTLS, Down},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, addr := serveMember(t, "127.0.0.1:0", tt.handlers, tt.tls)
			c := newChecker(listed(t, addr), CheckReadyz, time.Second, member.Policy{})
			defer c.close()
			for i := range 5 {
				if got, reason := judge(t, c); got != tt.want {
					t.Fatalf("probe %d: %s %q, want %s", i, got, reason, tt.want)
				}
			}
			if c.scheme != tt.wantScheme {
				t.Errorf("scheme = %s, want %s", c.scheme, tt.wantScheme)
			}
			if w := m.warnings(); len(w) != 0 {
				t.Errorf("the member logged %d failed handshakes: %q", len(w), w)
			}
		})
	}
}

// A member that comes back on its address speaking TLS is found out again, at the cost of the
// one probe's plaintext requests (/readyz and /livez); and plain again when it turns back.
func TestSchemeChangeIsFoundAgain(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	plain, addr := serveMember(t, "127.0.0.1:0", readyzOK, nil)
	c := newChecker(listed(t, addr), CheckReadyz, time.Second, member.Policy{})
	defer c.close()
	if got, reason := judge(t, c); got != Healthy || c.scheme != member.SchemePlain {
		t.Fatalf("plain: %s %q, scheme %s", got, reason, c.scheme)
	}
	plain.stop()
	secure, _ := serveMember(t, addr, readyzOK, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, []string{"example.com"}, nil)}})
	if got, reason := judge(t, c); got != Healthy || c.scheme != member.SchemeTLS {
		t.Fatalf("after the member turned TLS: %s %q, scheme %s", got, reason, c.scheme)
	}
	for range 3 {
		judge(t, c)
	}
	if w := secure.warnings(); len(w) > 2 {
		t.Errorf("the member logged %d failed handshakes, want at most the two of the probe that found the change: %q", len(w), w)
	}

	secure.stop()
	serveMember(t, addr, readyzOK, nil)
	if got, reason := judge(t, c); got != Healthy || c.scheme != member.SchemePlain {
		t.Fatalf("after the member turned plain again: %s %q, scheme %s", got, reason, c.scheme)
	}
}

func TestMemberThatRequiresAClientCertificate(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	serverTLS := &tls.Config{
		Certificates: []tls.Certificate{ca.Issue(t, []string{"example.com"}, nil)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
	}
	notReady := map[string]http.HandlerFunc{"/readyz": answer(503, "[-]linearizable_read failed: no leader\n"), "/livez": answer(200, "ok\n")}
	m, addr := serveMember(t, "127.0.0.1:0", notReady, serverTLS)

	without := newChecker(listed(t, addr), CheckReadyz, time.Second, member.Policy{Roots: ca.Pool()})
	defer without.close()
	if got, reason := judge(t, without); got != Healthy || without.note != NoteAliveByKey {
		t.Errorf("without a client certificate: %s %q note %q; want healthy, alive by key", got, reason, without.note)
	}
	if without.canHeartbeat() {
		t.Error("heartbeats planned to a member whose handshake cannot complete")
	}
	if w := m.warnings(); len(w) != 0 {
		t.Errorf("the member logged %d failed handshakes; the gateway must end them with a clean EOF: %q", len(w), w)
	}

	with := newChecker(listed(t, addr), CheckReadyz, time.Second, member.Policy{Roots: ca.Pool(), Certificates: []tls.Certificate{ca.Issue(t, []string{"gateway"}, nil)}})
	defer with.close()
	if got, reason := judge(t, with); got != Degraded || !strings.Contains(reason, "linearizable_read") {
		t.Errorf("with a client certificate: %s %q; want /readyz's verdict, degraded", got, reason)
	}
}

func TestListedMemberVerification(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	_, addr := serveMember(t, "127.0.0.1:0", readyzOK, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, []string{"m1.example.com"}, nil)}})

	c := newChecker(listed(t, addr), CheckReadyz, time.Second, member.Policy{Roots: ca.Pool()})
	defer c.close()
	if got, reason := judge(t, c); got != Healthy || !strings.Contains(c.note, "m1.example.com") {
		t.Errorf("certificate for another name than the listed IP: %s %q note %q; want healthy, the mismatch noted", got, reason, c.note)
	}
	other := testcert.NewCA(t, "someone else")
	bad := newChecker(listed(t, addr), CheckReadyz, time.Second, member.Policy{Roots: other.Pool()})
	defer bad.close()
	if got, reason := judge(t, bad); got != Down || !strings.Contains(reason, "not trusted") {
		t.Errorf("chain that does not verify: %s %q; want down", got, reason)
	}
}

func TestInsecureDiscoveryReachesProbes(t *testing.T) {
	selfSigned := testcert.NewCA(t, "self-signed member")
	_, addr := serveMember(t, "127.0.0.1:0", readyzOK, &tls.Config{Certificates: []tls.Certificate{selfSigned.Issue(t, []string{"m1.example.com"}, nil)}})
	ep := listed(t, addr)
	ep.TLS, ep.Target = true, "m1.example.com" // from _etcd-client-ssl

	insecure := newChecker(ep, CheckReadyz, time.Second, member.Policy{Domain: "example.com", InsecureDiscovery: true})
	defer insecure.close()
	if got, reason := judge(t, insecure); got != Healthy {
		t.Errorf("with --insecure-discovery: %s %q, want healthy", got, reason)
	}
	verified := newChecker(ep, CheckReadyz, time.Second, member.Policy{Domain: "example.com"})
	defer verified.close()
	if got, _ := judge(t, verified); got != Down {
		t.Errorf("without --insecure-discovery: %s, want down: the system roots do not know it", got)
	}
}

func TestTLSHeartbeatsKeepOneConnection(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	m, addr := serveMember(t, "127.0.0.1:0", readyzOK, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, []string{"example.com"}, nil)}})
	c := newChecker(listed(t, addr), CheckReadyz, time.Second, member.Policy{})
	defer c.close()
	hb := newHeartbeater(&member.Client{Addr: addr, TLS: c.tls, Drains: &c.drains}, time.Now)
	defer hb.close()
	hb.speak(member.SchemeTLS)
	for i := range 20 {
		if err := hb.beat(context.Background(), time.Second); err != nil {
			t.Fatalf("beat %d: %v", i, err)
		}
	}
	if n := m.accepted.Load(); n != 1 {
		t.Errorf("20 heartbeats made %d connections, want 1 kept-alive TLS connection", n)
	}
}

// The Manager keeps each member's scheme and note with its last probe, for /status, and logs
// each once however many probes find them again.
func TestManagerRecordsSchemeAndNoteOnce(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	_, addr := serveMember(t, "127.0.0.1:0", readyzOK, &tls.Config{
		Certificates: []tls.Certificate{ca.Issue(t, []string{"example.com"}, nil)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
	})
	ep := listed(t, addr)
	f := newManagerFixtureProbing(ProbeConfig{Mode: CheckReadyz, Interval: 20 * time.Millisecond, Timeout: time.Second,
		RetryDelay: time.Second, Rise: 1, Fall: 1})
	f.run(t)
	f.updates.Publish([]resolver.Endpoint{ep})
	f.waitAvailable(t, ep)
	var probes int
	for probes < 5 {
		<-f.table.Probed()
		p, ok := f.table.LastProbe(ep)
		if !ok || p.Scheme != member.SchemeTLS || p.Note != NoteAliveByKey {
			t.Fatalf("last probe = %+v, want https, alive by key", p)
		}
		probes++
	}
	if n := f.logs.FilterMessage("member scheme found").Len(); n != 1 {
		t.Errorf("the scheme was logged %d times over %d probes, want once", n, probes)
	}
	if n := f.logs.FilterMessage("probe note").Len(); n != 1 {
		t.Errorf("the note was logged %d times over %d probes, want once", n, probes)
	}
	if n := f.logs.FilterMessageSnippet("without verifying their certificates").Len(); n != 1 {
		t.Errorf("the unverified listed members were logged %d times, want once", n)
	}
}
