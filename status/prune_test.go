package status

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
	"github.com/etcd-gateway/etcd-gateway/listener"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// metricsFixture is a status server over a real health Manager and Forwarder.
type metricsFixture struct {
	table   *health.Table
	updates *resolver.Updates
	fwd     *listener.Forwarder
	srv     *Server
	base    string
	now     atomic.Int64 // the fake clock of retention, in Unix nanoseconds
}

func newMetricsFixture(t *testing.T) *metricsFixture {
	f := &metricsFixture{table: health.NewTable(), updates: resolver.NewUpdates()}
	m := health.NewManager(health.ManagerConfig{Table: f.table, Updates: f.updates, Reports: health.NewReports(8), Reprobe: health.NewReprobe(),
		Probe: health.ProbeConfig{Mode: health.CheckTCP, Interval: time.Hour, Timeout: time.Second, RetryDelay: time.Hour, Rise: 1, Fall: 1},
		Log:   zap.NewNop()})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.Serve(ctx)
	}()
	f.now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, f.now.Load()) }
	f.fwd = listener.NewForwarder(listener.ForwarderConfig{Dial: func(ctx context.Context) (*net.TCPConn, resolver.Endpoint, *health.Load, error) {
		ep := f.table.Load().Available()[0]
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", ep.Addr())
		if err != nil {
			return nil, ep, nil, err
		}
		return c.(*net.TCPConn), ep, nil, nil
	}, Known: func(hp resolver.HostPort) bool { return f.table.Load().Knows(hp) }, Now: clock, Log: zap.NewNop()})
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.srv = New(ln, Sources{Table: f.table, Forwarder: f.fwd, StaticSource: "endpoints"}, NewDialMetrics(), zap.NewNop())
	f.srv.gateway.now = clock
	base, stop := serve(t, f.srv)
	f.base = base
	t.Cleanup(func() {
		stop()
		ln.Close()
		cancel()
		wg.Wait()
		f.fwd.Shutdown(time.Second, nil)
	})
	return f
}

// publish makes eps the endpoint set and waits until the table holds exactly them.
func (f *metricsFixture) publish(t *testing.T, eps ...resolver.Endpoint) {
	t.Helper()
	f.updates.Publish(resolver.Normalize(eps))
	deadline := time.NewTimer(defaultWait)
	defer deadline.Stop()
	for {
		snap := f.table.Load()
		if len(snap.Known()) == len(eps) && len(snap.Available()) == len(eps) {
			same := true
			for i, ep := range resolver.Normalize(eps) {
				same = same && snap.Known()[i] == ep
			}
			if same {
				return
			}
		}
		select {
		case <-snap.Changed():
		case <-deadline.C:
			t.Fatalf("the table never held %v: %v", eps, snap.Known())
		}
	}
}

// forwardOne forwards one connection and closes it once a byte has made the round trip.
func (f *metricsFixture) forwardOne(t *testing.T) {
	t.Helper()
	front := testnet.LocalListener(t)
	c, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	accepted, err := front.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f.fwd.Forward(accepted)
	c.SetDeadline(time.Now().Add(defaultWait))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
}

const defaultWait = 10 * time.Second

// scrape returns /metrics, failing unless it answers 200.
func (f *metricsFixture) scrape(t *testing.T) string {
	t.Helper()
	code, body := get(t, f.base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d: %.500s", code, body)
	}
	return body
}

// series counts the lines of body that start with prefix.
func series(body, prefix string) int {
	n := 0
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, prefix) {
			n++
		}
	}
	return n
}

// seriesOf counts the series of metric (its name, or its name with a suffix) whose labels
// include label.
func seriesOf(body, metric, label string) int {
	n := 0
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, metric) && strings.Contains(line, label) {
			n++
		}
	}
	return n
}

// An SRV weight or priority change, or TLS and plain records of one address, keep one series
// per address; an address out of the set for 10 minutes loses its series.
func TestMetricsOnePerAddressAndPruned(t *testing.T) {
	a, b := testnet.Echo(t), testnet.Echo(t)
	epA := resolver.Endpoint{Host: "127.0.0.1", Port: a.Port(), Priority: 10, Weight: 1, Target: "a.example.com"}
	epB := resolver.Endpoint{Host: "127.0.0.1", Port: b.Port(), Priority: 10, Weight: 1, Target: "b.example.com"}
	f := newMetricsFixture(t)
	f.publish(t, epA)
	f.forwardOne(t)
	f.srv.dials.Dialed(epA, time.Millisecond, nil)

	heavier := epA
	heavier.Weight, heavier.Priority = 50, 5
	f.publish(t, heavier)
	f.srv.dials.Dialed(heavier, time.Millisecond, nil)
	f.forwardOne(t)
	both := resolver.Normalize([]resolver.Endpoint{heavier, {Host: heavier.Host, Port: heavier.Port, Target: "a.example.com", TLS: true}})
	if len(both) != 1 || !both[0].TLS {
		t.Fatalf("Normalize kept %v for one address under both SRV names", both)
	}
	f.publish(t, both[0])
	name := `{endpoint="` + epA.HostPort().String() + `"}`
	body := f.scrape(t)
	for _, metric := range []string{"etcd_gateway_endpoint_connections_total", "etcd_gateway_endpoint_dial_duration_seconds_count"} {
		if n := series(body, metric+name); n != 1 {
			t.Errorf("%d series of %s%s, want 1", n, metric, name)
		}
	}
	if !strings.Contains(body, "etcd_gateway_endpoint_connections_total"+name+" 2") {
		t.Errorf("connections before and after the weight change are not counted together:\n%s", body)
	}

	f.publish(t, epB)
	if body := f.scrape(t); series(body, "etcd_gateway_endpoint_connections_total"+name) != 1 {
		t.Fatal("the series of an address that has just left the set are gone already")
	}
	f.now.Add(int64(seriesRetention - time.Second))
	if body := f.scrape(t); series(body, "etcd_gateway_endpoint_connections_total"+name) != 1 {
		t.Fatal("the series of an address are gone before the retention")
	}
	f.now.Add(int64(2 * time.Second))
	body = f.scrape(t)
	for _, metric := range []string{"etcd_gateway_endpoint_connections_total", "etcd_gateway_endpoint_dial_duration_seconds_count", "etcd_gateway_endpoint_bytes_total"} {
		if seriesOf(body, metric, `endpoint="`+epA.HostPort().String()+`"`) > 0 {
			t.Errorf("%s of %s still reported after it left the set for %s", metric, epA.HostPort(), seriesRetention)
		}
	}
	if !strings.Contains(body, `etcd_gateway_rotation{rotation="healthy"} 1`) {
		t.Error("/metrics lacks the rotation")
	}
}
