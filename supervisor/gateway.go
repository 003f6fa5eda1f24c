package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/dialer"
	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/listener"
	"github.com/etcd-gateway/etcd-gateway/resolver"
	"github.com/etcd-gateway/etcd-gateway/status"
)

// reportBuffer is room for failed-dial reports while the health manager is busy.
const reportBuffer = 256

// BindError is returned by New when the listen address cannot be bound.
type BindError struct {
	Addr string
	Err  error
}

func (e *BindError) Error() string { return fmt.Sprintf("listen on %s: %v", e.Addr, e.Err) }

func (e *BindError) Unwrap() error { return e.Err }

// Gateway is a bound gateway, ready to Serve.
type Gateway struct {
	cfg      Config
	log      *zap.Logger
	ln       listener.Acceptor
	statusLn *net.TCPListener // nil without --metrics-addr
	fwd      *listener.Forwarder
	tree     *suture.Supervisor
	// statusTree runs the status server apart from the tree, so that it answers through the
	// drain: /healthz 200, /readyz 503 "draining". nil without --metrics-addr.
	statusTree *suture.Supervisor
	status     *status.Server
	cut        chan struct{} // closed by CutDrain
	cutOnce    sync.Once
}

// New binds the listen address and builds the supervisor tree of plan; nothing runs until
// Serve.
func New(ctx context.Context, plan *Plan) (gw *Gateway, err error) {
	cfg, log, probe := plan.cfg, plan.log, plan.probe
	wrap := plan.wrap
	if wrap == nil {
		wrap = func(s suture.Service) suture.Service { return s }
	}
	ln, err := listener.Listen(ctx, cfg.ListenAddr, cfg.KeepAlive, cfg.SocketMode)
	if err != nil {
		return nil, &BindError{Addr: cfg.ListenAddr, Err: err}
	}
	var statusLn *net.TCPListener
	defer func() {
		if err != nil {
			ln.Close()
			if statusLn != nil {
				statusLn.Close()
			}
		}
	}()
	table := health.NewTable()
	reports := health.NewReports(reportBuffer)
	reprobe := health.NewReprobe()
	updates := resolver.NewUpdates()
	var dials *status.DialMetrics
	var observe dialer.Observer
	if cfg.MetricsAddr != "" {
		dials = status.NewDialMetrics()
		observe = dials
	}
	dial := dialer.New(table, reports, reprobe, cfg.DialTimeout, cfg.KeepAlive, observe)
	// With the member list followed, the starting endpoints are its seeds.
	seeds := updates
	var memberList *resolver.MemberList
	if cfg.AutoSyncInterval > 0 {
		seeds = resolver.NewUpdates()
		memberList = resolver.NewMemberList(resolver.MemberListConfig{
			Interval: cfg.AutoSyncInterval, Timeout: cfg.DialTimeout, Seeds: seeds, Out: updates,
			Cluster: clusterView{table}, Trust: probe.TLS, Guard: plan.guard, Log: log,
		})
	}
	source := plan.source.Service(seeds)
	if cfg.MetricsAddr != "" {
		if statusLn, err = status.Listen(ctx, cfg.MetricsAddr); err != nil {
			return nil, &BindError{Addr: cfg.MetricsAddr, Err: err}
		}
	}
	known := func(hp resolver.HostPort) bool { return table.Load().Knows(hp) }
	fwd := listener.NewForwarder(listener.ForwarderConfig{Dial: dial.Dial, Known: known, Log: log})

	hook := EventHook(log)
	tree := suture.New("gateway", suture.Spec{EventHook: hook})
	// The accept loop gets a supervisor of its own so its restarts are not held up by
	// flapping probers, and restart quickly: the socket and connections survive it.
	listenSup := suture.New("listener", suture.Spec{EventHook: hook, FailureBackoff: time.Second})
	listenSup.Add(wrap(listener.NewService(ln, fwd, log)))
	if cfg.Health.Evict {
		listenSup.Add(wrap(listener.NewEvictor(table, fwd, reprobe, log)))
	}
	var rebalancer *listener.Rebalancer
	if cfg.Rebalance {
		rebalancer = listener.NewRebalancer(table, fwd, cfg.RebalanceQuiet, log)
		listenSup.Add(wrap(rebalancer))
	}
	tree.Add(listenSup)
	tree.Add(wrap(source))
	if memberList != nil {
		tree.Add(wrap(memberList))
	}
	tree.Add(wrap(&notifier{table: table, log: log.Named("supervisor")}))
	if gc, procs := restKnobs(); gc || procs {
		tree.Add(wrap(newRest(table.Traffic(), gc, procs, log)))
	}
	var statusTree *suture.Supervisor
	var statusSrv *status.Server
	if statusLn != nil {
		src := status.Sources{Table: table, Forwarder: fwd, StaticSource: plan.source.Listed()}
		if lookups := plan.source.Lookups(); lookups != nil {
			src.Discovery = lookups
		}
		if memberList != nil {
			src.MemberList = memberList
		}
		if rebalancer != nil {
			src.Rebalancer = rebalancer
		}
		statusSrv = status.New(statusLn, src, dials, log)
		statusTree = suture.New("status", suture.Spec{EventHook: hook})
		statusTree.Add(wrap(statusSrv))
	}
	healthSup := suture.New("health", suture.Spec{EventHook: hook})
	healthSup.Add(wrap(health.NewManager(health.ManagerConfig{
		Table:      table,
		Updates:    updates,
		Reports:    reports,
		Reprobe:    reprobe,
		Probe:      probe,
		ProberSpec: suture.Spec{EventHook: hook},
		Log:        log,
	})))
	tree.Add(healthSup)
	return &Gateway{cfg: cfg, log: log, ln: ln, statusLn: statusLn, fwd: fwd, tree: tree,
		statusTree: statusTree, status: statusSrv, cut: make(chan struct{})}, nil
}

// CutDrain ends a drain in progress at once, or the next one as soon as it starts: the
// connections still open are closed. It is for a second SIGINT or SIGTERM.
func (g *Gateway) CutDrain() { g.cutOnce.Do(func() { close(g.cut) }) }

// Addr is the bound listen address.
func (g *Gateway) Addr() net.Addr { return g.ln.Addr() }

// Serve runs the gateway until ctx ends; then it stops accepting at once, lets live
// connections finish for up to the shutdown timeout and closes the rest. It returns nil after
// a clean stop.
func (g *Gateway) Serve(ctx context.Context) error {
	discovery := ""
	if g.cfg.Discovery != nil {
		discovery = g.cfg.Discovery.Domain
	}
	g.log.Info("gateway started",
		zap.Stringer("listen_addr", g.ln.Addr()),
		zap.Stringers("endpoints", g.cfg.Endpoints),
		zap.String("discovery_srv", discovery),
		zap.Duration("retry_delay", g.cfg.RetryDelay),
		zap.Duration("dial_timeout", g.cfg.DialTimeout),
		zap.String("health_check", string(g.cfg.Health.Check)),
		zap.Duration("health_interval", g.cfg.Health.Interval),
		zap.Bool("evict_unhealthy", g.cfg.Health.Evict))
	if g.cfg.Rebalance {
		g.log.Info("rebalancing on: quiet connections move from the most loaded healthy members to the least loaded",
			zap.Float64("max_closes_per_second", listener.RebalanceMaxRate),
			zap.Duration("quiet_time", g.cfg.RebalanceQuiet))
	}
	stopAccepting := context.AfterFunc(ctx, func() {
		g.ln.Close()
		if g.status != nil {
			g.status.Drain()
		}
	})
	defer stopAccepting()
	statusCtx, stopStatus := context.WithCancel(context.Background())
	defer stopStatus()
	var statusDone <-chan error
	if g.statusTree != nil {
		statusDone = g.statusTree.ServeBackground(statusCtx)
	}
	err := g.tree.Serve(ctx)
	g.ln.Close()
	if g.status != nil {
		g.status.Drain()
	}
	notifyStopping(g.log)
	active := g.fwd.Active()
	if active > 0 {
		g.log.Info("draining connections; a second SIGINT or SIGTERM closes them at once",
			zap.Int("active_connections", active), zap.Duration("shutdown_timeout", g.cfg.ShutdownTimeout))
	}
	closed, cut := g.fwd.Shutdown(g.cfg.ShutdownTimeout, g.cut)
	if cut {
		g.log.Warn("drain ended by a second signal", zap.Int("connections_closed", closed))
	}
	if g.statusTree != nil {
		stopStatus()
		<-statusDone
		g.statusLn.Close()
	}
	g.log.Info("gateway stopped", zap.Int("connections_closed", closed))
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}
