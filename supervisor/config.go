package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// Config is everything the gateway needs to run; cmd/etcd-gateway fills it from flags.
type Config struct {
	ListenAddr      string              // host:port to accept clients on
	Endpoints       []resolver.Endpoint // the etcd members' client addresses; with Discovery, used until it first succeeds
	Discovery       *resolver.SRVConfig // SRV discovery; nil for a static list
	RetryDelay      time.Duration       // how long a failed endpoint waits before it is probed again
	DialTimeout     time.Duration       // bound of every dial to a member and of every probe
	ShutdownTimeout time.Duration       // how long live connections may finish after a stop signal
	KeepAlive       time.Duration       // TCP keep-alive period on both legs; 0 means Go's 15s
}

// Validate checks cfg before anything is bound: the listen address, the durations, and that no
// endpoint is the gateway itself. Every error is one line that names the fix.
func (cfg Config) Validate(ctx context.Context) error {
	guard, err := resolver.NewLoopGuard(ctx, cfg.ListenAddr)
	if err != nil {
		return err
	}
	if len(cfg.Endpoints) == 0 && cfg.Discovery == nil {
		return errors.New("no endpoints given; set --endpoints to host:port[,host:port...] of the etcd members' client URLs")
	}
	if cfg.Discovery != nil {
		if err := cfg.Discovery.Validate(); err != nil {
			return err
		}
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
	for _, ep := range cfg.Endpoints {
		if err := guard.Check(ctx, ep); err != nil {
			return err
		}
	}
	return nil
}
