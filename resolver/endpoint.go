package resolver

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/etcd-gateway/etcd-gateway/member"
)

// Endpoint is one etcd member's client address, with what its source said of it. It is a
// comparable value type, but a member is identified by its address alone (HostPort): the same
// address under new SRV weights, or under both SRV names, is the same member, and every table
// of the gateway is keyed by HostPort. Priority and Weight follow RFC 2782; a plain
// `--endpoints` entry has both 0. An endpoint found through SRV records also carries the
// record's Target name, and TLS when it came from an `_etcd-client-ssl` record.
type Endpoint struct {
	Host     string
	Port     uint16
	Priority uint16
	Weight   uint16
	Target   string // SRV target host name; empty for `--endpoints`
	TLS      bool   // the member serves clients over TLS
}

// Addr returns "host:port", with IPv6 literals in brackets, ready for net.Dial.
func (e Endpoint) Addr() string {
	return net.JoinHostPort(e.Host, strconv.Itoa(int(e.Port)))
}

// String returns the endpoint as the user wrote it: its dial address.
func (e Endpoint) String() string { return e.Addr() }

// HostPort is where a member is reached. An endpoint set holds one endpoint per HostPort, and
// everything the gateway keeps about a member (health, connections, metrics) is keyed by it, so
// that a change of SRV weight or priority keeps the member's state and its connections.
type HostPort struct {
	Host string
	Port uint16
}

// HostPort returns the endpoint's address as a key.
func (e Endpoint) HostPort() HostPort { return HostPort{Host: e.Host, Port: e.Port} }

// MemberTLS is how to handshake with the member at e under the gateway's trust policy.
func (e Endpoint) MemberTLS(p member.Policy) member.TLS { return p.For(e.Host, e.Target, e.TLS) }

// String returns "host:port", with IPv6 literals in brackets.
func (h HostPort) String() string { return net.JoinHostPort(h.Host, strconv.Itoa(int(h.Port))) }

// DefaultClientPort is etcd's client port, used for an endpoint given without a port.
const DefaultClientPort = 2379

// ParseEndpoint parses one `--endpoints` entry: host:port, an IPv6 literal in brackets, or an
// http:// URL (the scheme is stripped, as etcd's gateway does). A host without a port means
// etcd's client port, 2379, as in the examples of etcd's gateway page. https:// is refused:
// the gateway forwards bytes and never terminates TLS.
func ParseEndpoint(s string) (Endpoint, error) {
	ep, _, err := parseEndpoint(s)
	return ep, err
}

// PortsDefaulted returns the entries of a comma-separated `--endpoints` list given without a
// port, as parsed with port 2379; the gateway logs them.
func PortsDefaulted(list string) []Endpoint {
	var out []Endpoint
	for _, part := range strings.Split(list, ",") {
		if ep, defaulted, err := parseEndpoint(part); err == nil && defaulted {
			out = append(out, ep)
		}
	}
	return out
}

// parseEndpoint parses one entry and reports whether its port was defaulted.
func parseEndpoint(s string) (Endpoint, bool, error) {
	raw := strings.TrimSpace(s)
	hostport := raw
	if scheme, rest, ok := strings.Cut(raw, "://"); ok {
		switch strings.ToLower(scheme) {
		case "http":
			hostport = rest
		case "https":
			return Endpoint{}, false, fmt.Errorf("endpoint %q: the gateway forwards TCP and does not terminate TLS; give host:port (%q) and let clients use TLS to the member end to end", raw, strings.TrimSuffix(rest, "/"))
		default:
			return Endpoint{}, false, fmt.Errorf("endpoint %q: unknown scheme %q; give host:port", raw, scheme)
		}
	}
	hostport = strings.TrimSuffix(hostport, "/")
	if hostport == "" {
		return Endpoint{}, false, errors.New("empty endpoint; give host:port, e.g. 127.0.0.1:2379")
	}
	if strings.ContainsAny(hostport, "/?#@") {
		return Endpoint{}, false, fmt.Errorf("endpoint %q: give host:port without a path, e.g. 127.0.0.1:2379", raw)
	}
	defaulted := false
	host, portText, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port: a host name, an IPv4 address, an IPv6 literal with or without brackets.
		bare := strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
		unbalanced := strings.HasPrefix(hostport, "[") != strings.HasSuffix(hostport, "]")
		if unbalanced || strings.Contains(bare, ":") && net.ParseIP(bare) == nil || strings.ContainsAny(bare, "[]") {
			return Endpoint{}, false, fmt.Errorf("endpoint %q: give host:port, e.g. 127.0.0.1:2379 or [::1]:2379", raw)
		}
		host, portText, defaulted = bare, strconv.Itoa(DefaultClientPort), true
	}
	if strings.TrimSpace(host) == "" {
		return Endpoint{}, false, fmt.Errorf("endpoint %q has no host; give host:port, e.g. %q", raw, net.JoinHostPort("127.0.0.1", portText))
	}
	if strings.IndexFunc(host, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return Endpoint{}, false, fmt.Errorf("endpoint %q: host %q contains a space or a control character; give host:port", raw, host)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return Endpoint{}, false, fmt.Errorf("endpoint %q: port %q is not a number from 1 to 65535", raw, portText)
	}
	return Endpoint{Host: host, Port: uint16(port)}, defaulted, nil
}

// ParseEndpoints parses a comma-separated `--endpoints` list. The result is sorted and free of
// duplicates; an empty list is an error.
func ParseEndpoints(list string) ([]Endpoint, error) {
	var eps []Endpoint
	for _, part := range strings.Split(list, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		ep, err := ParseEndpoint(part)
		if err != nil {
			return nil, err
		}
		eps = append(eps, ep)
	}
	if len(eps) == 0 {
		return nil, errors.New("no endpoints given; set --endpoints to host:port[,host:port...] of the etcd members' client URLs")
	}
	return Normalize(eps), nil
}

// Normalize returns a sorted copy of eps with one endpoint per address, so equal sets compare
// equal. When an address is listed more than once (under both SRV names, or by two records),
// the TLS one wins, then the lowest priority, then the highest weight: a member that serves TLS
// must never be taken for a plain one.
func Normalize(eps []Endpoint) []Endpoint {
	out := slices.Clone(eps)
	slices.SortFunc(out, func(a, b Endpoint) int {
		return cmp.Or(
			cmp.Compare(a.Host, b.Host),
			cmp.Compare(a.Port, b.Port),
			-boolCompare(a.TLS, b.TLS),
			cmp.Compare(a.Priority, b.Priority),
			-cmp.Compare(a.Weight, b.Weight),
			cmp.Compare(a.Target, b.Target),
		)
	})
	out = slices.CompactFunc(out, func(a, b Endpoint) bool { return a.HostPort() == b.HostPort() })
	slices.SortFunc(out, compare)
	return out
}

func compare(a, b Endpoint) int {
	return cmp.Or(
		cmp.Compare(a.Priority, b.Priority),
		cmp.Compare(a.Host, b.Host),
		cmp.Compare(a.Port, b.Port),
		cmp.Compare(a.Weight, b.Weight),
		cmp.Compare(a.Target, b.Target),
		boolCompare(a.TLS, b.TLS),
	)
}

func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	default:
		return -1
	}
}
