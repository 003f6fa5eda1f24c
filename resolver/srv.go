package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// SRVNames returns the two names etcd's gateway queries for domain: the TLS one first.
func SRVNames(domain, serviceName string) (secure, plain string) {
	suffix := ""
	if serviceName != "" {
		suffix = "-" + serviceName
	}
	d := dns.Fqdn(domain)
	return "_etcd-client-ssl" + suffix + "._tcp." + d, "_etcd-client" + suffix + "._tcp." + d
}

// srvRecord is one usable SRV answer.
type srvRecord struct {
	target   string // fully qualified, lower case
	port     uint16
	priority uint16
	weight   uint16
	ttl      uint32
}

// srvRecords returns the usable SRV records of an answer: those with a port and a target
// other than "." (which says the service is not offered).
func srvRecords(m *dns.Msg) []srvRecord {
	var out []srvRecord
	for _, rr := range m.Answer {
		srv, ok := rr.(*dns.SRV)
		if !ok || srv.Port == 0 || srv.Target == "." || srv.Target == "" {
			continue
		}
		out = append(out, srvRecord{
			target:   strings.ToLower(dns.Fqdn(srv.Target)),
			port:     srv.Port,
			priority: srv.Priority,
			weight:   srv.Weight,
			ttl:      srv.Hdr.Ttl,
		})
	}
	return out
}

// addresses returns the A and AAAA records for target found in m's additional section, and
// the smallest of their TTLs.
func addresses(m *dns.Msg, target string) ([]net.IP, uint32) {
	return addressRecords(m.Extra, func(name string) bool { return strings.EqualFold(dns.Fqdn(name), target) })
}

// addressRecords returns the addresses of the A and AAAA records among rrs whose owner name
// is accepted by want, and the smallest of their TTLs.
func addressRecords(rrs []dns.RR, want func(name string) bool) ([]net.IP, uint32) {
	var ips []net.IP
	var ttl uint32
	for _, rr := range rrs {
		var ip net.IP
		switch a := rr.(type) {
		case *dns.A:
			ip = a.A
		case *dns.AAAA:
			ip = a.AAAA
		}
		if ip == nil || !want(rr.Header().Name) {
			continue
		}
		if len(ips) == 0 || rr.Header().Ttl < ttl {
			ttl = rr.Header().Ttl
		}
		ips = append(ips, ip)
	}
	return ips, ttl
}

// discovery is the result of one lookup of both SRV names.
type discovery struct {
	names [2]nameResult // the TLS name, then the plain one
	ttl   time.Duration // smallest TTL of the records used
}

// nameResult is what one SRV name gave.
type nameResult struct {
	name      string
	endpoints []Endpoint
	records   int   // usable SRV records
	err       error // the name could not be looked up (SERVFAIL, a timeout); NXDOMAIN is no error
}

// discover looks up both SRV names and resolves their targets, each name on its own: etcd needs
// only one of the two to answer, so a failure of one name is reported in its result, and only
// a failure of both is an error.
func (c *dnsClient) discover(ctx context.Context, secureName, plainName string) (discovery, error) {
	var d discovery
	minTTL := uint32(0)
	haveTTL := false
	for i, q := range []struct {
		name string
		tls  bool
	}{{secureName, true}, {plainName, false}} {
		res := &d.names[i]
		res.name = q.name
		ttl, err := c.lookupName(ctx, res, q.tls)
		if err != nil {
			res.err, res.endpoints, res.records = err, nil, 0
			continue
		}
		if res.records > 0 && (!haveTTL || ttl < minTTL) {
			minTTL, haveTTL = ttl, true
		}
	}
	if d.names[0].err != nil && d.names[1].err != nil {
		return discovery{}, errors.Join(d.names[0].err, d.names[1].err)
	}
	d.ttl = time.Duration(minTTL) * time.Second
	return d, nil
}

// lookupName looks up one SRV name into res and returns the smallest TTL of what it used.
func (c *dnsClient) lookupName(ctx context.Context, res *nameResult, secure bool) (uint32, error) {
	m, err := c.query(ctx, res.name, dns.TypeSRV)
	if errors.Is(err, errNameNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var minTTL uint32
	for i, rec := range srvRecords(m) {
		res.records++
		var ips []net.IP
		var ttl uint32
		if !c.systemTargets {
			ips, ttl = addresses(m, rec.target)
		}
		if len(ips) == 0 {
			ips, ttl, err = c.resolveTarget(ctx, rec.target)
			if err != nil {
				return 0, err
			}
		}
		if c.systemTargets {
			ttl = rec.ttl // the system resolver gives no TTL: the SRV record's drives the refresh
		}
		if t := min(rec.ttl, ttl); i == 0 || t < minTTL {
			minTTL = t
		}
		for _, ip := range ips {
			res.endpoints = append(res.endpoints, Endpoint{
				Host: ip.String(), Port: rec.port, Priority: rec.priority, Weight: rec.weight,
				Target: strings.TrimSuffix(rec.target, "."), TLS: secure,
			})
		}
	}
	return minTTL, nil
}

// merge returns the endpoints of both names, using prev (the last good endpoints of each name)
// for a name that failed. It is an error when no name has a record, or no record an address.
func (d discovery) merge(prev map[string][]Endpoint) ([]Endpoint, error) {
	var eps []Endpoint
	records := 0
	for _, res := range d.names {
		if res.err != nil {
			eps = append(eps, prev[res.name]...)
			records += len(prev[res.name])
			continue
		}
		eps = append(eps, res.endpoints...)
		records += res.records
	}
	if records == 0 {
		return nil, fmt.Errorf("no SRV records at %s or %s", d.names[0].name, d.names[1].name)
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("no SRV target of %s or %s has an address", d.names[0].name, d.names[1].name)
	}
	return Normalize(eps), nil
}

// resolveTarget looks up A and AAAA for target. A target without addresses yields none. Without
// --dns-server it asks Go's own resolver, as etcd does: /etc/hosts, then the servers of
// resolv.conf (the static binary has no NSS modules).
func (c *dnsClient) resolveTarget(ctx context.Context, target string) ([]net.IP, uint32, error) {
	if c.systemTargets {
		addrs, err := systemResolver.LookupIPAddr(ctx, strings.TrimSuffix(target, "."))
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return nil, 0, nil
		}
		if err != nil {
			return nil, 0, err
		}
		ips := make([]net.IP, 0, len(addrs))
		for _, a := range addrs {
			ips = append(ips, a.IP)
		}
		return ips, 0, nil
	}
	var ips []net.IP
	var ttl uint32
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m, err := c.query(ctx, target, qtype)
		if errors.Is(err, errNameNotFound) {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		// Any owner name: the answer may follow a CNAME.
		found, t := addressRecords(m.Answer, func(string) bool { return true })
		if len(found) > 0 && (len(ips) == 0 || t < ttl) {
			ttl = t
		}
		ips = append(ips, found...)
	}
	return ips, ttl, nil
}
