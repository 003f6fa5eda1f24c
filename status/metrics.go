package status

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/internal/version"
	"github.com/etcd-gateway/etcd-gateway/listener"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

const namespace = "etcd_gateway"

// dialMetrics are updated by the dialer on every dial to a member.
type dialMetrics struct {
	latency  *prometheus.HistogramVec
	failures *prometheus.CounterVec
	series   sync.Map // resolver.Endpoint → *dialSeries, so that a dial builds no label
}

// dialSeries are one endpoint's dial metrics.
type dialSeries struct {
	latency  prometheus.Observer
	failures prometheus.Counter
}

func newDialMetrics() *dialMetrics {
	return &dialMetrics{
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
func (m *dialMetrics) Dialed(ep resolver.Endpoint, took time.Duration, err error) {
	v, ok := m.series.Load(ep)
	if !ok {
		name := ep.String()
		v, _ = m.series.LoadOrStore(ep, &dialSeries{m.latency.WithLabelValues(name), m.failures.WithLabelValues(name)})
	}
	s := v.(*dialSeries)
	s.latency.Observe(took.Seconds())
	if err != nil {
		s.failures.Inc()
	}
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
}

var (
	activeDesc    = desc("endpoint_connections_active", "Client connections forwarded to the endpoint now.", "endpoint")
	totalDesc     = desc("endpoint_connections_total", "Client connections forwarded to the endpoint.", "endpoint")
	bytesDesc     = desc("endpoint_bytes_total", "Bytes forwarded, by direction: to_endpoint (from clients) or to_client.", "endpoint", "direction")
	evictionsDesc = desc("endpoint_evictions_total", "Connections closed because the endpoint turned unhealthy.", "endpoint")
	healthDesc    = desc("endpoint_health", "1 for the endpoint's current state (healthy, degraded or down), 0 for the others.", "endpoint", "state")
	lookupsDesc   = desc("srv_lookups_total", "SRV discovery lookups.")
	lookupFails   = desc("srv_lookup_failures_total", "SRV discovery lookups that failed; the last good endpoint set was kept.")
	buildDesc     = desc("build_info", "Always 1; the labels say which build runs.", "version", "commit", "goversion")
)

var states = []health.State{health.Healthy, health.Degraded, health.Down}

// gatewayCollector reads the gateway's state at each scrape.
type gatewayCollector struct{ src Sources }

// Describe sends every metric's description.
func (c *gatewayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{activeDesc, totalDesc, bytesDesc, evictionsDesc, healthDesc, buildDesc} {
		ch <- d
	}
	if c.src.Discovery != nil {
		ch <- lookupsDesc
		ch <- lookupFails
	}
}

// Collect sends the current values.
func (c *gatewayCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(buildDesc, prometheus.GaugeValue, 1, version.Version(), version.Commit(), version.GoVersion())
	snap := c.src.Table.Load()
	counters := c.src.Forwarder.Counters()
	for _, ep := range snap.Known() {
		if _, ok := counters[ep]; !ok {
			counters[ep] = listener.EndpointCounters{}
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
	for ep, n := range counters {
		name := ep.String()
		ch <- prometheus.MustNewConstMetric(activeDesc, prometheus.GaugeValue, float64(n.Active), name)
		ch <- prometheus.MustNewConstMetric(totalDesc, prometheus.CounterValue, float64(n.Total), name)
		ch <- prometheus.MustNewConstMetric(evictionsDesc, prometheus.CounterValue, float64(n.Evicted), name)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(n.BytesUp), name, "to_endpoint")
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(n.BytesDown), name, "to_client")
	}
	if c.src.Discovery != nil {
		total, failed := c.src.Discovery.Lookups()
		ch <- prometheus.MustNewConstMetric(lookupsDesc, prometheus.CounterValue, float64(total))
		ch <- prometheus.MustNewConstMetric(lookupFails, prometheus.CounterValue, float64(failed))
	}
}
