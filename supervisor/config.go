package supervisor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/listener"
	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/thejerf/suture/v4"

	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// Config is the gateway's settings, as cmd/etcd-gateway parses them from flags; Prepare turns
// it into a Plan.
type Config struct {
	ListenAddr      string              // host:port to accept clients on, or unix://PATH
	SocketMode      os.FileMode         // permissions of a unix:// listen socket
	Endpoints       []resolver.Endpoint // the etcd members' client addresses; with Discovery, used until it first succeeds
	Discovery       *resolver.SRVConfig // SRV discovery; nil for a static list
	EndpointsFile   string              // with it, Endpoints are its contents at start, and it is followed
	RetryDelay      time.Duration       // how long a failed endpoint waits before it is probed again
	DialTimeout     time.Duration       // bound of every dial to a member and of every probe
	ShutdownTimeout time.Duration       // how long live connections may finish after a stop signal
	KeepAlive       time.Duration       // TCP keep-alive period on both legs; 0 means Go's 15s
	// TrustedCAFile verifies TLS members: those from _etcd-client-ssl (the system roots when
	// empty) and listed ones (not verified when empty).
	TrustedCAFile string
	MetricsAddr   string // host:port of /metrics, /healthz, /readyz and /status; empty for none
	// AutoSyncInterval is --endpoints-auto-sync-interval: how often the cluster's member list
	// is read and followed; 0 turns it off, and the endpoints are the starting ones only.
	AutoSyncInterval time.Duration
	Health           HealthConfig
	// Rebalance moves quiet connections from the most loaded healthy members to the least
	// loaded when their loads drift apart (--rebalance); RebalanceQuiet is how long a
	// connection must have been quiet to be moved (--rebalance-quiet-time).
	Rebalance      bool
	RebalanceQuiet time.Duration
}

// HealthConfig is how members are probed and what happens to a sick member's connections.
type HealthConfig struct {
	Check    health.CheckMode // readyz, health or tcp
	Interval time.Duration
	Timeout  time.Duration
	Rise     int
	Fall     int
	// Heartbeat and HeartbeatTimeout: the liveness heartbeat between probes; 0 turns it off.
	Heartbeat        time.Duration
	HeartbeatTimeout time.Duration
	CertFile         string // client certificate for probes of members that require one
	KeyFile          string
	Evict            bool // close the connections of a member that turns down or degraded
}

// DefaultHealth is the health configuration of the flags' defaults.
func DefaultHealth() HealthConfig {
	return HealthConfig{Check: health.CheckReadyz, Interval: time.Second, Timeout: time.Second, Rise: 1, Fall: 1,
		Heartbeat: 250 * time.Millisecond, HeartbeatTimeout: 250 * time.Millisecond, Evict: true}
}

// probeConfig loads the probe TLS material and returns the probers' configuration.
func (cfg Config) probeConfig() (health.ProbeConfig, error) {
	pc := health.ProbeConfig{
		Mode: cfg.Health.Check, Interval: cfg.Health.Interval, Timeout: cfg.Health.Timeout,
		RetryDelay: cfg.RetryDelay, Rise: cfg.Health.Rise, Fall: cfg.Health.Fall,
		Heartbeat: cfg.Health.Heartbeat, HeartbeatTimeout: cfg.Health.HeartbeatTimeout,
	}
	if (cfg.Health.CertFile == "") != (cfg.Health.KeyFile == "") {
		return pc, errors.New("--health-cert-file and --health-key-file go together; give both or neither")
	}
	if cfg.Health.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.Health.CertFile, cfg.Health.KeyFile)
		if err != nil {
			return pc, fmt.Errorf("--health-cert-file/--health-key-file: %v", err)
		}
		pc.TLS.Certificates = []tls.Certificate{cert}
	}
	if d := cfg.Discovery; d != nil {
		pc.TLS.Domain = d.Domain
		pc.TLS.InsecureDiscovery = d.Insecure
	}
	if cfg.TrustedCAFile != "" {
		roots, err := member.LoadRoots(cfg.TrustedCAFile)
		if err != nil {
			return pc, err
		}
		pc.TLS.Roots = roots
	}
	return pc, nil
}

// Plan is a Config turned, once, into the parts that running it needs: the loop guard, the
// probe configuration with its TLS material, and the endpoint source with its DNS client and
// verifier. The gateway (New) and the check command (Check) both run from a Plan.
type Plan struct {
	cfg    Config
	guard  *resolver.LoopGuard
	probe  health.ProbeConfig
	source resolver.Source
	log    *zap.Logger
	// wrap wraps every service New puts in the tree; nil is the identity. Tests set it to
	// inject faults into each service.
	wrap func(suture.Service) suture.Service
}

// Prepare checks cfg before anything is bound and builds its parts: the listen address, the
// durations, the TLS files, the endpoint source, and that no endpoint is the gateway itself.
// A receive on reload reads --endpoints-file again. Every error is one line that names the fix.
func Prepare(ctx context.Context, cfg Config, reload <-chan struct{}, log *zap.Logger) (*Plan, error) {
	if path, ok := strings.CutPrefix(cfg.ListenAddr, listener.UnixScheme); ok && !filepath.IsAbs(path) {
		return nil, fmt.Errorf("--listen-addr=%s: a Unix socket needs an absolute path, such as unix:///run/etcd-gateway/etcd.sock", cfg.ListenAddr)
	}
	if err := cfg.checkSettings(); err != nil {
		return nil, err
	}
	guard, err := resolver.NewLoopGuard(ctx, cfg.ListenAddr)
	if err != nil {
		return nil, err
	}
	probe, err := cfg.probeConfig()
	if err != nil {
		return nil, err
	}
	for _, ep := range cfg.Endpoints {
		if err := guard.Check(ctx, ep); err != nil {
			return nil, err
		}
	}
	var source resolver.Source
	switch {
	case cfg.Discovery != nil:
		if source, err = resolver.NewSRVSource(*cfg.Discovery, probe.TLS, cfg.Endpoints, guard, log); err != nil {
			return nil, err
		}
	case len(cfg.Endpoints) == 0:
		return nil, errors.New("no endpoints given; set --endpoints to host:port[,host:port...] of the etcd members' client URLs")
	case cfg.EndpointsFile != "":
		source = resolver.NewFileSource(cfg.EndpointsFile, cfg.Endpoints, reload, guard, log)
	default:
		source = resolver.NewListSource(cfg.Endpoints)
	}
	return &Plan{cfg: cfg, guard: guard, probe: probe, source: source, log: log}, nil
}

// checkSettings checks the settings that need nothing looked up.
func (cfg Config) checkSettings() error {
	for _, d := range []struct {
		flag string
		val  time.Duration
	}{{"--retry-delay", cfg.RetryDelay}, {"--dial-timeout", cfg.DialTimeout}, {"--shutdown-timeout", cfg.ShutdownTimeout}} {
		if d.val < 0 {
			return fmt.Errorf("%s=%s is negative; give a positive duration such as 1s", d.flag, d.val)
		}
	}
	if cfg.Health.Interval <= 0 || cfg.Health.Timeout <= 0 {
		return errors.New("--health-interval and --health-timeout must be positive durations, such as 1s")
	}
	if cfg.Health.Heartbeat > 0 && cfg.Health.HeartbeatTimeout <= 0 {
		return errors.New("--health-heartbeat-timeout must be a positive duration, such as 250ms, or turn heartbeats off with --health-heartbeat-interval=0")
	}
	if cfg.Rebalance && cfg.RebalanceQuiet <= 0 {
		return errors.New("--rebalance-quiet-time must be a positive duration, such as 2s, or turn rebalancing off with --rebalance=false")
	}
	if cfg.Health.Rise < 1 || cfg.Health.Fall < 1 {
		return errors.New("--health-rise and --health-fall must be at least 1")
	}
	if cfg.MetricsAddr != "" {
		_, port, err := net.SplitHostPort(cfg.MetricsAddr)
		if err != nil || port == "" {
			return fmt.Errorf("--metrics-addr=%q is not host:port; give one such as 127.0.0.1:23791, or leave it empty to turn metrics off", cfg.MetricsAddr)
		}
		if cfg.MetricsAddr == cfg.ListenAddr && port != "0" {
			return fmt.Errorf("--metrics-addr=%s is also --listen-addr; give the metrics another port, such as 127.0.0.1:23791", cfg.MetricsAddr)
		}
	}
	if cfg.DialTimeout == 0 {
		return errors.New("--dial-timeout=0 would let a dead member hold clients forever; give a positive duration such as 1s")
	}
	if cfg.AutoSyncInterval > 0 && cfg.AutoSyncInterval < minAutoSyncInterval {
		return fmt.Errorf("--endpoints-auto-sync-interval=%s would ask the members for their list too often; give %s or more, such as 30s, or 0 to turn it off", cfg.AutoSyncInterval, minAutoSyncInterval)
	}
	return nil
}

// minAutoSyncInterval bounds how often the member list may be read.
const minAutoSyncInterval = 100 * time.Millisecond
