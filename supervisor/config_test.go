package supervisor

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/resolver"
)

func TestPrepare(t *testing.T) {
	ep := func(host string, port uint16) []resolver.Endpoint {
		return []resolver.Endpoint{{Host: "10.0.1.10", Port: 2379}, {Host: host, Port: port}}
	}
	valid := Config{ListenAddr: "127.0.0.1:23790", Endpoints: ep("127.0.0.1", 2379), RetryDelay: time.Minute, DialTimeout: time.Second, Health: DefaultHealth()}
	tests := []struct {
		name    string
		change  func(*Config)
		wantErr string
	}{
		{name: "valid", change: func(*Config) {}},
		{name: "same host other port", change: func(c *Config) { c.Endpoints = ep("127.0.0.1", 23791) }},
		// A name that is not a valid DNS name fails without a query leaving the machine.
		{name: "unresolvable name is retried, not fatal", change: func(c *Config) { c.Endpoints = ep("unresolvable!host", 23790) }},
		{name: "IPv6 endpoint", change: func(c *Config) { c.Endpoints = ep("::1", 2379) }},
		{name: "loop to the listen address", change: func(c *Config) { c.Endpoints = ep("127.0.0.1", 23790) }, wantErr: "forward clients to itself"},
		{name: "loop through localhost", change: func(c *Config) { c.Endpoints = ep("localhost", 23790) }, wantErr: "forward clients to itself"},
		{name: "loop when listening on 0.0.0.0", change: func(c *Config) {
			c.ListenAddr = "0.0.0.0:23790"
			c.Endpoints = ep("127.0.0.2", 23790)
		}, wantErr: "forward clients to itself"},
		{name: "loop when listening on [::]", change: func(c *Config) {
			c.ListenAddr = "[::]:23790"
			c.Endpoints = ep("::1", 23790)
		}, wantErr: "forward clients to itself"},
		{name: "loop when listening on :port", change: func(c *Config) {
			c.ListenAddr = ":23790"
			c.Endpoints = ep("127.0.0.1", 23790)
		}, wantErr: "forward clients to itself"},
		{name: "no loop: other loopback address", change: func(c *Config) { c.Endpoints = ep("127.0.0.2", 23790) }},
		{name: "malformed listen address", change: func(c *Config) { c.ListenAddr = "127.0.0.1" }, wantErr: "--listen-addr"},
		{name: "listen port not a number", change: func(c *Config) { c.ListenAddr = "127.0.0.1:abc" }, wantErr: "--listen-addr"},
		{name: "no endpoints", change: func(c *Config) { c.Endpoints = nil }, wantErr: "--endpoints"},
		{name: "negative retry delay", change: func(c *Config) { c.RetryDelay = -time.Second }, wantErr: "--retry-delay"},
		{name: "zero dial timeout", change: func(c *Config) { c.DialTimeout = 0 }, wantErr: "--dial-timeout"},
		{name: "rebalancing with no quiet time", change: func(c *Config) { c.Rebalance, c.RebalanceQuiet = true, 0 }, wantErr: "--rebalance-quiet-time"},
		{name: "no quiet time without rebalancing", change: func(c *Config) { c.Rebalance, c.RebalanceQuiet = false, 0 }},
		{name: "member list read too often", change: func(c *Config) { c.AutoSyncInterval = time.Millisecond }, wantErr: "--endpoints-auto-sync-interval"},
		{name: "unreadable trusted CA", change: func(c *Config) { c.TrustedCAFile = "/nonexistent/ca.pem" }, wantErr: "--trusted-ca-file"},
		{name: "SRV refresh bounds reversed", change: func(c *Config) {
			c.Discovery = &resolver.SRVConfig{Domain: "example.com", DNSServer: "127.0.0.1:53", MinRefresh: time.Minute, MaxRefresh: time.Second}
		}, wantErr: "--discovery-srv-max-refresh"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			cfg.Endpoints = append([]resolver.Endpoint(nil), valid.Endpoints...)
			tt.change(&cfg)
			_, err := Prepare(context.Background(), cfg, nil, zap.NewNop())
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Prepare = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Prepare = %v, want an error about %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}
