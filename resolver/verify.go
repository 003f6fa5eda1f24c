package resolver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// verifier checks that a member found through `_etcd-client-ssl` records presents a
// certificate chain valid for the SRV domain or for its own target name, by a real TLS
// handshake. Only the server's certificate is judged: a member that then asks for a client
// certificate the gateway does not have still passes.
type verifier struct {
	roots   *x509.CertPool // nil: the system roots
	domain  string
	timeout time.Duration
}

// newVerifier loads caFile (system roots when empty).
func newVerifier(caFile, domain string, timeout time.Duration) (*verifier, error) {
	v := &verifier{domain: domain, timeout: timeout}
	if caFile == "" {
		return v, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--trusted-ca-file: %v", err)
	}
	v.roots = x509.NewCertPool()
	if !v.roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--trusted-ca-file %s holds no PEM certificate", caFile)
	}
	return v, nil
}

// verify handshakes with ep and returns nil when its certificate is valid for the domain or
// for ep.Target.
func (v *verifier) verify(ctx context.Context, ep Endpoint) error {
	var verifyErr error
	verified := false
	cfg := &tls.Config{
		ServerName: v.domain,
		// The chain and the names are checked in VerifyConnection, against either name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			verifyErr = v.check(cs.PeerCertificates, ep.Target)
			verified = verifyErr == nil
			return verifyErr
		},
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: v.timeout}, Config: cfg}
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", ep.Addr())
	if err == nil {
		return conn.Close()
	}
	if verified {
		return nil // the member refused us after we had verified it, e.g. for want of a client certificate
	}
	if verifyErr != nil {
		return verifyErr
	}
	return fmt.Errorf("TLS handshake: %w", err)
}

func (v *verifier) check(chain []*x509.Certificate, target string) error {
	return VerifyServer(chain, v.roots, v.domain, target)
}

// VerifyServer checks a member's certificate chain against roots (the system roots when nil)
// and accepts it when it is valid for any of names (empty names are skipped).
func VerifyServer(chain []*x509.Certificate, roots *x509.CertPool, names ...string) error {
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
	for _, name := range names {
		if name != "" && chain[0].VerifyHostname(name) == nil {
			return nil
		}
	}
	return fmt.Errorf("certificate is valid for none of %q", names)
}
