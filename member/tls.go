package member

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Scheme is how a member serves clients: over TLS, over plain TCP, or not known yet. The
// gateway forwards TCP either way; the scheme tells the prober how to speak to the member.
type Scheme uint8

// The schemes.
const (
	SchemeUnknown Scheme = iota
	SchemePlain
	SchemeTLS
)

func (s Scheme) String() string {
	switch s {
	case SchemePlain:
		return "http"
	case SchemeTLS:
		return "https"
	default:
		return "unknown"
	}
}

// TLS is how the gateway handshakes with a member that serves TLS.
type TLS struct {
	// Verify checks the member's chain against Roots. Off for members listed with --endpoints
	// without --trusted-ca-file, and for members admitted by --insecure-discovery.
	Verify bool
	Roots  *x509.CertPool // nil: the system roots
	// Names are the names the certificate may be valid for. With StrictNames a certificate
	// valid for none of them fails; without, the mismatch is only reported (members listed by
	// IP often hold certificates for DNS names).
	Names       []string
	StrictNames bool
	// Certificates holds the client certificate for members that require one, or nothing.
	Certificates []tls.Certificate
	// Sessions, when not nil, keeps the member's TLS session so that the next handshake
	// resumes it; nil makes every handshake full.
	Sessions *SessionCache
}

// SessionCache keeps the TLS session of one member, so that the next connection to it resumes
// that session: an abbreviated handshake in which the member signs nothing and the gateway
// verifies no chain. A resumed session proves only that the member holds the session's
// secret, which a handshake that proved its chain and key gave it. Forget drops the session,
// so that the next handshake is full and proves them again. It is safe for concurrent use.
type SessionCache struct {
	mu    sync.Mutex
	state *tls.ClientSessionState
}

var _ tls.ClientSessionCache = (*SessionCache)(nil)

// Get returns the session kept, whatever the key: the cache holds one member's.
func (s *SessionCache) Get(string) (*tls.ClientSessionState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.state != nil
}

// Put keeps cs; nil drops the session kept.
func (s *SessionCache) Put(_ string, cs *tls.ClientSessionState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state = cs
}

// Forget drops the session kept: the next handshake is full.
func (s *SessionCache) Forget() { s.Put("", nil) }

// Handshake is the outcome of a TLS handshake attempt with a member.
type Handshake struct {
	// Conn is the TLS connection when the handshake completed and the member is trusted; the
	// caller owns it. nil otherwise, and the raw connection is closed once what the member sent
	// was read.
	Conn *tls.Conn
	// Scheme is what the member's answer showed: SchemeTLS once it sent its certificate or a
	// TLS alert, SchemePlain when it closed the connection without a byte or answered
	// something other than TLS, SchemeUnknown when it said nothing in time or answered TLS
	// records that no TLS server sends.
	Scheme Scheme
	// KeyProven says the member proved it holds the private key of its certificate: the
	// handshake completed, or reached the member's request for a client certificate, which
	// comes after its signature (TLS 1.2) or its Finished (TLS 1.3). A resumed handshake
	// proves no key.
	KeyProven bool
	// Resumed says the handshake resumed a session of TLS.Sessions: the chain was neither
	// sent nor judged again.
	Resumed bool
	// NeedsClientCert says the member asked for a client certificate the gateway does not have;
	// the gateway ended the handshake itself, so that the member saw a clean EOF.
	NeedsClientCert bool
	// Untrusted is why the member's chain does not verify, or nil.
	Untrusted error
	// NameMismatch is set when the chain verifies but for none of the names, and the names
	// are not strict.
	NameMismatch error
	// Err is why the handshake failed, nil when it completed or the member asked for a client
	// certificate.
	Err error
}

// Failure is h as an error: nil when h gave a usable connection, a *HandshakeError otherwise.
func (h Handshake) Failure() error {
	if h.Conn != nil {
		return nil
	}
	return &HandshakeError{h}
}

// HandshakeError is a handshake with a member that gave no usable connection.
type HandshakeError struct{ Handshake Handshake }

func (e *HandshakeError) Error() string {
	switch h := e.Handshake; {
	case h.Untrusted != nil:
		return "TLS: " + h.Untrusted.Error()
	case h.NeedsClientCert:
		return "TLS: the member requires a client certificate; give --health-cert-file and --health-key-file"
	case h.Scheme == SchemePlain:
		return "TLS: the member does not speak TLS"
	case h.Err != nil:
		return "TLS: " + h.Err.Error()
	}
	return "TLS handshake failed"
}

func (e *HandshakeError) Unwrap() error { return e.Handshake.Err }

// Verified reports whether the member is who it claims: it proved its key and, when asked, its
// chain verified.
func (h Handshake) Verified() bool { return h.KeyProven && h.Untrusted == nil }

// Transient reports whether the attempt failed for a reason that says nothing of the member's
// certificate: silence, or a timeout mid-handshake. A member that answered TLS and then failed
// to prove its key is no transient failure: an impostor does that.
func (h Handshake) Transient() bool {
	return h.Err != nil && h.Untrusted == nil && !h.KeyProven && (h.Scheme == SchemeUnknown || IsTimeout(h.Err))
}

// errNoClientCertificate ends a handshake with a member that asks for a certificate the
// gateway does not have.
var errNoClientCertificate = errors.New("the member requires a client certificate")

// ecdheSuites are the TLS 1.2 suites offered: only ECDHE ones, in which the server signs the key
// exchange, so that reaching the member's certificate request proves it holds its key.
var ecdheSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// alpnWithNewline is offered after http/1.1, which TLS members pick. Its newline makes the
// ClientHello end a line, so that a plain etcd member's HTTP/1 matcher, which waits for a
// newline without a timeout, rejects it at once instead of staying silent.
var alpnWithNewline = "etcd-gateway\n"

// HandshakeTLS runs a TLS handshake with a member over raw, which it owns from now on, and
// says what the member is. It never sends anything but TLS handshake messages, and it ends
// every failed attempt with a FIN after reading what the member sent (for up to drainWindow),
// so that the member logs at most a clean EOF, which etcd 3.5 and later log at DEBUG. With
// drains, that reading goes on in the background, counted in drains, so that the verdict does
// not wait for it: the caller waits for drains before it is done. Without, HandshakeTLS reads
// before it returns.
func HandshakeTLS(ctx context.Context, raw net.Conn, cfg TLS, drains *sync.WaitGroup) Handshake {
	conn := &quietConn{Conn: raw}
	conn.handshaking.Store(true)
	var h Handshake
	var chainSeen, certAsked bool
	config := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: ecdheSuites,
		// Classical curves only: a probe carries no secret worth a post-quantum key share,
		// which would cost each handshake more CPU on both sides.
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256},
		NextProtos:       []string{"http/1.1", alpnWithNewline},
		ServerName:       serverName(cfg.Names),
		// The chain and the names are judged in VerifyConnection, which never fails the
		// handshake: the verdict waits for the proof of the key.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.DidResume {
				h.Resumed = true // judged when the session was made
				return nil
			}
			chainSeen = true
			if cfg.Verify {
				h.Untrusted, h.NameMismatch = judgeChain(cs.PeerCertificates, cfg.Roots, cfg.Names, cfg.StrictNames)
			}
			return nil
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			certAsked = true
			if len(cfg.Certificates) == 0 || h.Untrusted != nil {
				conn.mute()
				return nil, errNoClientCertificate
			}
			return &cfg.Certificates[0], nil
		},
	}
	if cfg.Sessions != nil {
		config.ClientSessionCache = cfg.Sessions
	}
	tc := tls.Client(conn, config)
	err := tc.HandshakeContext(ctx)
	conn.handshaking.Store(false)
	h.KeyProven = chainSeen && (err == nil || certAsked)
	switch {
	case err == nil && h.Untrusted == nil:
		h.Scheme, h.Conn = SchemeTLS, tc
		return h
	case err == nil:
		h.Scheme, h.Err = SchemeTLS, h.Untrusted
	case errors.Is(err, errNoClientCertificate):
		h.Scheme, h.NeedsClientCert = SchemeTLS, h.Untrusted == nil
		h.Err = h.Untrusted
	default:
		h.Scheme, h.Err = schemeOf(err, chainSeen, conn.received.Load()), err
		if h.Scheme == SchemeTLS && !h.KeyProven {
			h.Err = fmt.Errorf("TLS handshake: %w", err)
		}
	}
	if certAsked {
		raw.Close() // everything the member sent was read
		return h
	}
	if drains == nil {
		conn.drain()
		raw.Close()
		return h
	}
	drains.Add(1)
	go func() {
		defer drains.Done()
		conn.drain()
		raw.Close()
	}()
	return h
}

// schemeOf judges the scheme from a failed handshake: the member sent a certificate (chainSeen)
// or got bytes before err. A member is TLS once it sent its certificate or a TLS alert; bytes
// that merely look like TLS records (a server that echoes the ClientHello) leave it unknown.
func schemeOf(err error, chainSeen bool, got int64) Scheme {
	var notTLS tls.RecordHeaderError
	var op *net.OpError
	switch {
	case chainSeen, errors.As(err, &op) && op.Op == "remote error":
		return SchemeTLS
	case errors.As(err, &notTLS):
		return SchemePlain
	case got == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
		return SchemePlain // a plain member closes on a ClientHello
	default:
		return SchemeUnknown // silence (a plain member may say nothing), or no TLS server
	}
}

// serverName is the SNI sent: the first DNS name among names, or none for IP addresses.
func serverName(names []string) string {
	for _, n := range names {
		if n != "" && net.ParseIP(n) == nil {
			return n
		}
	}
	return ""
}

// judgeChain verifies chain against roots and names. It returns why the chain is untrusted,
// and, when names are not strict, a mismatch of names apart.
func judgeChain(chain []*x509.Certificate, roots *x509.CertPool, names []string, strict bool) (untrusted, mismatch error) {
	if err := verifyChain(chain, roots); err != nil {
		return err, nil
	}
	if err := matchName(chain[0], names); err != nil {
		if strict {
			return err, nil
		}
		return nil, err
	}
	return nil, nil
}

// quietConn is the raw connection under a handshake. Once muted it writes nothing, so that a
// handshake the gateway ends sends the member no alert; it counts the bytes it read. While the
// handshake runs, Close only interrupts it: crypto/tls closes the connection when the context
// ends, and data of the member's that arrived unread would turn that close into a reset, which
// etcd logs at WARN. HandshakeTLS reads what the member sent, then closes.
type quietConn struct {
	net.Conn
	muted       atomic.Bool
	handshaking atomic.Bool
	received    atomic.Int64
}

func (c *quietConn) Close() error {
	if c.handshaking.Load() {
		return c.Conn.SetDeadline(time.Now())
	}
	return c.Conn.Close()
}

func (c *quietConn) mute() { c.muted.Store(true) }

func (c *quietConn) Write(b []byte) (int, error) {
	if c.muted.Load() {
		return 0, errors.New("handshake ended by the gateway")
	}
	return c.Conn.Write(b)
}

func (c *quietConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.received.Add(int64(n))
	return n, err
}

// drainWindow bounds how long, after a failed handshake, the gateway reads what the member
// sent, so that closing sends a FIN rather than a reset.
const drainWindow = 50 * time.Millisecond

// drain reads whatever the member already sent.
func (c *quietConn) drain() {
	c.muted.Store(true)
	c.Conn.SetReadDeadline(time.Now().Add(drainWindow))
	io.Copy(io.Discard, c.Conn)
}
