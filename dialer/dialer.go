// Package dialer picks an etcd member for each client connection and dials it. It reads the
// health Snapshot without locks, picks the least loaded of the available endpoints (relative
// to their SRV weights, counted from the moment a dial starts), bounds every dial with a
// timeout, and on a failed dial reports the endpoint to the health Manager without waiting and
// moves on to the next one within the same client connection.
package dialer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// ErrNoEndpoint is returned when no endpoint could be dialed for a client.
var ErrNoEndpoint = errors.New("no endpoint could be dialed")

// Dialer connects client connections to etcd members.
type Dialer struct {
	table   *health.Table
	reports health.Reports
	reprobe health.Reprobe
	timeout time.Duration
	net     net.Dialer
	observe Observer         // nil when nobody observes
	now     func() time.Time // the clock that judges whether a timeout was seen late
}

// Observer is told the outcome of every dial to a member, for metrics. It runs on the dialing
// goroutine, so it must not block.
type Observer interface {
	Dialed(ep resolver.Endpoint, took time.Duration, err error)
}

// New returns a Dialer that picks from table, reports failures to reports, asks for re-probes
// on reprobe while nothing is healthy, bounds each dial by timeout, keeps TCP keep-alive on
// every backend connection and tells observe (when not nil) of every dial.
func New(table *health.Table, reports health.Reports, reprobe health.Reprobe, timeout, keepAlive time.Duration, observe Observer) *Dialer {
	return &Dialer{
		table:   table,
		reports: reports,
		reprobe: reprobe,
		timeout: timeout,
		observe: observe,
		net:     net.Dialer{Timeout: timeout, KeepAlive: keepAlive},
		now:     time.Now,
	}
}

// Dial connects to an endpoint in rotation (healthy, or degraded while none is healthy): the
// lowest RFC 2782 priority first, and within it the endpoint with the fewest connections
// relative to its weight (equal shares when all weights are 0), ties round robin; a member
// just back takes new connections at a bounded rate for a while. The connection is counted
// on the endpoint's Load from the moment its dial starts; the caller calls the returned Load's
// Done when the connection ends. When that endpoint fails it tries the rest of its priority,
// then the next priority.
// When none is in rotation, or all of them fail, it tries every other known endpoint as the
// last resort. While no endpoint is healthy it asks for an immediate re-probe, and while none
// is even degraded it holds the client for up to the dial timeout waiting for one. Until the
// first endpoint set is known it waits for one for up to the dial timeout.
func (d *Dialer) Dial(ctx context.Context) (*net.TCPConn, resolver.Endpoint, *health.Load, error) {
	snap, err := d.waitUntil(ctx, knowsEndpoints) // at start-up, before the first set
	if err != nil {
		return nil, resolver.Endpoint{}, nil, err
	}
	if !knowsEndpoints(snap) {
		return nil, resolver.Endpoint{}, nil, fmt.Errorf("no endpoint known yet: %w", ErrNoEndpoint)
	}
	if snap.HealthyCount() == 0 {
		d.reprobe.Offer()
		if snap, err = d.waitUntil(ctx, hasRotation); err != nil {
			return nil, resolver.Endpoint{}, nil, err
		}
	}
	cursor := snap.Next()
	tiers := snap.Tiers()
	for ti := range tiers {
		tier := &tiers[ti]
		eps, loads := tier.Endpoints(), tier.Loads()
		first := tier.Pick(cursor, d.now)
		for i := range eps {
			k := (first + i) % len(eps)
			if c, err := d.dialCounted(ctx, eps[k], loads[k], false); c != nil || err != nil {
				return c, eps[k], loads[k], err
			}
		}
	}
	available := snap.Available()
	for _, ep := range snap.Known() {
		if slices.Contains(available, ep) {
			continue
		}
		load := snap.LoadOf(ep)
		if c, err := d.dialCounted(ctx, ep, load, true); c != nil || err != nil {
			return c, ep, load, err
		}
	}
	return nil, resolver.Endpoint{}, nil, ErrNoEndpoint
}

// dialCounted is dialOne with the attempt counted on load, which keeps counting the
// connection it returns.
func (d *Dialer) dialCounted(ctx context.Context, ep resolver.Endpoint, load *health.Load, lastResort bool) (*net.TCPConn, error) {
	load.Start()
	c, err := d.dialOne(ctx, ep, lastResort)
	if c == nil {
		load.Done()
	}
	return c, err
}

// dialOne dials ep. It returns a connection, or an error that ends the attempt for this client
// (the gateway itself is out of descriptors or ports, or shutting down), or neither when ep
// failed and the next endpoint should be tried. lastResort marks an endpoint already out of
// rotation, whose failure is not news. A timeout the gateway saw late (it was not scheduled)
// is no evidence: the same endpoint is dialed once more at once.
func (d *Dialer) dialOne(ctx context.Context, ep resolver.Endpoint, lastResort bool) (*net.TCPConn, error) {
	for retried := false; ; retried = true {
		began := d.now()
		c, err := d.net.DialContext(ctx, "tcp", ep.Addr())
		if err == nil && d.observe == nil {
			return c.(*net.TCPConn), nil // one clock read on the common path
		}
		took := d.now().Sub(began)
		if d.observe != nil {
			d.observe.Dialed(ep, took, err)
		}
		if err == nil {
			return c.(*net.TCPConn), nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		evidence := classify(err, took, d.timeout)
		switch {
		case evidence == localShortage:
			return nil, fmt.Errorf("dial %s: %w", ep, err)
		case evidence == seenLate && !retried:
			continue
		case evidence >= 0 && !lastResort:
			d.reports.Offer(health.Report{Endpoint: ep, Evidence: evidence, State: health.Down, Reason: err.Error()})
		}
		return nil, nil
	}
}

// What a failed dial may say besides the health package's kinds of evidence: nothing.
const (
	localShortage health.Evidence = -1 // the gateway's own shortage: no news of the member
	seenLate      health.Evidence = -2 // a timeout seen late: no news of the member
)

// classify says what a dial that failed with err after took, bounded by timeout, tells of the
// member:
//   - refused or reset: the process is gone or refusing, down at once (DialRefused);
//   - a timeout or no route to the host or network: toward --health-fall (DialFailed);
//   - a shortage of the gateway's own (descriptors, ports, buffers, memory), or a timeout seen
//     more than half the timeout after its deadline (the gateway was not scheduled): nothing,
//     localShortage or seenLate.
func classify(err error, took, timeout time.Duration) health.Evidence {
	switch member.Classify(err, time.Time{}.Add(timeout), time.Time{}.Add(took), timeout) {
	case member.LocalShortage:
		return localShortage
	case member.Refused:
		return health.DialRefused
	case member.SeenLate:
		return seenLate
	default: // a timeout, EHOSTUNREACH, ENETUNREACH or anything else the member may have caused
		return health.DialFailed
	}
}

// waitUntil returns the latest snapshot once ready accepts it, or when the dial timeout has
// passed, whichever comes first; it does not start a timer when the snapshot is ready already.
func (d *Dialer) waitUntil(ctx context.Context, ready func(*health.Snapshot) bool) (*health.Snapshot, error) {
	snap := d.table.Load()
	if ready(snap) {
		return snap, nil
	}
	t := time.NewTimer(d.timeout)
	defer t.Stop()
	for !ready(snap) {
		select {
		case <-snap.Changed():
			snap = d.table.Load()
		case <-t.C:
			return snap, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return snap, nil
}

func knowsEndpoints(s *health.Snapshot) bool { return len(s.Known()) > 0 }

func hasRotation(s *health.Snapshot) bool { return len(s.Available()) > 0 }
