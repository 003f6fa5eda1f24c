package status

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etcd-gateway/etcd-gateway/dialer"
	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/internal/version"
	"github.com/etcd-gateway/etcd-gateway/listener"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

const namespace = "etcd_gateway"

// DialMetrics are the dial latency and failure series of each member, updated by the dialer on
// every dial (a dialer.Observer) and exported by the status server.
type DialMetrics struct {
	series sync.Map // resolver.HostPort → *dialSeries
}

// dialSeries are one endpoint's dial metrics.
type dialSeries struct {
	latency  *latencyHistogram
	failures atomic.Uint64
}

// dialBuckets are the upper bounds of the dial latency histogram, in seconds.
var dialBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

var _ dialer.Observer = (*DialMetrics)(nil)

// NewDialMetrics returns empty dial metrics.
func NewDialMetrics() *DialMetrics { return &DialMetrics{} }

// Dialed records one dial.
func (m *DialMetrics) Dialed(ep resolver.Endpoint, took time.Duration, err error) {
	hp := ep.HostPort()
	v, ok := m.series.Load(hp)
	if !ok {
		v, _ = m.series.LoadOrStore(hp, &dialSeries{latency: newLatencyHistogram(dialBuckets)})
	}
	s := v.(*dialSeries)
	s.latency.observe(took.Seconds())
	if err != nil {
		s.failures.Add(1)
	}
}

// addresses returns every address with dial series.
func (m *DialMetrics) addresses() []resolver.HostPort {
	var out []resolver.HostPort
	m.series.Range(func(k, _ any) bool {
		out = append(out, k.(resolver.HostPort))
		return true
	})
	return out
}

// forget drops the dial series of hp.
func (m *DialMetrics) forget(hp resolver.HostPort) { m.series.Delete(hp) }

// addTo adds the dial families to e, one series per address, sorted.
func (m *DialMetrics) addTo(e *exposition) {
	latency := e.family(namespace+"_endpoint_dial_duration_seconds", "Time to connect to the endpoint, successful or not.", histogram)
	failures := e.family(namespace+"_endpoint_dial_failures_total", "Dials to the endpoint that failed.", counter)
	type named struct {
		name   string
		series *dialSeries
	}
	var all []named
	m.series.Range(func(k, v any) bool {
		all = append(all, named{k.(resolver.HostPort).String(), v.(*dialSeries)})
		return true
	})
	slices.SortFunc(all, func(a, b named) int { return strings.Compare(a.name, b.name) })
	for _, s := range all {
		s.series.latency.addTo(latency, "endpoint", s.name)
		failures.add(float64(s.series.failures.Load()), "endpoint", s.name)
	}
}

var rotations = []health.Rotation{health.RotationHealthy, health.RotationDegraded, health.RotationLastResort, health.RotationNone}

// seriesRetention is how long the dial series of an address that left the endpoint set, with
// no live connection, stay, so that a scrape sees its last counts; then they are dropped. The
// Forwarder keeps its counters as long.
const seriesRetention = 10 * time.Minute

var states = []health.State{health.Healthy, health.Degraded, health.Down}

// gatewayCollector reads the gateway's state at each scrape, and collects the dial metrics.
// Every series is keyed by address, so there is one per member whatever its SRV records say;
// the dial series of an address that has been out of the endpoint set for seriesRetention,
// with no connection, are dropped, and the Forwarder drops its counters then.
type gatewayCollector struct {
	src   Sources
	dials *DialMetrics
	now   func() time.Time

	mu   sync.Mutex
	gone map[resolver.HostPort]time.Time // when an address with series was first seen out of the set
}

func newGatewayCollector(src Sources, dials *DialMetrics) *gatewayCollector {
	return &gatewayCollector{src: src, dials: dials, now: time.Now, gone: make(map[resolver.HostPort]time.Time)}
}

// prune drops the dial series of addresses out of the set for seriesRetention, and returns
// the forwarding counters to report.
func (c *gatewayCollector) prune(snap *health.Snapshot) map[resolver.HostPort]listener.EndpointCounters {
	counters := c.src.Forwarder.Counters()
	known := make(map[resolver.HostPort]bool, len(snap.Known()))
	for _, ep := range snap.Known() {
		known[ep.HostPort()] = true
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := make(map[resolver.HostPort]bool)
	for _, hp := range c.dials.addresses() {
		seen[hp] = true
		if known[hp] || counters[hp].Active > 0 {
			delete(c.gone, hp)
			continue
		}
		since, ok := c.gone[hp]
		if !ok {
			c.gone[hp] = now
			continue
		}
		if now.Sub(since) >= seriesRetention {
			c.dials.forget(hp)
			delete(c.gone, hp)
		}
	}
	for hp := range c.gone {
		if !seen[hp] {
			delete(c.gone, hp)
		}
	}
	return counters
}

// addTo adds the gateway's families to e: its build, rotation, endpoints' health and
// forwarding counters, dials, discovery and member list.
func (c *gatewayCollector) addTo(e *exposition) {
	e.family(namespace+"_build_info", "Always 1; the labels say which build runs.", gauge).
		add(1, "commit", version.Commit(), "goversion", version.GoVersion(), "version", version.Version())
	snap := c.src.Table.Load()
	counters := c.prune(snap)
	c.dials.addTo(e) // after prune, so that no pruned series is sent
	rotation := e.family(namespace+"_rotation", "1 for what new connections go to now, 0 for the others: healthy endpoints, degraded ones "+
		"(none healthy), last-resort (none healthy or degraded: every endpoint is tried and no connection is evicted), or none (no endpoint known).", gauge)
	for _, r := range rotations {
		rotation.add(oneIf(r == snap.Rotation()), "rotation", string(r))
	}
	healthFamily := e.family(namespace+"_endpoint_health", "1 for the endpoint's current state (healthy, degraded or down), 0 for the others.", gauge)
	for _, ep := range snap.Known() {
		if _, ok := counters[ep.HostPort()]; !ok {
			counters[ep.HostPort()] = listener.EndpointCounters{}
		}
		state, _ := snap.State(ep)
		for _, s := range states {
			healthFamily.add(oneIf(s == state), "endpoint", ep.String(), "state", s.String())
		}
	}
	active := e.family(namespace+"_endpoint_connections_active", "Client connections forwarded to the endpoint now.", gauge)
	total := e.family(namespace+"_endpoint_connections_total", "Client connections forwarded to the endpoint.", counter)
	evictions := e.family(namespace+"_endpoint_evictions_total", "Connections closed because the endpoint turned unhealthy.", counter)
	rebalanced := e.family(namespace+"_endpoint_rebalanced_total", "Quiet connections closed on the endpoint so that their clients move to a less loaded member.", counter)
	bytesTotal := e.family(namespace+"_endpoint_bytes_total", "Bytes forwarded, by direction: to_endpoint (from clients) or to_client.", counter)
	addresses := slices.SortedFunc(maps.Keys(counters), func(a, b resolver.HostPort) int { return strings.Compare(a.String(), b.String()) })
	for _, hp := range addresses {
		n, name := counters[hp], hp.String()
		active.add(float64(n.Active), "endpoint", name)
		total.add(float64(n.Total), "endpoint", name)
		evictions.add(float64(n.Evicted), "endpoint", name)
		rebalanced.add(float64(n.Rebalanced), "endpoint", name)
		bytesTotal.add(float64(n.BytesDown), "direction", "to_client", "endpoint", name)
		bytesTotal.add(float64(n.BytesUp), "direction", "to_endpoint", "endpoint", name)
	}
	if c.src.Rebalancer != nil {
		e.family(namespace+"_rebalance_spread", "Most minus fewest connections of the healthy members that take new connections, relative to their weights.", gauge).
			add(c.src.Rebalancer.Spread())
	}
	if c.src.Discovery != nil {
		total, failed := c.src.Discovery.Lookups()
		e.family(namespace+"_srv_lookups_total", "SRV discovery lookups.", counter).add(float64(total))
		e.family(namespace+"_srv_lookup_failures_total", "SRV discovery lookups that failed; the last good endpoint set was kept.", counter).add(float64(failed))
	}
	if c.src.MemberList != nil {
		total, failed := c.src.MemberList.Syncs()
		e.family(namespace+"_member_list_syncs_total", "Reads of the cluster's member list (--endpoints-auto-sync-interval).", counter).add(float64(total))
		e.family(namespace+"_member_list_sync_failures_total", "Reads of the member list that failed or were refused; the current endpoint set was kept.", counter).add(float64(failed))
	}
}

// oneIf is 1 when b holds, else 0.
func oneIf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
