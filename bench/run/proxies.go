package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// proxy is one of the candidates: it starts in front of endpoints and listens on addr; balance
// is HAProxy's balance algorithm, which the others have no setting for.
type proxy struct {
	name  string
	start func(addr string, endpoints []string, balance string) (*process, error)
}

func proxies(gateway, etcd, haproxy, workDir string) []proxy {
	return []proxy{
		{"etcd-gateway", func(addr string, eps []string, _ string) (*process, error) {
			return start(gateway, "start", "--listen-addr="+addr, "--endpoints="+strings.Join(eps, ","), "--log-level=error")
		}},
		{"etcd gateway", func(addr string, eps []string, _ string) (*process, error) {
			return start(etcd, "gateway", "start", "--listen-addr="+addr, "--endpoints="+strings.Join(eps, ","))
		}},
		{"HAProxy + GET /readyz", func(addr string, eps []string, balance string) (*process, error) {
			cfg := filepath.Join(workDir, "haproxy-"+strings.ReplaceAll(addr, ":", "-")+".cfg")
			if err := os.WriteFile(cfg, []byte(haproxyConfig(addr, eps, balance)), 0o600); err != nil {
				return nil, err
			}
			return start(haproxy, "-db", "-f", cfg)
		}},
	}
}

// haproxyConfig is the strongest set-up a user would write by hand for etcd (FIELD-NOTES.md),
// with etcd's own readiness endpoint as the check, and balance (roundrobin, or leastconn
// where the scenario is about spreading the load).
func haproxyConfig(addr string, eps []string, balance string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    maxconn 4000
defaults
    mode tcp
    timeout connect 1s
    timeout client 1h
    timeout server 1h
frontend etcd
    bind %s
    default_backend members
backend members
    balance %s
    option httpchk GET /readyz
`, addr, balance)
	for i, ep := range eps {
		fmt.Fprintf(&b, "    server m%d %s check inter 1s fall 2 rise 1 on-marked-down shutdown-sessions\n", i, ep)
	}
	return b.String()
}

// waitListening waits until addr accepts connections.
func waitListening(addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s", addr)
}
