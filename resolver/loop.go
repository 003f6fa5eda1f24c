package resolver

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// LoopGuard recognises an endpoint that is the gateway's own listen address, which would
// forward every client back to the gateway. A listen host of 0.0.0.0, [::] or "" stands for
// every local address.
type LoopGuard struct {
	listenAddr string
	port       uint16
	anyLocal   bool
	listenIPs  []net.IP
	unix       bool // the gateway listens on a Unix socket: no endpoint is a loop
}

// NewLoopGuard parses the listen address; its host must resolve now. A Unix socket
// (unix://PATH) cannot be an endpoint, so its guard lets every endpoint through.
func NewLoopGuard(ctx context.Context, listenAddr string) (*LoopGuard, error) {
	if strings.HasPrefix(listenAddr, "unix://") {
		return &LoopGuard{listenAddr: listenAddr, unix: true}, nil
	}
	host, portText, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return nil, fmt.Errorf("--listen-addr %q is not host:port (e.g. 127.0.0.1:23790): %v", listenAddr, addrReason(err))
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("--listen-addr %q: port %q is not a number from 0 to 65535", listenAddr, portText)
	}
	g := &LoopGuard{listenAddr: listenAddr, port: uint16(port), anyLocal: host == ""}
	if !g.anyLocal {
		ips, err := lookupIPs(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("--listen-addr host %q does not resolve: %v; give an IP address or a resolvable name", host, err)
		}
		g.listenIPs = ips
		g.anyLocal = len(ips) == 1 && ips[0].IsUnspecified()
	}
	return g, nil
}

// Check returns an error naming the fix when ep is the listen address. A name that does not
// resolve now is not a loop: it is retried like any failed endpoint.
func (g *LoopGuard) Check(ctx context.Context, ep Endpoint) error {
	if g.unix || ep.Port != g.port {
		return nil
	}
	ips, err := lookupIPs(ctx, ep.Host)
	if err != nil {
		return nil
	}
	for _, ip := range ips {
		if g.isListenIP(ip) {
			return fmt.Errorf("endpoint %s is the gateway's own listen address %s and would forward clients to itself; remove it from --endpoints or change --listen-addr",
				ep, g.listenAddr)
		}
	}
	return nil
}

// isListenIP reports whether a connection to ip on the listen port reaches the gateway.
func (g *LoopGuard) isListenIP(ip net.IP) bool {
	if g.anyLocal {
		return ip.IsLoopback() || ip.IsUnspecified() || isInterfaceIP(ip)
	}
	for _, l := range g.listenIPs {
		if l.Equal(ip) || (ip.IsUnspecified() && l.IsLoopback()) {
			return true
		}
	}
	return false
}

func isInterfaceIP(ip net.IP) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

func lookupIPs(ctx context.Context, host string) ([]net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	ips := make([]net.IP, len(addrs))
	for i, a := range addrs {
		ips[i] = a.IP
	}
	return ips, nil
}

func addrReason(err error) string {
	if ae, ok := err.(*net.AddrError); ok {
		return ae.Err
	}
	return err.Error()
}
