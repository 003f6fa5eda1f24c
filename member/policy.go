package member

import (
	"crypto/tls"
	"crypto/x509"
)

// Policy is how the gateway trusts the members that serve TLS, from its flags. Every handshake
// with a member takes its TLS from Policy.For.
type Policy struct {
	// Roots is --trusted-ca-file. Members from _etcd-client-ssl are verified against it, or
	// against the system roots when nil; members listed otherwise are verified against it when
	// it is given, and not at all otherwise.
	Roots        *x509.CertPool
	Certificates []tls.Certificate // a client certificate, for members that require one
	Domain       string            // the SRV domain, one name a member's certificate may be valid for
	// InsecureDiscovery is --insecure-discovery: members from _etcd-client-ssl are not verified.
	InsecureDiscovery bool
}

// For returns how to handshake with the member at host, with SRV target target (or none),
// found through _etcd-client-ssl when discovered. A discovered member must hold a certificate
// for the domain or its target; for a listed member a certificate for other names is only
// reported, since members are often listed by IP while their certificates name DNS names.
func (p Policy) For(host, target string, discovered bool) TLS {
	if discovered {
		return TLS{Verify: !p.InsecureDiscovery, Roots: p.Roots, Names: []string{p.Domain, target},
			StrictNames: true, Certificates: p.Certificates}
	}
	return TLS{Verify: p.Roots != nil, Roots: p.Roots, Names: []string{host, target}, Certificates: p.Certificates}
}

// VerifiesListed reports whether members listed with --endpoints are verified.
func (p Policy) VerifiesListed() bool { return p.Roots != nil }
