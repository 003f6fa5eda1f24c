package status

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
	latency  *prometheus.HistogramVec
	failures *prometheus.CounterVec
	series   sync.Map // resolver.HostPort → *dialSeries, so that a dial builds no label
}

// dialSeries are one endpoint's dial metrics.
type dialSeries struct {
	latency  prometheus.Observer
	failures prometheus.Counter
}

var _ dialer.Observer = (*DialMetrics)(nil)

// NewDialMetrics returns empty dial metrics.
func NewDialMetrics() *DialMetrics {
	return &DialMetrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "endpoint", Name: "dial_duration_seconds",
			Help:    "Time to connect to the endpoint, successful or not.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"endpoint"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "endpoint", Name: "dial_failures_total",
			Help: "Dials to the endpoint that failed.",
		}, []string{"endpoint"}),
	}
}

// Dialed records one dial.
func (m *DialMetrics) Dialed(ep resolver.Endpoint, took time.Duration, err error) {
	hp := ep.HostPort()
	v, ok := m.series.Load(hp)
	if !ok {
		name := hp.String()
		v, _ = m.series.LoadOrStore(hp, &dialSeries{m.latency.WithLabelValues(name), m.failures.WithLabelValues(name)})
	}
	s := v.(*dialSeries)
	s.latency.Observe(took.Seconds())
	if err != nil {
		s.failures.Inc()
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
func (m *DialMetrics) forget(hp resolver.HostPort) {
	m.series.Delete(hp)
	m.latency.DeleteLabelValues(hp.String())
	m.failures.DeleteLabelValues(hp.String())
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
}

var (
	activeDesc     = desc("endpoint_connections_active", "Client connections forwarded to the endpoint now.", "endpoint")
	totalDesc      = desc("endpoint_connections_total", "Client connections forwarded to the endpoint.", "endpoint")
	bytesDesc      = desc("endpoint_bytes_total", "Bytes forwarded, by direction: to_endpoint (from clients) or to_client.", "endpoint", "direction")
	evictionsDesc  = desc("endpoint_evictions_total", "Connections closed because the endpoint turned unhealthy.", "endpoint")
	rebalancedDesc = desc("endpoint_rebalanced_total", "Quiet connections closed on the endpoint so that their clients move to a less loaded member.", "endpoint")
	spreadDesc     = desc("rebalance_spread", "Most minus fewest connections of the healthy members that take new connections, relative to their weights.")
	healthDesc     = desc("endpoint_health", "1 for the endpoint's current state (healthy, degraded or down), 0 for the others.", "endpoint", "state")
	lookupsDesc    = desc("srv_lookups_total", "SRV discovery lookups.")
	lookupFails    = desc("srv_lookup_failures_total", "SRV discovery lookups that failed; the last good endpoint set was kept.")
	syncsDesc      = desc("member_list_syncs_total", "Reads of the cluster's member list (--endpoints-auto-sync-interval).")
	syncFailsDesc  = desc("member_list_sync_failures_total", "Reads of the member list that failed or were refused; the current endpoint set was kept.")
	buildDesc      = desc("build_info", "Always 1; the labels say which build runs.", "version", "commit", "goversion")
	rotationDesc   = desc("rotation", "1 for what new connections go to now, 0 for the others: healthy endpoints, degraded ones "+
		"(none healthy), last-resort (none healthy or degraded: every endpoint is tried and no connection is evicted), or none (no endpoint known).", "rotation")
)

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

// Describe sends every metric's description.
func (c *gatewayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{activeDesc, totalDesc, bytesDesc, evictionsDesc, rebalancedDesc, healthDesc, buildDesc, rotationDesc} {
		ch <- d
	}
	if c.src.Rebalancer != nil {
		ch <- spreadDesc
	}
	c.dials.latency.Describe(ch)
	c.dials.failures.Describe(ch)
	if c.src.Discovery != nil {
		ch <- lookupsDesc
		ch <- lookupFails
	}
	if c.src.MemberList != nil {
		ch <- syncsDesc
		ch <- syncFailsDesc
	}
}

// Collect sends the current values.
func (c *gatewayCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(buildDesc, prometheus.GaugeValue, 1, version.Version(), version.Commit(), version.GoVersion())
	snap := c.src.Table.Load()
	counters := c.prune(snap)
	c.dials.latency.Collect(ch) // after prune, so that no pruned series is sent
	c.dials.failures.Collect(ch)
	for _, r := range rotations {
		v := 0.0
		if r == snap.Rotation() {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(rotationDesc, prometheus.GaugeValue, v, string(r))
	}
	for _, ep := range snap.Known() {
		if _, ok := counters[ep.HostPort()]; !ok {
			counters[ep.HostPort()] = listener.EndpointCounters{}
		}
		state, _ := snap.State(ep)
		for _, s := range states {
			v := 0.0
			if s == state {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(healthDesc, prometheus.GaugeValue, v, ep.String(), s.String())
		}
	}
	for hp, n := range counters {
		name := hp.String()
		ch <- prometheus.MustNewConstMetric(activeDesc, prometheus.GaugeValue, float64(n.Active), name)
		ch <- prometheus.MustNewConstMetric(totalDesc, prometheus.CounterValue, float64(n.Total), name)
		ch <- prometheus.MustNewConstMetric(evictionsDesc, prometheus.CounterValue, float64(n.Evicted), name)
		ch <- prometheus.MustNewConstMetric(rebalancedDesc, prometheus.CounterValue, float64(n.Rebalanced), name)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(n.BytesUp), name, "to_endpoint")
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(n.BytesDown), name, "to_client")
	}
	if c.src.Rebalancer != nil {
		ch <- prometheus.MustNewConstMetric(spreadDesc, prometheus.GaugeValue, c.src.Rebalancer.Spread())
	}
	if c.src.Discovery != nil {
		total, failed := c.src.Discovery.Lookups()
		ch <- prometheus.MustNewConstMetric(lookupsDesc, prometheus.CounterValue, float64(total))
		ch <- prometheus.MustNewConstMetric(lookupFails, prometheus.CounterValue, float64(failed))
	}
	if c.src.MemberList != nil {
		total, failed := c.src.MemberList.Syncs()
		ch <- prometheus.MustNewConstMetric(syncsDesc, prometheus.CounterValue, float64(total))
		ch <- prometheus.MustNewConstMetric(syncFailsDesc, prometheus.CounterValue, float64(failed))
	}
}
