package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"
)

// errNameNotFound is an NXDOMAIN answer: the name has no records, which is normal for one of
// the two SRV names.
var errNameNotFound = errors.New("no such name (NXDOMAIN)")

// dnsClient asks a list of DNS servers, in order, with a timeout on each query. All use of
// miekg/dns stays in this file and srv.go.
type dnsClient struct {
	servers []string // host:port
	timeout time.Duration
	// systemTargets resolves SRV targets through Go's resolver (/etc/hosts first), as etcd
	// does; it is set unless --dns-server names the server for everything.
	systemTargets bool
}

// systemResolver resolves SRV targets when no --dns-server is given.
var systemResolver = &net.Resolver{PreferGo: true}

// newDNSClient uses server when given (host:port), the servers of resolvConf otherwise.
func newDNSClient(server, resolvConf string, timeout time.Duration) (*dnsClient, error) {
	if server != "" {
		if _, _, err := net.SplitHostPort(server); err != nil {
			return nil, fmt.Errorf("--dns-server %q is not host:port (e.g. 127.0.0.1:53)", server)
		}
		return &dnsClient{servers: []string{server}, timeout: timeout}, nil
	}
	cc, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil {
		return nil, fmt.Errorf("read DNS servers from %s: %v; give one with --dns-server=HOST:PORT", resolvConf, err)
	}
	if len(cc.Servers) == 0 {
		return nil, fmt.Errorf("%s lists no DNS server; give one with --dns-server=HOST:PORT", resolvConf)
	}
	c := &dnsClient{timeout: timeout, systemTargets: true}
	for _, s := range cc.Servers {
		c.servers = append(c.servers, net.JoinHostPort(s, cc.Port))
	}
	return c, nil
}

// query asks for name's records of type qtype. A truncated UDP answer is asked again over TCP.
// NXDOMAIN is errNameNotFound; SERVFAIL, REFUSED, timeouts and malformed answers are errors
// after every server was tried.
func (c *dnsClient) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	var errs []error
	for _, server := range c.servers {
		r, err := c.exchange(ctx, m, server, "udp")
		if err == nil && r.Truncated {
			r, err = c.exchange(ctx, m, server, "tcp")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", server, err))
			continue
		}
		switch r.Rcode {
		case dns.RcodeSuccess:
			return r, nil
		case dns.RcodeNameError:
			return r, errNameNotFound
		default:
			errs = append(errs, fmt.Errorf("%s answered %s", server, dns.RcodeToString[r.Rcode]))
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("query %s %s: %w", dns.TypeToString[qtype], name, errors.Join(errs...))
}

func (c *dnsClient) exchange(ctx context.Context, m *dns.Msg, server, network string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	client := &dns.Client{Net: network, Timeout: c.timeout}
	r, _, err := client.ExchangeContext(ctx, m, server)
	return r, err
}
