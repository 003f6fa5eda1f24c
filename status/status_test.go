package status

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/listener"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs s until the returned stop is called, and returns its base URL.
func serve(t *testing.T, s *Server) (string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Serve returned %v after its stop, want context.Canceled", err)
		}
	}
	return "http://" + s.ln.Addr().String(), stop
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// Before the first endpoint set the gateway is alive but not ready, /status lists no endpoint
// (an empty list, not null), and a restarted server answers on the same port.
func TestServerBeforeAnyEndpointAndAfterARestart(t *testing.T) {
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fwd := listener.NewForwarder(listener.ForwarderConfig{Log: zap.NewNop()})
	defer fwd.Shutdown(time.Second, nil)
	s := New(ln, Sources{Table: health.NewTable(), Forwarder: fwd, StaticSource: "endpoints"}, NewDialMetrics(), zap.NewNop())

	base, stop := serve(t, s)
	if code, body := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no endpoint known yet") {
		t.Errorf("/readyz before any endpoint = %d %q, want 503 saying none is known", code, body)
	}
	code, body := get(t, base+"/status")
	var doc Report
	if err := json.Unmarshal([]byte(body), &doc); code != http.StatusOK || err != nil || doc.Ready || doc.Endpoints == nil || len(doc.Endpoints) != 0 {
		t.Errorf("/status = %d %q (%v), want not ready with an empty endpoint list", code, body, err)
	}
	if code, body := get(t, base+"/metrics"); code != http.StatusOK || !strings.Contains(body, "etcd_gateway_build_info{") {
		t.Errorf("/metrics = %d, without build info", code)
	}
	ep := resolver.Endpoint{Host: "127.0.0.1", Port: 2379}
	s.dials.Dialed(ep, 3*time.Millisecond, nil)
	s.dials.Dialed(ep, time.Second, errors.New("connection refused"))
	_, body = get(t, base+"/metrics")
	for _, want := range []string{
		`etcd_gateway_endpoint_dial_failures_total{endpoint="127.0.0.1:2379"} 1`,
		`etcd_gateway_endpoint_dial_duration_seconds_count{endpoint="127.0.0.1:2379"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s after one good and one failed dial", want)
		}
	}
	stop()

	// The supervisor restarts a failed server on the listener it was given: the same port
	// answers again.
	_, stop2 := serve(t, s)
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz after a restart = %d", code)
	}
	stop2()
}
