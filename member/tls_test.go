package member

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/internal/testcert"
)

// handshakeWith dials addr and runs HandshakeTLS with cfg.
func handshakeWith(t *testing.T, addr string, cfg TLS) Handshake {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h := HandshakeTLS(ctx, raw, cfg, nil)
	if h.Conn != nil {
		h.Conn.Close()
	}
	return h
}

func TestImpostorsAreNotVerified(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t, "cluster CA")
	real := ca.Issue(t, []string{"example.com"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	for _, kind := range []testcert.ImpostorKind{testcert.ImpostorTLS13, testcert.ImpostorTLS12, testcert.ImpostorAlert} {
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			im := testcert.ServeImpostor(t, real, kind)
			h := handshakeWith(t, im.Addr(), TLS{Verify: true, Roots: ca.Pool(), Names: []string{"example.com"}, StrictNames: true})
			if h.Verified() || h.Conn != nil || h.NeedsClientCert {
				t.Fatalf("impostor passed: %+v", h)
			}
			if h.Scheme != SchemeTLS {
				t.Errorf("scheme = %s, want https: it answered TLS", h.Scheme)
			}
			if h.Transient() {
				t.Errorf("an impostor's failure is taken for a transient one: %v", h.Err)
			}
			cfg := Policy{Roots: ca.Pool(), Domain: "example.com"}.For("127.0.0.1", "m1.example.com", true)
			if err := Verify(context.Background(), im.Addr(), cfg, 2*time.Second); err == nil || IsTransient(err) {
				t.Errorf("verify = %v; want a refusal", err)
			}
		})
	}
}

func TestRealMembersAreVerified(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t, "cluster CA")
	cert := ca.Issue(t, []string{"example.com"}, nil)
	client := ca.Issue(t, nil, nil)
	for _, tt := range []struct {
		name        string
		auth        tls.ClientAuthType
		version     uint16
		certs       []tls.Certificate
		wantConn    bool
		wantNeedsCC bool
	}{
		{"no client certificate asked, TLS 1.3", tls.NoClientCert, tls.VersionTLS13, nil, true, false},
		{"no client certificate asked, TLS 1.2", tls.NoClientCert, tls.VersionTLS12, nil, true, false},
		{"client certificate required, none given, TLS 1.3", tls.RequireAnyClientCert, tls.VersionTLS13, nil, false, true},
		{"client certificate required, none given, TLS 1.2", tls.RequireAnyClientCert, tls.VersionTLS12, nil, false, true},
		{"client certificate required and given", tls.RequireAnyClientCert, tls.VersionTLS13, []tls.Certificate{client}, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr, failures := testcert.ServeTLS(t, "127.0.0.1:0", cert, tt.auth, tt.version)
			h := handshakeWith(t, addr, TLS{Verify: true, Roots: ca.Pool(), Names: []string{"example.com"}, StrictNames: true, Certificates: tt.certs})
			if !h.Verified() || (h.Conn != nil) != tt.wantConn || h.NeedsClientCert != tt.wantNeedsCC {
				t.Fatalf("handshake = %+v; want verified, conn %v, needs a client certificate %v", h, tt.wantConn, tt.wantNeedsCC)
			}
			// What the member saw: a completed handshake, or a clean EOF (etcd logs it at DEBUG).
			if err := <-failures; err != nil && err.Error() != "EOF" {
				t.Errorf("the member's handshake failed with %q; want a completed one or a clean EOF", err)
			}
		})
	}
}

func TestNameMismatchIsReportedNotFatalWhenNotStrict(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t, "cluster CA")
	addr, _ := testcert.ServeTLS(t, "127.0.0.1:0", ca.Issue(t, []string{"m1.example.com"}, nil), tls.NoClientCert, tls.VersionTLS13)
	h := handshakeWith(t, addr, TLS{Verify: true, Roots: ca.Pool(), Names: []string{"127.0.0.1"}})
	if !h.Verified() || h.Conn == nil || h.NameMismatch == nil {
		t.Fatalf("handshake = %+v; want verified with a name mismatch reported", h)
	}
	other := testcert.NewCA(t, "someone else")
	h = handshakeWith(t, addr, TLS{Verify: true, Roots: other.Pool(), Names: []string{"127.0.0.1"}})
	if h.Verified() || h.Untrusted == nil || h.Scheme != SchemeTLS {
		t.Fatalf("handshake = %+v; want a chain that does not verify", h)
	}
}

func TestPlainMemberAnswersAClientHello(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		serve func(c net.Conn)
		want  Scheme
	}{
		{"closes at once", func(c net.Conn) { readLine(c); c.Close() }, SchemePlain},
		{"answers HTTP", func(c net.Conn) { readLine(c); c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")); c.Close() }, SchemePlain},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				if c, err := ln.Accept(); err == nil {
					tt.serve(c)
				}
			}()
			if h := handshakeWith(t, ln.Addr().String(), TLS{}); h.Scheme != tt.want || h.Conn != nil {
				t.Fatalf("handshake = %+v; want scheme %s", h, tt.want)
			}
		})
	}
}

// readLine reads up to a newline, as etcd's HTTP/1 matcher does: it proves the ClientHello
// holds one, so that a plain etcd member rejects it at once.
func readLine(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(time.Second))
	b := make([]byte, 1)
	for {
		if _, err := c.Read(b); err != nil || b[0] == '\n' {
			return
		}
	}
}

func TestSilenceIsNotPlain(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if h := HandshakeTLS(ctx, raw, TLS{}, nil); h.Scheme != SchemeUnknown {
		t.Fatalf("silence gave scheme %s; want unknown", h.Scheme)
	}
}
