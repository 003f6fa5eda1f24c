package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// Config is everything the gateway needs to run; cmd/etcd-gateway fills it from flags.
type Config struct {
	ListenAddr      string              // host:port to accept clients on
	Endpoints       []resolver.Endpoint // the etcd members' client addresses
	RetryDelay      time.Duration       // how long a failed endpoint waits before it is probed again
	DialTimeout     time.Duration       // bound of every dial to a member and of every probe
	ShutdownTimeout time.Duration       // how long live connections may finish after a stop signal
	KeepAlive       time.Duration       // TCP keep-alive period on both legs; 0 means Go's 15s
}

// Validate checks cfg before anything is bound: the listen address, the durations, and that no
// endpoint is the gateway itself. Every error is one line that names the fix.
func (cfg Config) Validate(ctx context.Context) error {
	host, portText, err := net.SplitHostPort(cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("--listen-addr %q is not host:port (e.g. 127.0.0.1:23790): %v", cfg.ListenAddr, addrReason(err))
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return fmt.Errorf("--listen-addr %q: port %q is not a number from 0 to 65535", cfg.ListenAddr, portText)
	}
	if len(cfg.Endpoints) == 0 {
		return errors.New("no endpoints given; set --endpoints to host:port[,host:port...] of the etcd members' client URLs")
	}
	for _, d := range []struct {
		flag string
		val  time.Duration
	}{{"--retry-delay", cfg.RetryDelay}, {"--dial-timeout", cfg.DialTimeout}, {"--shutdown-timeout", cfg.ShutdownTimeout}} {
		if d.val < 0 {
			return fmt.Errorf("%s=%s is negative; give a positive duration such as 1s", d.flag, d.val)
		}
	}
	if cfg.DialTimeout == 0 {
		return errors.New("--dial-timeout=0 would let a dead member hold clients forever; give a positive duration such as 1s")
	}
	return checkLoop(ctx, host, uint16(port), cfg.Endpoints)
}

func addrReason(err error) string {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return ae.Err
	}
	return err.Error()
}

// checkLoop refuses an endpoint that is the listen address itself, which would forward every
// client back to the gateway. A listen host of 0.0.0.0 or [::] is every local address. A name
// that does not resolve now is not an error: it is retried like any failed endpoint.
func checkLoop(ctx context.Context, listenHost string, listenPort uint16, eps []resolver.Endpoint) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var listenIPs []net.IP
	anyLocal := listenHost == ""
	for _, ep := range eps {
		if ep.Port != listenPort {
			continue
		}
		if listenIPs == nil && !anyLocal {
			ips, err := lookupIPs(ctx, listenHost)
			if err != nil {
				return fmt.Errorf("--listen-addr host %q does not resolve: %v; give an IP address or a resolvable name", listenHost, err)
			}
			listenIPs = ips
			anyLocal = len(ips) == 1 && ips[0].IsUnspecified()
		}
		epIPs, err := lookupIPs(ctx, ep.Host)
		if err != nil {
			continue
		}
		for _, ip := range epIPs {
			if isListenIP(ip, listenIPs, anyLocal) {
				return fmt.Errorf("endpoint %s is the gateway's own listen address %s and would forward clients to itself; remove it from --endpoints or change --listen-addr",
					ep, net.JoinHostPort(listenHost, strconv.Itoa(int(listenPort))))
			}
		}
	}
	return nil
}

// isListenIP reports whether a connection to ip on the listen port reaches the gateway.
func isListenIP(ip net.IP, listenIPs []net.IP, anyLocal bool) bool {
	local := ip.IsLoopback() || ip.IsUnspecified() || isInterfaceIP(ip)
	if anyLocal {
		return local
	}
	for _, l := range listenIPs {
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
