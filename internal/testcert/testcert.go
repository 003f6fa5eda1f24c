// Package testcert makes certificate authorities and server certificates for tests with
// crypto/x509, and writes them as PEM files.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

// NewCA returns a new self-signed CA.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	ca, err := GenerateCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// GenerateCA is NewCA for programs without a testing.TB (the benchmarks).
func GenerateCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// PEM is the CA certificate in PEM.
func (ca *CA) PEM() []byte { return ca.pem }

// Pool is a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Issue returns a server and client certificate for the given DNS names and IPs.
func (ca *CA) Issue(t testing.TB, dnsNames []string, ips []net.IP) tls.Certificate {
	t.Helper()
	certPEM, keyPEM := ca.IssuePEM(t, dnsNames, ips)
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// IssuePEM is Issue in PEM form: the certificate and its key.
func (ca *CA) IssuePEM(t testing.TB, dnsNames []string, ips []net.IP) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := ca.GeneratePEM(dnsNames, ips)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

// GeneratePEM is IssuePEM for programs without a testing.TB (the benchmarks).
func (ca *CA) GeneratePEM(dnsNames []string, ips []net.IP) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "etcd-gateway test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// WriteFiles writes the CA certificate and a certificate issued for dnsNames and ips into dir
// and returns their paths.
func (ca *CA) WriteFiles(t testing.TB, dir, prefix string, dnsNames []string, ips []net.IP) (caFile, certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM := ca.IssuePEM(t, dnsNames, ips)
	caFile = filepath.Join(dir, prefix+"-ca.pem")
	certFile = filepath.Join(dir, prefix+".pem")
	keyFile = filepath.Join(dir, prefix+"-key.pem")
	for path, data := range map[string][]byte{caFile: ca.pem, certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

// serial is a random serial number; crypto/rand does not fail on Linux.
func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}
