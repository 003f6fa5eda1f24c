package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

func noEnv(string) (string, bool) { return "", false }

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestParseStartDefaultsMatchEtcdGateway(t *testing.T) {
	opts, err := parseCommand("start", nil, noEnv, false, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := opts.cfg
	if cfg.ListenAddr != "127.0.0.1:23790" {
		t.Errorf("listen-addr default = %q", cfg.ListenAddr)
	}
	if len(cfg.Endpoints) != 1 || cfg.Endpoints[0] != (resolver.Endpoint{Host: "127.0.0.1", Port: 2379}) {
		t.Errorf("endpoints default = %v", cfg.Endpoints)
	}
	if cfg.RetryDelay != time.Minute || cfg.DialTimeout != time.Second {
		t.Errorf("retry-delay %s, dial-timeout %s", cfg.RetryDelay, cfg.DialTimeout)
	}
	if h := cfg.Health; h.Check != health.CheckReadyz || h.Interval != time.Second || h.Timeout != time.Second || !h.Evict {
		t.Errorf("health defaults = %+v", h)
	}
	if opts.logFormat != "json" || opts.logLevel != zapcore.InfoLevel {
		t.Errorf("log %s %s, want json info off a terminal", opts.logFormat, opts.logLevel)
	}
	onTerminal, _ := parseCommand("start", nil, noEnv, true, &bytes.Buffer{})
	if onTerminal.logFormat != "console" {
		t.Errorf("log format on a terminal = %s, want console", onTerminal.logFormat)
	}
}

func TestParseStartFlagsAndEnvironment(t *testing.T) {
	opts, err := parseCommand("start",
		[]string{"--endpoints=http://[::1]:2379,10.0.1.11:2379", "--retry-delay", "0", "--log-level=debug"},
		envOf(map[string]string{
			"ETCD_GATEWAY_RETRY_DELAY":  "7s", // the flag wins
			"ETCD_GATEWAY_DIAL_TIMEOUT": "250ms",
			"ETCD_GATEWAY_LISTEN_ADDR":  "127.0.0.1:3000",
		}), false, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := []resolver.Endpoint{{Host: "10.0.1.11", Port: 2379}, {Host: "::1", Port: 2379}}
	if len(opts.cfg.Endpoints) != 2 || opts.cfg.Endpoints[0] != want[0] || opts.cfg.Endpoints[1] != want[1] {
		t.Errorf("endpoints = %v, want %v", opts.cfg.Endpoints, want)
	}
	if opts.cfg.RetryDelay != etcdZeroRetryDelay {
		t.Errorf("--retry-delay=0 gave %s, want etcd's %s", opts.cfg.RetryDelay, etcdZeroRetryDelay)
	}
	if opts.cfg.DialTimeout != 250*time.Millisecond || opts.cfg.ListenAddr != "127.0.0.1:3000" {
		t.Errorf("environment not applied: dial-timeout %s, listen-addr %s", opts.cfg.DialTimeout, opts.cfg.ListenAddr)
	}
	if opts.logLevel != zapcore.DebugLevel {
		t.Errorf("log level %s", opts.logLevel)
	}
}

func TestParseStartRefusesBadInput(t *testing.T) {
	badFile := filepath.Join(t.TempDir(), "endpoints")
	if err := os.WriteFile(badFile, []byte("# a member with a bad port\n10.0.1.10:x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"https endpoint", []string{"--endpoints=https://10.0.1.10:2379"}, nil, "does not terminate TLS"},
		{"endpoint with a bad port", []string{"--endpoints=10.0.1.10:x"}, nil, "not a number"},
		{"empty endpoint list", []string{"--endpoints="}, nil, "no endpoints given"},
		{"duration without unit", []string{"--retry-delay=123"}, nil, "with a unit"},
		{"negative duration", []string{"--dial-timeout=-1s"}, nil, "negative"},
		{"unknown flag", []string{"--endpoint=10.0.1.10:2379"}, nil, "unknown flag --endpoint"},
		{"stray argument", []string{"10.0.1.10:2379"}, nil, "unexpected argument"},
		{"bad log level", []string{"--log-level=loud"}, nil, "not a log level"},
		{"bad environment value", nil, map[string]string{"ETCD_GATEWAY_RETRY_DELAY": "60"}, "ETCD_GATEWAY_RETRY_DELAY"},
		{"discovery flag without --discovery-srv", []string{"--insecure-discovery"}, nil, "add --discovery-srv"},
		{"bad health check", []string{"--health-check=options"}, nil, "not a health check"},
		{"health interval without unit", []string{"--health-interval=5"}, nil, "with a unit"},
		{"bad refresh bound", []string{"--discovery-srv=example.com", "--discovery-srv-min-refresh=1"}, nil, "with a unit"},
		{"endpoints file and endpoints", []string{"--endpoints-file=" + badFile, "--endpoints=10.0.1.10:2379"}, nil, "give only one"},
		{"endpoints file and discovery", []string{"--endpoints-file=" + badFile, "--discovery-srv=example.com"}, nil, "give only one"},
		{"missing endpoints file", []string{"--endpoints-file=/nonexistent/endpoints"}, nil, "no such file"},
		{"endpoints file that does not parse", []string{"--endpoints-file=" + badFile}, nil, "line 2"},
		{"bad socket mode", []string{"--listen-socket-mode=rw-rw----"}, nil, "in octal"},
		{"quiet time without unit", []string{"--rebalance-quiet-time=2"}, nil, "with a unit"},
		{"bad rebalance switch", []string{"--rebalance=sometimes"}, nil, "rebalance"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseCommand("start", tt.args, envOf(tt.env), false, &bytes.Buffer{})
			var ue *usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("parse start %q = %v, want a usage error about %q", tt.args, err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestHelpListsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	if _, err := parseCommand("start", []string{"--help"}, noEnv, false, &out); !errors.Is(err, errHelp) {
		t.Fatalf("parse start --help = %v", err)
	}
	for _, flag := range []string{"--endpoints", "--listen-addr", "--retry-delay", "--dial-timeout", "--shutdown-timeout",
		"--log-level", "--log-format", "--discovery-srv", "--discovery-srv-name", "--insecure-discovery", "--trusted-ca-file",
		"--dns-server", "--discovery-srv-min-refresh", "--discovery-srv-max-refresh",
		"--health-check", "--health-interval", "--health-timeout", "--health-rise", "--health-fall",
		"--health-heartbeat-interval", "--health-heartbeat-timeout",
		"--health-cert-file", "--health-key-file", "--evict-unhealthy", "--rebalance", "--rebalance-quiet-time", "ETCD_GATEWAY_"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("help does not mention %s", flag)
		}
	}
}

// With discovery, --endpoints is a fallback only when the user gave it, never the default.
func TestParseStartDiscoveryFallback(t *testing.T) {
	opts, err := parseCommand("start", []string{"--discovery-srv=example.com", "--dns-server=127.0.0.1:5353"}, noEnv, false, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	d := opts.cfg.Discovery
	if d == nil || d.Domain != "example.com" || d.DNSServer != "127.0.0.1:5353" || d.MinRefresh != time.Second || d.MaxRefresh != 5*time.Minute {
		t.Fatalf("discovery = %+v", d)
	}
	if len(opts.cfg.Endpoints) != 0 {
		t.Fatalf("default endpoints %v used with discovery", opts.cfg.Endpoints)
	}
	for _, tt := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"--discovery-srv=example.com", "--endpoints=10.0.1.10:2379"}, nil},
		{[]string{"--discovery-srv=example.com"}, map[string]string{"ETCD_GATEWAY_ENDPOINTS": "10.0.1.10:2379"}},
	} {
		opts, err := parseCommand("start", tt.args, envOf(tt.env), false, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if len(opts.cfg.Endpoints) != 1 || opts.cfg.Endpoints[0].Host != "10.0.1.10" {
			t.Errorf("%v %v: explicit endpoints = %v, want the fallback 10.0.1.10:2379", tt.args, tt.env, opts.cfg.Endpoints)
		}
	}
}

// Rebalancing is on by default, with a quiet time of 2s; --rebalance=false turns it off and
// leaves eviction alone.
func TestParseStartRebalanceFlags(t *testing.T) {
	opts, err := parseCommand("start", nil, noEnv, false, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !opts.cfg.Rebalance || opts.cfg.RebalanceQuiet != 2*time.Second {
		t.Fatalf("defaults: rebalance %v, quiet time %s; want on, 2s", opts.cfg.Rebalance, opts.cfg.RebalanceQuiet)
	}
	opts, err = parseCommand("start", []string{"--rebalance=false"}, envOf(map[string]string{"ETCD_GATEWAY_REBALANCE_QUIET_TIME": "5s"}), false, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if opts.cfg.Rebalance || opts.cfg.RebalanceQuiet != 5*time.Second || !opts.cfg.Health.Evict {
		t.Fatalf("rebalance %v, quiet time %s, evict %v; want off, 5s, evict still on", opts.cfg.Rebalance, opts.cfg.RebalanceQuiet, opts.cfg.Health.Evict)
	}
}

func TestParseStartHealthFlags(t *testing.T) {
	opts, err := parseCommand("start", []string{"--health-check=tcp", "--health-interval=250ms", "--evict-unhealthy=false", "--health-fall=3"},
		envOf(map[string]string{"ETCD_GATEWAY_HEALTH_TIMEOUT": "400ms"}), false, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	h := opts.cfg.Health
	if h.Check != health.CheckTCP || h.Interval != 250*time.Millisecond || h.Timeout != 400*time.Millisecond || h.Evict || h.Fall != 3 {
		t.Fatalf("health = %+v", h)
	}
}

// Any command line and environment either parses or gives one line that is a usage error.
// Validate is left out: it resolves host names, and fuzzing must not reach the network.
func FuzzParseCommand(f *testing.F) {
	for _, seed := range []struct{ args, env string }{
		{"--endpoints=127.0.0.1:2379", ""},
		{"--listen-addr=unix:///run/x.sock --listen-socket-mode=0600", ""},
		{"--retry-delay=1m --health-check=tcp", "ETCD_GATEWAY_DIAL_TIMEOUT=2s"},
		{"--discovery-srv=example.com --dns-server=127.0.0.1:53", "ETCD_GATEWAY_ENDPOINTS=a:1"},
		{"--endpoints-file=/dev/stdin", ""},
		{"--help", ""},
	} {
		f.Add(seed.args, seed.env)
	}
	f.Fuzz(func(t *testing.T, args, env string) {
		name, value, _ := strings.Cut(env, "=")
		getenv := func(k string) (string, bool) {
			if k == name {
				return value, true
			}
			return "", false
		}
		_, err := parseCommand("start", strings.Fields(args), getenv, false, io.Discard)
		if err == nil || errors.Is(err, errHelp) {
			return
		}
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Fatalf("%q with %q: %v is not a usage error", args, env, err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("%q with %q: multi-line error %q", args, env, err)
		}
	})
}

func TestTrustedCAFileWithListedEndpoints(t *testing.T) {
	for _, args := range [][]string{
		{"--endpoints=10.0.1.10:2379", "--trusted-ca-file=/etc/etcd/ca.pem"},
		{"--discovery-srv=example.com", "--trusted-ca-file=/etc/etcd/ca.pem"},
	} {
		opts, err := parseCommand("start", args, noEnv, false, &bytes.Buffer{})
		if err != nil {
			t.Fatalf("parse %q: %v", args, err)
		}
		if opts.cfg.TrustedCAFile != "/etc/etcd/ca.pem" {
			t.Errorf("parse %q: trusted CA file = %q", args, opts.cfg.TrustedCAFile)
		}
	}
}

// The page of etcd's gateway lists members without ports; repeated --endpoints add up.
func TestEndpointsAsEtcdsPageWritesThem(t *testing.T) {
	opts, err := parseCommand("start", []string{"--endpoints=infra0.example.com,infra1.example.com", "--endpoints=infra2.example.com:2380"},
		noEnv, false, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := []resolver.Endpoint{{Host: "infra0.example.com", Port: 2379}, {Host: "infra1.example.com", Port: 2379}, {Host: "infra2.example.com", Port: 2380}}
	if !slices.Equal(opts.cfg.Endpoints, want) {
		t.Errorf("endpoints = %v, want %v", opts.cfg.Endpoints, want)
	}
	if len(opts.portDefaulted) != 2 {
		t.Errorf("endpoints given without a port = %v, want the two of infra0 and infra1", opts.portDefaulted)
	}
	fromEnv, err := parseCommand("start", nil, envOf(map[string]string{"ETCD_GATEWAY_ENDPOINTS": "10.0.1.10"}), false, &bytes.Buffer{})
	if err != nil || !slices.Equal(fromEnv.cfg.Endpoints, []resolver.Endpoint{{Host: "10.0.1.10", Port: 2379}}) {
		t.Errorf("from the environment: %v, %v; want the default replaced", fromEnv.cfg.Endpoints, err)
	}
}
