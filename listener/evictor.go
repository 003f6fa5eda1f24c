package listener

import (
	"context"
	"time"

	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// evictionSpread is the longest time over which one endpoint's connections are closed.
const evictionSpread = time.Second

// Evictor closes the proxied connections of an endpoint that is worse than another, so that
// their clients reconnect through the gateway to a better member: a down endpoint's while
// another is healthy or degraded, a degraded endpoint's while another is healthy.
//
// The evidence may be wrong, and closing a working connection hurts its client, so it acts
// only on proof that the other member is better now: a probe of it, begun after this endpoint
// turned worse, found it better. It asks for that probe at once. A member that stops accepting
// new connections looks down to its probes while it still serves the connections it has; when
// every member does so, none is proven better, and nothing is closed.
type Evictor struct {
	table   *health.Table
	fwd     *Forwarder
	reprobe health.Reprobe
	log     *zap.Logger
	now     func() time.Time
}

var _ suture.Service = (*Evictor)(nil)

// NewEvictor returns an Evictor of fwd's connections that follows table and asks for probes
// on reprobe.
func NewEvictor(table *health.Table, fwd *Forwarder, reprobe health.Reprobe, log *zap.Logger) *Evictor {
	return &Evictor{table: table, fwd: fwd, reprobe: reprobe, log: log.Named("listener"), now: time.Now}
}

// String names the service in supervisor events.
func (e *Evictor) String() string { return "listener/evictor" }

// Serve watches the snapshots and the probes until ctx ends. It starts from nothing evicted,
// so that a restarted Evictor closes the connections of an endpoint that went down while it
// was not running.
func (e *Evictor) Serve(ctx context.Context) error {
	worseSince := map[resolver.HostPort]time.Time{} // evictable endpoints not evicted yet
	evicted := map[resolver.HostPort]bool{}         // evicted, and evictable since
	for {
		probed := e.table.Probed() // before the view: a probe recorded after it wakes this loop
		view := e.table.View()
		cur := view.Snapshot()
		for _, ep := range cur.Known() {
			hp := ep.HostPort()
			if !evictable(cur, ep) {
				delete(worseSince, hp)
				delete(evicted, hp)
				continue
			}
			if _, waiting := worseSince[hp]; !waiting && !evicted[hp] {
				worseSince[hp] = e.now()
				e.reprobe.Offer()
			}
		}
		for hp, since := range worseSince {
			ep, better, ok := provenBetter(view, hp, since)
			if !ok {
				continue
			}
			delete(worseSince, hp)
			evicted[hp] = true
			state, _ := cur.State(ep)
			if n := e.fwd.Evict(ctx, hp, evictionSpread); n > 0 {
				e.log.Info("closed connections to an endpoint worse than another; their clients reconnect to the better one",
					zap.Stringer("endpoint", ep), zap.Stringer("state", state), zap.Stringer("better", better),
					zap.Int("connections", n))
			}
		}
		select {
		case <-cur.Changed():
		case <-probed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// evictable reports whether ep is worse than another endpoint in snap.
func evictable(snap *health.Snapshot, ep resolver.Endpoint) bool {
	state, known := snap.State(ep)
	return known && state < snap.Best()
}

// provenBetter returns the endpoint at hp, and another endpoint in a better state whose last
// probe began at or after since and found it so; ok is false when there is none.
func provenBetter(view *health.View, hp resolver.HostPort, since time.Time) (ep, better resolver.Endpoint, ok bool) {
	snap := view.Snapshot()
	for _, k := range snap.Known() {
		if k.HostPort() == hp {
			ep = k
		}
	}
	state, known := snap.State(ep)
	if !known {
		return ep, better, false
	}
	for _, other := range snap.Known() {
		st, _ := snap.State(other)
		if st <= state {
			continue
		}
		if p, probed := view.LastProbe(other); probed && !p.At.Before(since) && p.Result > state {
			return ep, other, true
		}
	}
	return ep, better, false
}
