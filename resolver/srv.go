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
	endpoints []Endpoint
	ttl       time.Duration // smallest TTL of the records used
}

// discover looks up both SRV names and resolves their targets. NXDOMAIN or an empty answer for
// one name is normal; an error for either name, or no record for both, is an error, so that a
// failure never produces an empty set.
func (c *dnsClient) discover(ctx context.Context, secureName, plainName string) (discovery, error) {
	var d discovery
	minTTL := uint32(0)
	haveTTL := false
	found := 0
	for _, q := range []struct {
		name string
		tls  bool
	}{{secureName, true}, {plainName, false}} {
		m, err := c.query(ctx, q.name, dns.TypeSRV)
		if errors.Is(err, errNameNotFound) {
			continue
		}
		if err != nil {
			return discovery{}, err
		}
		for _, rec := range srvRecords(m) {
			found++
			ips, ttl := addresses(m, rec.target)
			if len(ips) == 0 {
				ips, ttl, err = c.resolveTarget(ctx, rec.target)
				if err != nil {
					return discovery{}, err
				}
			}
			for _, t := range []uint32{rec.ttl, ttl} {
				if !haveTTL || t < minTTL {
					minTTL, haveTTL = t, true
				}
			}
			for _, ip := range ips {
				d.endpoints = append(d.endpoints, Endpoint{
					Host: ip.String(), Port: rec.port, Priority: rec.priority, Weight: rec.weight,
					Target: strings.TrimSuffix(rec.target, "."), TLS: q.tls,
				})
			}
		}
	}
	if found == 0 {
		return discovery{}, fmt.Errorf("no SRV records at %s or %s", secureName, plainName)
	}
	if len(d.endpoints) == 0 {
		return discovery{}, fmt.Errorf("no SRV target of %s or %s has an address", secureName, plainName)
	}
	d.endpoints = Normalize(d.endpoints)
	d.ttl = time.Duration(minTTL) * time.Second
	return d, nil
}

// resolveTarget looks up A and AAAA for target. A target without addresses yields none.
func (c *dnsClient) resolveTarget(ctx context.Context, target string) ([]net.IP, uint32, error) {
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
