package health

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thejerf/suture/v4"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// probed sends the Manager a probe's verdict on ep and waits until it has been recorded.
func (f *managerFixture) probed(t *testing.T, ep resolver.Endpoint, st State) {
	t.Helper()
	at := time.Now()
	f.reports <- Report{Endpoint: ep, Evidence: Probed, State: st, At: at}
	f.waitRecorded(t, ep, at)
}

// waitRecorded waits until the last probe the Table holds for ep began at at.
func (f *managerFixture) waitRecorded(t *testing.T, ep resolver.Endpoint, at time.Time) {
	t.Helper()
	if !testnet.Eventually(defaultTestTimeout, func() bool {
		p, ok := f.table.LastProbe(ep)
		return ok && p.At.Equal(at)
	}) {
		t.Fatalf("the probe of %s at %s was never recorded", ep, at)
	}
}

// waitFirstProbe waits until ep's prober has reported its first probe, so that it cannot
// land after a report the test sends.
func (f *managerFixture) waitFirstProbe(t *testing.T, ep resolver.Endpoint) {
	t.Helper()
	if !testnet.Eventually(defaultTestTimeout, func() bool { _, ok := f.table.LastProbe(ep); return ok }) {
		t.Fatalf("%s was never probed", ep)
	}
}

// waitProbes waits until n more probes of ep have been recorded.
func (f *managerFixture) waitProbes(t *testing.T, ep resolver.Endpoint, n int) {
	t.Helper()
	for i := range n {
		last, _ := f.table.LastProbe(ep)
		if !testnet.Eventually(defaultTestTimeout, func() bool { p, ok := f.table.LastProbe(ep); return ok && p.At.After(last.At) }) {
			t.Fatalf("%s was probed only %d more times, want %d", ep, i, n)
		}
	}
}

func (f *managerFixture) state(ep resolver.Endpoint) State {
	st, _ := f.table.Load().State(ep)
	return st
}

// The Manager applies rise and fall to probe verdicts: a state changes only after that many
// results in a row, and a result that says nothing breaks no streak.
func TestManagerRiseAndFall(t *testing.T) {
	ep := endpointOf(t, testnet.Echo(t).Addr())
	f := newManagerFixtureProbing(ProbeConfig{Mode: CheckTCP, Interval: time.Hour, Timeout: time.Second, RetryDelay: time.Hour, Rise: 2, Fall: 3})
	f.updates.Publish([]resolver.Endpoint{ep})
	f.run(t)
	f.waitAvailable(t, ep)
	f.waitFirstProbe(t, ep)
	steps := []struct {
		probe  State
		noNews member.Fault
		want   State
	}{
		{Degraded, 0, Healthy}, {Degraded, 0, Healthy}, {Down, member.LocalShortage, Healthy}, {Degraded, 0, Degraded},
		{Healthy, 0, Degraded}, {Down, 0, Degraded}, {Healthy, 0, Degraded}, {Down, member.SeenLate, Degraded},
		{Healthy, 0, Healthy},
	}
	for i, step := range steps {
		at := time.Now()
		f.reports <- Report{Endpoint: ep, Evidence: Probed, State: step.probe, NoNews: step.noNews, At: at}
		f.waitRecorded(t, ep, at)
		if got := f.state(ep); got != step.want {
			t.Fatalf("step %d: after a probe with %s the state is %s, want %s", i, Outcome(step.probe, step.noNews), got, step.want)
		}
	}
}

// A refused dial is evidence enough; a dial that timed out counts toward --health-fall only,
// and asks for a probe at once.
func TestManagerWeighsDialFailures(t *testing.T) {
	ln := testnet.LocalListener(t)
	ep := endpointOf(t, ln.Addr().String())
	f := newManagerFixtureProbing(ProbeConfig{Mode: CheckTCP, Interval: time.Hour, Timeout: time.Second, RetryDelay: time.Hour, Rise: 1, Fall: 2})
	f.updates.Publish([]resolver.Endpoint{ep})
	f.run(t)
	f.waitAvailable(t, ep)
	f.waitFirstProbe(t, ep)
	first, _ := f.table.LastProbe(ep)
	f.reports <- Report{Endpoint: ep, Evidence: DialFailed, State: Down, Reason: "i/o timeout"}
	if !testnet.Eventually(defaultTestTimeout, func() bool { p, _ := f.table.LastProbe(ep); return p.At.After(first.At) }) {
		t.Fatal("a timed-out dial did not ask for a probe")
	}
	if got := f.state(ep); got != Healthy {
		t.Fatalf("one timed-out dial with --health-fall=2 made the member %s", got)
	}
	f.reports <- Report{Endpoint: ep, Evidence: DialRefused, State: Down, Reason: "connection refused"}
	f.waitAvailable(t)
}

// A probe that began before newer evidence changed the state does not undo it: a healthy probe
// that connected just before the member went away is older news than the refused dial.
func TestManagerIgnoresAProbeOlderThanTheState(t *testing.T) {
	ep := endpointOf(t, testnet.Echo(t).Addr())
	other := endpointOf(t, testnet.Echo(t).Addr())
	f := newManagerFixture(time.Hour)
	set := resolver.Normalize([]resolver.Endpoint{ep, other})
	f.updates.Publish(set)
	f.run(t)
	f.waitAvailable(t, set...)
	f.waitFirstProbe(t, ep)
	began := time.Now()
	f.reports <- Report{Endpoint: ep, Evidence: DialRefused, State: Down, Reason: "connection refused"}
	f.waitAvailable(t, other)
	f.reports <- Report{Endpoint: ep, Evidence: Probed, State: Healthy, At: began}
	f.waitRecorded(t, ep, began)
	if got := f.state(ep); got != Down {
		t.Fatalf("a probe begun before the refused dial made the member %s", got)
	}
	f.probed(t, ep, Healthy) // a probe begun after it counts
	if got := f.state(ep); got != Healthy {
		t.Fatalf("a fresh healthy probe left the member %s", got)
	}
}

// A report from a prober the Manager has replaced is dropped: an endpoint removed and added
// again starts from what its new prober finds.
func TestManagerDropsReportsOfAReplacedProber(t *testing.T) {
	ep := endpointOf(t, testnet.Echo(t).Addr())
	other := endpointOf(t, testnet.Echo(t).Addr())
	f := newManagerFixture(time.Hour)
	f.updates.Publish([]resolver.Endpoint{ep})
	f.run(t)
	f.waitAvailable(t, ep)
	f.updates.Publish([]resolver.Endpoint{other})
	f.waitAvailable(t, other)
	f.updates.Publish(resolver.Normalize([]resolver.Endpoint{ep, other}))
	f.waitAvailable(t, resolver.Normalize([]resolver.Endpoint{ep, other})...)
	f.waitFirstProbe(t, ep)

	f.reports <- Report{Endpoint: ep, Evidence: HeartbeatsLost, State: Down, Reason: "from the first prober", Gen: 1}
	f.probed(t, ep, Healthy) // processed after the stale one
	if got := f.state(ep); got != Healthy {
		t.Fatalf("a report of the endpoint's first prober made it %s after it was added again", got)
	}
}

// panicOnce is a service that panics once, when armed, and otherwise runs the service it wraps.
type panicOnce struct {
	suture.Service
	arm chan struct{} // one token: the next Serve in progress panics
}

func (p *panicOnce) Serve(ctx context.Context) error {
	inner, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Service.Serve(inner) }()
	select {
	case <-p.arm:
		cancel()
		<-done
		panic("injected prober panic")
	case err := <-done:
		return err
	}
}

// A prober that panics while its member is down is restarted, and the member is back in
// rotation soon after it answers again: the restarted prober holds no stale state.
func TestProberPanicWhileDownKeepsNoStaleState(t *testing.T) {
	ln := testnet.LocalListener(t)
	addr := ln.Addr().String()
	down := endpointOf(t, addr)
	other := endpointOf(t, testnet.Echo(t).Addr())
	set := resolver.Normalize([]resolver.Endpoint{down, other})
	f := newManagerFixture(50 * time.Millisecond)
	arm := make(chan struct{}, 1)
	f.m.wrapProber = func(s suture.Service) suture.Service {
		if s.(*Prober).ep == down {
			return &panicOnce{Service: s, arm: arm}
		}
		return s
	}
	f.updates.Publish(set)
	f.run(t)
	f.waitAvailable(t, set...)
	f.waitFirstProbe(t, down)
	ln.Close()
	f.reports <- Report{Endpoint: down, Evidence: DialRefused, State: Down, Reason: "connection refused"}
	f.waitAvailable(t, other)

	arm <- struct{}{}
	if !testnet.Eventually(defaultTestTimeout, func() bool { return len(arm) == 0 }) {
		t.Fatal("the prober never took the panic")
	}
	back, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	defer back.Close()
	began := time.Now()
	f.waitAvailable(t, set...)
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("in rotation %s after it answered again, want within 2s", took)
	}
}

// While no member is healthy every arriving client asks for a re-probe; each member is probed
// at most 4 times a second however many ask.
func TestReprobesAreBounded(t *testing.T) {
	var readyz atomic.Int64
	ep := fakeMember(t, map[string]http.HandlerFunc{
		"/readyz": func(w http.ResponseWriter, r *http.Request) {
			readyz.Add(1)
			answer(503, "[-]linearizable_read failed: no leader\n")(w, r)
		},
		"/livez": answer(200, "ok\n"),
	}, nil)
	f := newManagerFixtureProbing(ProbeConfig{Mode: CheckReadyz, Interval: time.Hour, Timeout: time.Second, RetryDelay: time.Hour, Rise: 1, Fall: 1})
	f.updates.Publish([]resolver.Endpoint{ep})
	f.run(t)
	if !testnet.Eventually(defaultTestTimeout, func() bool { return f.state(ep) == Degraded }) {
		t.Fatal("a member answering 503 never became degraded")
	}
	before := readyz.Load()
	began := time.Now()
	for time.Since(began) < time.Second {
		f.reprobe.Offer() // thousands of arriving clients
		pace := time.NewTimer(100 * time.Microsecond)
		<-pace.C
	}
	took := time.Since(began)
	settle := time.NewTimer(reprobeGap) // a re-probe asked at the end may still run
	<-settle.C
	got := readyz.Load() - before
	limit := int64(took/reprobeGap) + 2
	if got > limit {
		t.Fatalf("%d re-probes in %s, want at most %d (4 a second)", got, took, limit)
	}
	if got < 2 {
		t.Fatalf("%d re-probes in %s: arriving clients must still be able to ask", got, took)
	}
	if got := f.table.Load().Available(); !slices.Equal(got, []resolver.Endpoint{ep}) {
		t.Fatalf("available = %v, want the degraded member", got)
	}
}

// Once the first endpoint set is known the Manager logs etcd's gateway's own line, once.
func TestManagerLogsReadyToProxyOnce(t *testing.T) {
	f := newManagerFixture(time.Second)
	f.run(t)
	a, b := endpointOf(t, testnet.ClosedPort(t)), endpointOf(t, testnet.ClosedPort(t))
	f.updates.Publish([]resolver.Endpoint{a})
	if !testnet.Eventually(defaultTestTimeout, func() bool { return len(f.table.Load().Known()) == 1 }) {
		t.Fatal("the first set was never applied")
	}
	f.updates.Publish(resolver.Normalize([]resolver.Endpoint{a, b}))
	if !testnet.Eventually(defaultTestTimeout, func() bool { return len(f.table.Load().Known()) == 2 }) {
		t.Fatal("the second set was never applied")
	}
	ready := f.logs.FilterMessage("ready to proxy client requests")
	if ready.Len() != 1 {
		t.Fatalf("%d ready lines, want 1", ready.Len())
	}
	if got := fmt.Sprint(ready.All()[0].ContextMap()["endpoints"]); !strings.Contains(got, a.String()) {
		t.Errorf("the ready line lists %s, want the first set", got)
	}
}
