package supervisor

import (
	"context"
	"fmt"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/health"
)

// notifier tells systemd (Type=notify) how the gateway is doing: READY=1 once the listener is
// bound and the first endpoint set is known, then WATCHDOG=1 at half of WATCHDOG_USEC while the
// supervisor tree runs it. Without NOTIFY_SOCKET every notification is a no-op. STOPPING=1 is
// sent by Gateway.Serve.
type notifier struct {
	table *health.Table
	log   *zap.Logger
	ready bool // READY=1 was sent; a restarted notifier does not send it again
}

var _ suture.Service = (*notifier)(nil)

// String names the service in supervisor events.
func (n *notifier) String() string { return "systemd-notify" }

// Serve notifies until ctx ends.
func (n *notifier) Serve(ctx context.Context) error {
	for snap := n.table.Load(); !n.ready && len(snap.Known()) == 0; snap = n.table.Load() {
		select {
		case <-snap.Changed():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if !n.ready {
		if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
			return fmt.Errorf("notify systemd: %w", err)
		}
		n.ready = true
	}
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return fmt.Errorf("systemd watchdog: %w", err)
	}
	if interval == 0 {
		<-ctx.Done()
		return ctx.Err()
	}
	n.log.Debug("sending systemd watchdog notifications", zap.Duration("every", interval/2))
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	for {
		if _, err := daemon.SdNotify(false, daemon.SdNotifyWatchdog); err != nil {
			return fmt.Errorf("notify systemd watchdog: %w", err)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// notifyStopping tells systemd the gateway is shutting down.
func notifyStopping(log *zap.Logger) {
	if _, err := daemon.SdNotify(false, daemon.SdNotifyStopping); err != nil {
		log.Warn("could not tell systemd the gateway is stopping", zap.Error(err))
	}
}
