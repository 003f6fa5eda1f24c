package member

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// LoadRoots reads the PEM certificates of --trusted-ca-file.
func LoadRoots(caFile string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--trusted-ca-file: %v; give the path of the CA certificate (PEM) that signed the members' certificates", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--trusted-ca-file %s holds no PEM certificate", caFile)
	}
	return roots, nil
}

// errTransient wraps a verification that failed for a reason that says nothing of the member's
// certificate: a refused connection, a timeout.
type errTransient struct{ err error }

func (e *errTransient) Error() string { return "could not verify: " + e.err.Error() }

func (e *errTransient) Unwrap() error { return e.err }

// IsTransient reports whether err, from Verify, is a verification to try again soon.
func IsTransient(err error) bool {
	var t *errTransient
	return errors.As(err, &t)
}

// Verify handshakes with the member at addr within timeout and returns nil when it proved it
// holds its key and its certificate verifies as cfg asks. A member that then asks for a client
// certificate the gateway does not have still passes: it proved its key before asking. The
// error is transient (IsTransient) when the attempt could not tell.
func Verify(ctx context.Context, addr string, cfg TLS, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return &errTransient{err}
	}
	h := HandshakeTLS(ctx, raw, cfg, nil)
	if h.Conn != nil {
		h.Conn.Close()
	}
	switch {
	case h.Verified():
		return nil
	case h.Transient():
		return &errTransient{h.Err}
	case h.Untrusted != nil:
		return h.Untrusted
	case h.Scheme == SchemePlain:
		return errors.New("the member does not speak TLS")
	}
	return fmt.Errorf("the member did not prove it holds its certificate's key: %w", h.Err)
}

// verifyChain checks a member's certificate chain against roots (the system roots when nil).
func verifyChain(chain []*x509.Certificate, roots *x509.CertPool) error {
	if len(chain) == 0 {
		return errors.New("member sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
		return fmt.Errorf("certificate not trusted: %w", err)
	}
	return nil
}

// matchName accepts a certificate valid for any of names (empty names are skipped).
func matchName(cert *x509.Certificate, names []string) error {
	var tried []string
	for _, name := range names {
		if name == "" {
			continue
		}
		if cert.VerifyHostname(name) == nil {
			return nil
		}
		tried = append(tried, name)
	}
	return fmt.Errorf("certificate is valid for %s, not for %q", certNames(cert), tried)
}

// certNames lists the names a certificate is valid for.
func certNames(cert *x509.Certificate) string {
	var names []string
	names = append(names, cert.DNSNames...)
	for _, ip := range cert.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "no name"
	}
	return fmt.Sprintf("%q", names)
}
