package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/internal/dnstest"
	"github.com/etcd-gateway/etcd-gateway/internal/testcert"
	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
)

// getters are long-lived clientv3 clients through the gateway, each on a connection of its
// own, each doing a Get every 100 ms until stopped.
type getters struct {
	mu      sync.Mutex
	results [][]getResult // per client
	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
}

type getResult struct {
	started, ended time.Time
	member         uint64
	err            error
}

func startGetters(t *testing.T, addr string, cfg *tls.Config, n int, every time.Duration) *getters {
	t.Helper()
	g := &getters{results: make([][]getResult, n), stop: make(chan struct{})}
	for i := range n {
		cl := newTLSClient(t, cfg, addr)
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				started := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				resp, err := cl.Get(ctx, "stop-accepting")
				cancel()
				r := getResult{started: started, ended: time.Now(), err: err}
				if err == nil {
					r.member = resp.Header.MemberId
				}
				g.mu.Lock()
				g.results[i] = append(g.results[i], r)
				g.mu.Unlock()
				select {
				case <-g.stop:
					return
				case <-tick.C:
				}
			}
		}()
	}
	t.Cleanup(g.finish)
	return g
}

// finish stops every client's loop.
func (g *getters) finish() {
	g.stopped.Do(func() { close(g.stop) })
	g.wg.Wait()
}

// each calls f with every client's results so far.
func (g *getters) each(f func(client int, rs []getResult)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, rs := range g.results {
		f(i, rs)
	}
}

// servedSince reports whether every client had a Get succeed that started at or after from,
// served by member when it is not 0.
func (g *getters) servedSince(from time.Time, member uint64) bool {
	all := true
	g.each(func(_ int, rs []getResult) {
		served := false
		for _, r := range rs {
			served = served || r.err == nil && !r.started.Before(from) && (member == 0 || r.member == member)
		}
		all = all && served
	})
	return all
}

// fewestSince returns the fewest Gets any client started at or after from: the clients ran
// when every one of them did a few, however loaded the machine.
func (g *getters) fewestSince(from time.Time) int {
	fewest := -1
	g.each(func(_ int, rs []getResult) {
		n := 0
		for _, r := range rs {
			if !r.started.Before(from) {
				n++
			}
		}
		if fewest < 0 || n < fewest {
			fewest = n
		}
	})
	return fewest
}

// failuresSince returns the Gets started at or after from that failed.
func (g *getters) failuresSince(from time.Time) (total int, failed []string) {
	g.each(func(client int, rs []getResult) {
		for _, r := range rs {
			if r.started.Before(from) {
				continue
			}
			total++
			if r.err != nil {
				failed = append(failed, fmt.Sprintf("client %d, %s after: %v", client, r.started.Sub(from).Round(time.Millisecond), r.err))
			}
		}
	})
	return total, failed
}

// Every member stops accepting new connections but keeps serving the ones it has (seen from
// the network: out of descriptors, or a full accept queue). The gateway finds them all down,
// but with nothing better to move clients to it closes nothing: 16 long-lived clients see no
// failure. When one member accepts again, the others' clients move to it and every client is
// served within 2 s of the gateway finding it healthy. Plain members are listed with
// --endpoints; TLS members are found through _etcd-client-ssl records, verified and probed
// over HTTPS, and their clients speak TLS end to end.
func TestAllMembersStopAccepting(t *testing.T) {
	t.Parallel()
	plain := launchCluster(t, 3, &cluster{scheme: "http", flags: func(string) []string { return nil }})
	secure, caFile := launchTLSCluster(t)
	for _, mode := range []testnet.StopMode{testnet.Refuse, testnet.FullBacklog} {
		t.Run("plain/"+mode.String(), func(t *testing.T) {
			testStopAccepting(t, plain, mode, func(relays []string) []string {
				return []string{"--endpoints=" + strings.Join(relays, ",")}
			})
		})
		t.Run("tls/"+mode.String(), func(t *testing.T) {
			testStopAccepting(t, secure, mode, func(relays []string) []string { return tlsDiscovery(t, relays, caFile) })
		})
	}
}

// tlsDiscovery returns the gateway flags that find TLS members at addrs through
// _etcd-client-ssl records of a DNS server it starts, verified against caFile.
func tlsDiscovery(t *testing.T, addrs []string, caFile string) []string {
	zone := dnstest.Start(t)
	var records []string
	for i, addr := range addrs {
		_, port, _ := net.SplitHostPort(addr)
		target := fmt.Sprintf("m%d.example.com.", i)
		records = append(records, fmt.Sprintf("_etcd-client-ssl._tcp.example.com. 60 IN SRV 0 0 %s %s", port, target),
			target+" 60 IN A 127.0.0.1")
	}
	zone.SetZone(records...)
	return []string{"--discovery-srv=example.com", "--dns-server=" + zone.Addr(), "--trusted-ca-file=" + caFile}
}

// relaysOf starts a relay in front of each member of c, closed when the test ends.
func relaysOf(t *testing.T, c *cluster) ([]*testnet.Relay, []string) {
	t.Helper()
	var relays []*testnet.Relay
	var addrs []string
	for _, m := range c.members {
		r, err := testnet.StartRelay(m.client)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		relays = append(relays, r)
		addrs = append(addrs, r.Addr())
	}
	return relays, addrs
}

// clients is how many long-lived clients the fault tests run.
const clients = 16

// gatewayWithClients starts a gateway with args and a status client, waits until it finds
// every member healthy, and starts the long-lived clients of c through it, each served once.
func gatewayWithClients(t *testing.T, c *cluster, args ...string) (*gateway, statusClient, *getters) {
	t.Helper()
	gw, sc := startGatewayWithStatus(t, args...)
	if !eventually(defaultTestTimeout, func() bool { return sc.status().Rotation == "healthy" }) {
		t.Fatalf("never healthy: %+v", sc.status())
	}
	g := startGetters(t, gw.addr, c.clientTLS, clients, 100*time.Millisecond)
	began := time.Now()
	if !eventually(defaultTestTimeout, func() bool { return g.servedSince(began, 0) }) {
		t.Fatal("not every client was served before the fault")
	}
	return gw, sc, g
}

// healthLog returns the gateway's log lines about members' states, evictions and rotation.
func healthLog(gw *gateway) string {
	var lines []string
	for _, line := range strings.Split(gw.proc.out.String(), "\n") {
		for _, about := range []string{"state changed", "closed connections", "serving from", "endpoint set"} {
			if strings.Contains(line, about) {
				lines = append(lines, line)
				break
			}
		}
	}
	return strings.Join(lines, "\n")
}

// launchTLSCluster starts 3 members that serve clients over TLS only, with certificates for
// example.com and 127.0.0.1 from one CA, and returns the cluster and the CA's file.
func launchTLSCluster(t *testing.T) (*cluster, string) {
	t.Helper()
	ca := testcert.NewCA(t, "cluster CA")
	dir := t.TempDir()
	caFile, cert, key := ca.WriteFiles(t, dir, "member", []string{"example.com"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	c := launchCluster(t, 3, &cluster{
		scheme:    "https",
		flags:     func(string) []string { return []string{"--cert-file", cert, "--key-file", key} },
		clientTLS: &tls.Config{RootCAs: ca.Pool(), ServerName: "example.com"},
	})
	return c, caFile
}

// testStopAccepting runs the fault on c's members behind relays, with a gateway started with
// the flags gatewayArgs gives for the relays' addresses.
func testStopAccepting(t *testing.T, c *cluster, mode testnet.StopMode, gatewayArgs func(relays []string) []string) {
	relays, addrs := relaysOf(t, c)
	// Heartbeats get 500 ms: under make test's parallel load a race-built gateway answering TLS
	// members can miss two 250 ms heartbeats of a healthy member, which is another fault than
	// the one under test.
	gw, sc, g := gatewayWithClients(t, c, append(gatewayArgs(addrs), "--health-heartbeat-timeout=500ms")...)
	onMember := map[uint64]int{}
	g.each(func(_ int, rs []getResult) { onMember[rs[len(rs)-1].member]++ })

	stopped := time.Now()
	for _, r := range relays {
		if err := r.StopAccepting(mode); err != nil {
			t.Fatal(err)
		}
	}
	if !eventually(defaultTestTimeout, func() bool { return sc.status().Rotation == "last-resort" }) {
		t.Fatalf("the gateway never found every member down: %+v", sc.status())
	}
	found := time.Since(stopped)
	window := time.NewTimer(3 * time.Second) // clients keep working on their connections
	<-window.C
	total, failed := g.failuresSince(stopped)
	for _, f := range failed {
		t.Errorf("a Get failed while every member stopped accepting: %s", f)
	}
	if least := g.fewestSince(stopped); least < 3 {
		t.Errorf("a client did only %d Gets after the members stopped accepting (%d in all): the clients did not run", least, total)
	}
	mfs := sc.metrics()
	if evicted, _ := sum(mfs, "etcd_gateway_endpoint_evictions_total", nil); evicted != 0 {
		t.Errorf("%v connections evicted with no member better than another", evicted)
	}
	if rot, _ := sum(mfs, "etcd_gateway_rotation", map[string]string{"rotation": "last-resort"}); rot != 1 {
		t.Errorf("etcd_gateway_rotation{rotation=last-resort} = %v, want 1", rot)
	}
	if n := strings.Count(gw.proc.out.String(), "serving from whatever answers"); n != 1 {
		t.Errorf("logged %d times that the gateway serves from whatever answers, want once", n)
	}
	t.Logf("%s: every member down after %s; %d Gets in the next %s, %d failed; clients per member %v",
		mode, found.Round(time.Millisecond), total, time.Since(stopped).Round(time.Millisecond), len(failed), onMember)
	if t.Failed() {
		t.Logf("the gateway's health log:\n%s", healthLog(gw))
	}

	if err := relays[0].Resume(); err != nil {
		t.Fatal(err)
	}
	if !eventually(defaultTestTimeout, func() bool { return sc.status().Rotation == "healthy" }) {
		t.Fatalf("the member that accepts again never came back: %+v", sc.status())
	}
	healthy := time.Now()
	target := memberID(t, c, c.members[0])
	if !eventually(defaultTestTimeout, func() bool { return g.servedSince(healthy, target) }) {
		t.Fatal("not every client was served by the member that accepts again")
	}
	g.finish()
	slowest := time.Duration(0)
	g.each(func(client int, rs []getResult) {
		for _, r := range rs {
			if r.err == nil && !r.started.Before(healthy) && r.member == target {
				slowest = max(slowest, r.ended.Sub(healthy))
				return
			}
		}
	})
	if slowest > 2*time.Second {
		t.Errorf("the last client was served by the member that accepts again %s after it was healthy, want within 2s", slowest)
	}
	t.Logf("%s: one member accepting again; every client served on it within %s", mode, slowest.Round(time.Millisecond))
}

// The gateway itself is paused twice for 3 s (SIGSTOP, then SIGCONT): its timeouts fire late, and
// that is no evidence against any member. No member leaves rotation, no connection is closed,
// and no Get started after the resume fails. The members are behind relays that add 60 ms
// each way, so that heartbeats and probes are in flight most of the time and the pause finds
// some of them waiting; on plain members, and on TLS members found through _etcd-client-ssl,
// whose heartbeats and probes run over TLS.
func TestGatewayPaused(t *testing.T) {
	t.Parallel()
	t.Run("plain", func(t *testing.T) {
		c := launchCluster(t, 3, &cluster{scheme: "http", flags: func(string) []string { return nil }})
		testPaused(t, c, func(relays []string) []string { return []string{"--endpoints=" + strings.Join(relays, ",")} })
	})
	t.Run("tls", func(t *testing.T) {
		c, caFile := launchTLSCluster(t)
		testPaused(t, c, func(relays []string) []string { return tlsDiscovery(t, relays, caFile) })
	})
}

func testPaused(t *testing.T, c *cluster, gatewayArgs func(relays []string) []string) {
	relays, addrs := relaysOf(t, c)
	for _, r := range relays {
		r.SetDelay(60 * time.Millisecond)
	}
	gw, sc, g := gatewayWithClients(t, c, append(gatewayArgs(addrs),
		"--health-interval=200ms", "--health-timeout=2s", "--health-heartbeat-timeout=500ms")...)
	connections, _ := sum(sc.metrics(), "etcd_gateway_endpoint_connections_total", nil)
	changesBefore := strings.Count(gw.proc.out.String(), "endpoint state changed")

	// Two pauses of 3 s, 1 s apart. With probes every 200 ms taking 120 ms (more over TLS),
	// each pause finds about two in three of them in flight, past their deadline when it
	// ends. The timeouts leave room for a loaded machine and the relays' latency (2 s for
	// probes, 500 ms for heartbeats); a pause still outlasts them.
	pid := gw.proc.cmd.Process.Pid
	var resumed time.Time
	for i := range 2 {
		if i > 0 {
			between := time.NewTimer(time.Second)
			<-between.C
		}
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		if err := testnet.WaitStopped(pid); err != nil {
			syscall.Kill(pid, syscall.SIGCONT)
			t.Fatal(err)
		}
		pause := time.NewTimer(3 * time.Second)
		<-pause.C
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		resumed = time.Now() // Gets in flight during a pause may time out: count from the last
	}
	window := time.NewTimer(3 * time.Second) // time for late timeouts to do any harm
	<-window.C
	g.finish()

	total, failed := g.failuresSince(resumed)
	for _, f := range failed {
		t.Errorf("a Get started after the resume failed: %s", f)
	}
	if least := g.fewestSince(resumed); least < 3 {
		t.Errorf("a client did only %d Gets after the resume (%d in all): the clients did not run", least, total)
	}
	if n := strings.Count(gw.proc.out.String(), "endpoint state changed") - changesBefore; n != 0 {
		t.Errorf("%d members changed state because the gateway was paused:\n%s", n, gw.proc.out)
	}
	mfs := sc.metrics()
	if after, _ := sum(mfs, "etcd_gateway_endpoint_connections_total", nil); after != connections {
		t.Errorf("%v connections before the pause, %v after: clients had to reconnect", connections, after)
	}
	if evicted, _ := sum(mfs, "etcd_gateway_endpoint_evictions_total", nil); evicted != 0 {
		t.Errorf("%v connections evicted", evicted)
	}
	t.Logf("paused twice 3 s: %d Gets after the resume, %d failed, no state change, no connection closed", total, len(failed))
}
