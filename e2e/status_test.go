package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// startGatewayWithStatus is startGatewayArgs with a --metrics-addr, and a client of it.
func startGatewayWithStatus(t *testing.T, args ...string) (*gateway, statusClient) {
	t.Helper()
	return startGatewayOnWithStatus(t, fmt.Sprintf("127.0.0.1:%d", freePort(t)), args...)
}

// startGatewayOnWithStatus is startGatewayWithStatus listening on addr.
func startGatewayOnWithStatus(t *testing.T, addr string, args ...string) (*gateway, statusClient) {
	t.Helper()
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	gw := launchGateway(t, addr, append(args, "--metrics-addr="+metricsAddr)...)
	// The listen address is bound before the metrics address, so this waits for both without
	// a client connection that the gateway would forward to a member: etcd 3.4 logs a warning
	// about a TLS connection closed before its handshake.
	gw.waitAccepting(t, metricsAddr)
	return gw, statusClient{t: t, base: "http://" + metricsAddr}
}

// statusClient reads a gateway's --metrics-addr.
type statusClient struct {
	t    *testing.T
	base string
}

func (s statusClient) get(path string) (int, string) {
	s.t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(s.base + path)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// metrics scrapes /metrics and parses it with Prometheus' own text parser.
func (s statusClient) metrics() map[string]*dto.MetricFamily {
	s.t.Helper()
	code, body := s.get("/metrics")
	if code != http.StatusOK {
		s.t.Fatalf("GET /metrics = %d: %s", code, body)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		s.t.Fatalf("/metrics does not parse as Prometheus text: %v", err)
	}
	return mfs
}

// sum adds the values of every series of name whose labels include want.
func sum(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
	var total float64
	for _, m := range mf.GetMetric() {
		match := true
		for k, v := range want {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Histogram != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total, true
}

// statusDoc is the /status document as the README documents it.
type statusDoc struct {
	Version  string `json:"version"`
	Ready    bool   `json:"ready"`
	Draining bool   `json:"draining"`
	// Rebalancing: a rebalancing round runs.
	Rebalancing bool   `json:"rebalancing"`
	Rotation    string `json:"rotation"`
	Endpoints   []struct {
		Endpoint   string `json:"endpoint"`
		Source     string `json:"source"`
		MemberName string `json:"member_name"`
		MemberID   string `json:"member_id"`
		Target     string `json:"srv_target"`
		Priority   *int   `json:"srv_priority"`
		Weight     *int   `json:"srv_weight"`
		Scheme     string `json:"scheme"`
		State      string `json:"state"`
		Reason     string `json:"reason"`
		Note       string `json:"note"`
		InRotation bool   `json:"in_rotation"`
		LastProbe  *struct {
			At     time.Time `json:"at"`
			Result string    `json:"result"`
			Reason string    `json:"reason"`
		} `json:"last_probe"`
		ActiveConnections int `json:"active_connections"`
	} `json:"endpoints"`
}

func (s statusClient) status() statusDoc {
	s.t.Helper()
	code, body := s.get("/status")
	if code != http.StatusOK {
		s.t.Fatalf("GET /status = %d: %s", code, body)
	}
	var doc statusDoc
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		s.t.Fatalf("/status is not the documented JSON: %v\n%s", err, body)
	}
	return doc
}

// /metrics, /healthz, /readyz and /status follow the connections and the cluster.
func TestMetricsAndStatus(t *testing.T) {
	t.Parallel()
	members := startCluster(t, 3)
	gw, sc := startGatewayWithStatus(t, "--endpoints="+endpointsOf(members))

	if code, body := sc.get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	if !eventually(5*time.Second, func() bool { code, _ := sc.get("/readyz"); return code == http.StatusOK }) {
		_, body := sc.get("/readyz")
		t.Fatalf("/readyz never 200 with a healthy cluster: %s", body)
	}

	mfs := sc.metrics()
	for _, name := range []string{"etcd_gateway_build_info", "etcd_gateway_endpoint_health", "go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := mfs[name]; !ok {
			t.Errorf("/metrics has no %s", name)
		}
	}
	if healthy, _ := sum(mfs, "etcd_gateway_endpoint_health", map[string]string{"state": "healthy"}); healthy != 3 {
		t.Errorf("etcd_gateway_endpoint_health{state=healthy} sums to %v, want 3", healthy)
	}

	cl := newClient(t, gw.addr)
	for i := range 20 {
		if _, err := cl.Put(ctxT(t), fmt.Sprintf("metrics-%d", i), strings.Repeat("v", 1000)); err != nil {
			t.Fatal(err)
		}
	}
	mfs = sc.metrics()
	if active, _ := sum(mfs, "etcd_gateway_endpoint_connections_active", nil); active < 1 {
		t.Errorf("etcd_gateway_endpoint_connections_active = %v with a client connected", active)
	}
	if total, _ := sum(mfs, "etcd_gateway_endpoint_connections_total", nil); total < 1 {
		t.Errorf("etcd_gateway_endpoint_connections_total = %v after a client connected", total)
	}
	if up, _ := sum(mfs, "etcd_gateway_endpoint_bytes_total", map[string]string{"direction": "to_endpoint"}); up < 20_000 {
		t.Errorf("etcd_gateway_endpoint_bytes_total{direction=to_endpoint} = %v after 20 puts of 1000 B", up)
	}
	if down, _ := sum(mfs, "etcd_gateway_endpoint_bytes_total", map[string]string{"direction": "to_client"}); down <= 0 {
		t.Errorf("etcd_gateway_endpoint_bytes_total{direction=to_client} = %v after 20 replies", down)
	}
	if dials, _ := sum(mfs, "etcd_gateway_endpoint_dial_duration_seconds", nil); dials < 1 {
		t.Errorf("etcd_gateway_endpoint_dial_duration_seconds counts %v dials", dials)
	}

	doc := sc.status()
	if !doc.Ready || len(doc.Endpoints) != 3 || doc.Version == "" {
		t.Fatalf("/status = %+v, want ready with 3 endpoints and a version", doc)
	}
	active := 0
	for _, ep := range doc.Endpoints {
		if ep.Source != "endpoints" || ep.State != "healthy" || !ep.InRotation || ep.LastProbe == nil || ep.LastProbe.Result != "healthy" {
			t.Errorf("/status endpoint %+v, want a healthy, probed endpoint from --endpoints in rotation", ep)
		}
		active += ep.ActiveConnections
	}
	if active < 1 {
		t.Errorf("/status counts %d active connections with a client connected", active)
	}

	cl.Close()
	if !eventually(5*time.Second, func() bool {
		a, _ := sum(sc.metrics(), "etcd_gateway_endpoint_connections_active", nil)
		return a == 0
	}) {
		t.Error("etcd_gateway_endpoint_connections_active never went back to 0 after the client left")
	}

	for _, m := range members {
		m.proc.kill()
	}
	if !eventually(10*time.Second, func() bool { code, _ := sc.get("/readyz"); return code == http.StatusServiceUnavailable }) {
		t.Fatal("/readyz still 200 with every member killed")
	}
	if _, body := sc.get("/readyz"); !strings.Contains(body, "no endpoint healthy") || !strings.Contains(body, members[0].client) {
		t.Errorf("/readyz body %q does not say why nor name the endpoints", body)
	}
	if down, _ := sum(sc.metrics(), "etcd_gateway_endpoint_health", map[string]string{"state": "down"}); down != 3 {
		t.Errorf("etcd_gateway_endpoint_health{state=down} = %v with every member killed, want 3", down)
	}
	for _, ep := range sc.status().Endpoints {
		if ep.State != "down" || ep.Reason == "" {
			t.Errorf("/status endpoint %+v with every member killed, want down with a reason", ep)
		}
	}
	for _, m := range members {
		m.restart(t)
	}
	if !eventually(15*time.Second, func() bool { code, _ := sc.get("/readyz"); return code == http.StatusOK }) {
		t.Error("/readyz never 200 again after the cluster came back")
	}
}
