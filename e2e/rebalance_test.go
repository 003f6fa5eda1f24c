package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
)

// watchedPrefix is the prefix every fleet client watches; their own Puts go elsewhere, so that
// their connections have quiet moments.
const watchedPrefix = "/watched/"

// fleet is long-lived clientv3 clients through a gateway, each holding a watch on
// watchedPrefix and doing a serializable Get and a Put of its own key every period.
type fleet struct {
	failedGets, failedPuts atomic.Int64
	// refusedByEtcd counts requests etcd itself answered with an error (a proposal that timed
	// out across a leader change, during a restart): the connection carried them there and
	// back, so they say nothing of the gateway.
	refusedByEtcd atomic.Int64
	mu            sync.Mutex
	seen          []map[int64]bool // per client, the revisions of the events its watch saw
	firstErrs     []string
	stop          chan struct{}
	wg            sync.WaitGroup
}

func startFleet(t *testing.T, addr string, cfg *tls.Config, n int, period time.Duration) *fleet {
	t.Helper()
	f := &fleet{seen: make([]map[int64]bool, n), stop: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		f.finish()
		cancel()
	})
	var from int64 // every watch starts after this revision, so none misses a put made later
	for i := range n {
		f.seen[i] = map[int64]bool{}
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, DialTimeout: 5 * time.Second, TLS: cfg, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if i == 0 {
			gctx, gcancel := context.WithTimeout(ctx, defaultTestTimeout)
			resp, err := c.Get(gctx, watchedPrefix, clientv3.WithPrefix())
			gcancel()
			if err != nil {
				t.Fatal(err)
			}
			from = resp.Header.Revision
		}
		// No WithRequireLeader: it cancels the watch while a restarted member has no leader yet,
		// and an application's watch resumes instead.
		wch := c.Watch(ctx, watchedPrefix, clientv3.WithPrefix(), clientv3.WithRev(from+1))
		f.wg.Add(2)
		go func() {
			defer f.wg.Done()
			for resp := range wch {
				f.mu.Lock()
				for _, ev := range resp.Events {
					f.seen[i][ev.Kv.ModRevision] = true
				}
				if err := resp.Err(); err != nil && len(f.firstErrs) < 5 {
					f.firstErrs = append(f.firstErrs, fmt.Sprintf("watch %d: %v", i, err))
				}
				f.mu.Unlock()
			}
		}()
		go func() {
			defer f.wg.Done()
			// Each client starts at its own phase, as independent applications do.
			t := time.NewTimer(time.Duration(i) * period / time.Duration(n))
			for {
				select {
				case <-f.stop:
					t.Stop()
					return
				case <-t.C:
				}
				f.op(c, i)
				t.Reset(period)
			}
		}()
	}
	return f
}

// opTimeout bounds each request. A request the gateway cut would fail at once (Unavailable);
// this only has to outlast a leader election during the restarts on a loaded machine.
const opTimeout = 15 * time.Second

// op does one serializable Get and one Put of client i's own key.
func (f *fleet) op(c *clientv3.Client, i int) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := c.Get(ctx, fmt.Sprintf("/own/%d", i), clientv3.WithSerializable()); err != nil {
		f.failed(&f.failedGets, fmt.Sprintf("get %d", i), err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := c.Put(ctx, fmt.Sprintf("/own/%d", i), time.Now().String()); err != nil {
		f.failed(&f.failedPuts, fmt.Sprintf("put %d", i), err)
	}
}

// failed counts a request that failed in count, or in refusedByEtcd when etcd itself answered
// it with an error, and notes it either way.
func (f *fleet) failed(count *atomic.Int64, what string, err error) {
	var answered rpctypes.EtcdError
	if errors.As(err, &answered) {
		f.refusedByEtcd.Add(1)
		f.note(fmt.Sprintf("%s, refused by etcd: %v", what, err))
		return
	}
	count.Add(1)
	f.note(fmt.Sprintf("%s: %v", what, err))
}

func (f *fleet) note(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.firstErrs) < 5 {
		f.firstErrs = append(f.firstErrs, s)
	}
}

// finish stops the clients' requests; their watches end when the test closes them.
func (f *fleet) finish() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
}

// missed returns how many of revs some watch has not seen.
func (f *fleet) missed(revs []int64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, seen := range f.seen {
		for _, r := range revs {
			if !seen[r] {
				n++
			}
		}
	}
	return n
}

// watchedWriter puts a key under watchedPrefix every period, straight to the cluster, and
// keeps the revision of every acknowledged put.
type watchedWriter struct {
	mu   sync.Mutex
	revs []int64
	stop chan struct{}
	done chan struct{}
}

func startWatchedWriter(t *testing.T, c *clientv3.Client, period time.Duration) *watchedWriter {
	w := &watchedWriter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for i := 0; ; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := c.Put(ctx, fmt.Sprintf("%sk%d", watchedPrefix, i), "v")
			cancel()
			if err == nil {
				w.mu.Lock()
				w.revs = append(w.revs, resp.Header.Revision)
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(w.finish)
	return w
}

func (w *watchedWriter) finish() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *watchedWriter) acknowledged() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.revs)
}

// spreadOf returns the connections /status counts on each endpoint, their total and their
// spread (most minus fewest).
func spreadOf(doc statusDoc) (per map[string]int, total, spread int) {
	per = map[string]int{}
	lo, hi := int(^uint(0)>>1), 0
	for _, ep := range doc.Endpoints {
		per[ep.Endpoint] = ep.ActiveConnections
		total += ep.ActiveConnections
		lo, hi = min(lo, ep.ActiveConnections), max(hi, ep.ActiveConnections)
	}
	return per, total, hi - lo
}

// waitHealthy waits until /status says endpoint is healthy.
func waitHealthy(t *testing.T, sc statusClient, endpoint string, within time.Duration) {
	t.Helper()
	if !eventually(within, func() bool {
		for _, ep := range sc.status().Endpoints {
			if ep.Endpoint == endpoint {
				return ep.State == "healthy"
			}
		}
		return false
	}) {
		t.Fatalf("%s never turned healthy: %+v", endpoint, sc.status())
	}
}

// A rolling restart of TLS members with 30 long-lived clients through the gateway: each member
// in turn gets SIGTERM, stays down 3 s, restarts and gets 5 s once healthy. With
// --retry-delay=5m only the fast return path can bring members back in time. The clients end
// spread within 2 over the members, with no failed Get or Put and no event missed by any
// watch, and the members log nothing about the gateway.
func TestRollingRestartEvensOutOnTLSMembers(t *testing.T) {
	t.Parallel()
	c := launchLoggingTLSCluster(t, 3, false)
	gw, sc := startGatewayWithStatus(t, "--endpoints="+endpointsOf(c.members), "--retry-delay=5m")
	for _, m := range c.members {
		waitHealthy(t, sc, m.client, defaultTestTimeout)
	}
	direct := newTLSClient(t, c.clientTLS, endpointsOfList(c.members)...)
	const clients = 30
	fl := startFleet(t, gw.addr, c.clientTLS, clients, 5*time.Second)
	w := startWatchedWriter(t, direct, 10*time.Second)
	if !eventually(defaultTestTimeout, func() bool { _, total, _ := spreadOf(sc.status()); return total == clients }) {
		t.Fatalf("%d connections through the gateway, want %d", func() int { _, n, _ := spreadOf(sc.status()); return n }(), clients)
	}
	before, _, _ := spreadOf(sc.status())
	var warnings []string
	for _, m := range c.members {
		warnings = append(warnings, connectionWarnings(strings.Split(m.proc.out.String(), "\n"))...)
		m.proc.cmd.Process.Signal(syscall.SIGTERM)
		<-m.proc.done
		time.Sleep(3 * time.Second) // the member stays down this long: fault pacing
		m.restart(t)
		began := time.Now()
		waitHealthy(t, sc, m.client, 30*time.Second)
		t.Logf("%s back in rotation %s after it was restarted", m.name, time.Since(began).Round(10*time.Millisecond))
		time.Sleep(5 * time.Second) // the member serves this long before the next restart: pacing
	}
	after, _, _ := spreadOf(sc.status())
	lastRestart := time.Now()
	var even map[string]int
	if !eventually(60*time.Second, func() bool {
		per, total, spread := spreadOf(sc.status())
		even = per
		return total == clients && spread <= 2
	}) {
		t.Fatalf("clients per member %v, want all %d within 2 of each other", even, clients)
	}
	t.Logf("clients per member: before %v, right after the last restart %v, even (%v) %s later",
		before, after, even, time.Since(lastRestart).Round(time.Second))

	w.finish()
	revs := w.acknowledged()
	if !eventually(30*time.Second, func() bool { return fl.missed(revs) == 0 }) {
		missed := fl.missed(revs)
		fl.mu.Lock()
		errs := slices.Clone(fl.firstErrs)
		fl.mu.Unlock()
		t.Errorf("%d acknowledged puts (of %d) missed by the watches: %v", missed, len(revs), errs)
	}
	fl.finish()
	fl.mu.Lock()
	errs := slices.Clone(fl.firstErrs)
	fl.mu.Unlock()
	if n := fl.refusedByEtcd.Load(); n > 0 {
		t.Logf("%d requests refused by etcd itself (a leader change), not counted as failed", n)
	}
	if g, p := fl.failedGets.Load(), fl.failedPuts.Load(); g+p > 0 {
		t.Errorf("%d failed Gets, %d failed Puts: %v", g, p, errs)
	}
	if n := sum1(sc, "etcd_gateway_endpoint_rebalanced_total"); n == 0 {
		t.Error("no connection was rebalanced, yet the loads evened out")
	}
	if !waitLog(gw, "rebalanced connections", 30*time.Second) { // a round ends once the loads are even
		t.Error("the gateway logged no rebalancing round")
	}
	for _, m := range c.members {
		warnings = append(warnings, connectionWarnings(strings.Split(m.proc.out.String(), "\n"))...)
	}
	if len(warnings) > 0 {
		t.Errorf("members logged %d warnings about client connections: %v", len(warnings), warnings[:min(len(warnings), 3)])
	}
}

// sum1 returns the sum of a metric over its series, failing the test when it is absent.
func sum1(sc statusClient, name string) float64 {
	sc.t.Helper()
	v, ok := sum(sc.metrics(), name, nil)
	if !ok {
		sc.t.Fatalf("no metric %s", name)
	}
	return v
}

// A member added to the cluster, followed through the member list, gets its share of the
// long-lived clients already connected.
func TestMemberAddedGetsItsShare(t *testing.T) {
	t.Parallel()
	c := launchCluster(t, 2, &cluster{scheme: "http", flags: func(string) []string { return nil }})
	gw, sc := startGatewayWithStatus(t, "--endpoints="+endpointsOf(c.members), "--endpoints-auto-sync-interval=1s")
	direct := newClient(t, endpointsOfList(c.members)...)
	const clients = 30
	fl := startFleet(t, gw.addr, nil, clients, 5*time.Second)
	startWatchedWriter(t, direct, 10*time.Second)
	if !eventually(defaultTestTimeout, func() bool { _, total, _ := spreadOf(sc.status()); return total == clients }) {
		t.Fatal("the clients never all connected")
	}
	added := c.add(t, "m-added", false)
	var per map[string]int
	if !eventually(90*time.Second, func() bool {
		var total, spread int
		per, total, spread = spreadOf(sc.status())
		return len(per) == 3 && total == clients && spread <= 2 && per[added.client] > 0
	}) {
		t.Fatalf("clients per member %v after %s joined, want its share: %+v\n%s", per, added.client, sc.status(), gw.proc.out)
	}
	fl.finish()
	if n := fl.refusedByEtcd.Load(); n > 0 {
		t.Logf("%d requests refused by etcd itself (a leader change), not counted as failed", n)
	}
	if g, p := fl.failedGets.Load(), fl.failedPuts.Load(); g+p > 0 {
		t.Errorf("%d failed Gets, %d failed Puts: %v", g, p, fl.firstErrs)
	}
	t.Logf("clients per member after a member joined: %v", per)
}

// The gateway's rolling-restart logs and the crash loop's: a member that keeps crashing (up 1
// s, down 1 s) is held out of rotation and does not get every new client, while long-lived
// clients sit on the others.
func TestCrashLoopingMemberIsHeldBack(t *testing.T) {
	t.Parallel()
	members := startCluster(t, 3)
	looping := members[2]
	gw, sc := startGatewayWithStatus(t, "--endpoints="+endpointsOf(members))
	const longLived = 20
	fl := startFleet(t, gw.addr, nil, longLived, 5*time.Second)
	if !eventually(defaultTestTimeout, func() bool { _, total, _ := spreadOf(sc.status()); return total == longLived }) {
		t.Fatal("the clients never all connected")
	}
	totalOf := func() (map[string]float64, float64) {
		per := map[string]float64{}
		var all float64
		for _, m := range members {
			v, _ := sum(sc.metrics(), "etcd_gateway_endpoint_connections_total", map[string]string{"endpoint": m.client})
			per[m.client] = v
			all += v
		}
		return per, all
	}
	stopLoop := make(chan struct{})
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		for {
			looping.proc.kill() // crashes
			select {
			case <-stopLoop:
				return
			case <-time.After(time.Second): // down 1 s: fault pacing
			}
			looping.restart(t)
			select {
			case <-stopLoop:
				return
			case <-time.After(time.Second): // up 1 s, as far as it gets
			}
		}
	}()
	// Let it crash and return a few times before new clients come.
	if !waitLog(gw, "held out of rotation", 30*time.Second) {
		t.Fatal("a member crashing every second was never held out of rotation")
	}
	fromPer, from := totalOf()
	// New clients for 10 s while it crash-loops, paced so as not to load the machine that the
	// other tests share: 2 workers, each a new connection and a Get every 50 ms.
	var newClients sync.WaitGroup
	loadUntil := time.Now().Add(10 * time.Second)
	for w := range 2 {
		newClients.Add(1)
		go func() {
			defer newClients.Done()
			for i := 0; time.Now().Before(loadUntil); i++ {
				oneRequest(gw.addr, fmt.Sprintf("new-%d-%d", w, i))
				time.Sleep(50 * time.Millisecond) // load pacing
			}
		}()
	}
	newClients.Wait()
	close(stopLoop)
	<-loopDone
	toPer, to := totalOf()
	got, all := toPer[looping.client]-fromPer[looping.client], to-from
	if all < 20 {
		t.Fatalf("only %.0f new connections in 10 s", all)
	}
	if got/all > 0.1 {
		t.Fatalf("the crash-looping member got %.0f of %.0f new connections, want it held back", got, all)
	}
	t.Logf("the crash-looping member got %.0f of %.0f new connections", got, all)
	fl.finish()
}

// Rebalancing moves only quiet connections. On one member, behind a relay that holds every
// chunk 3 s: a client doing back-to-back Puts, one whose only Get is in flight, and a quiet
// one whose watch just got an event. When a second member joins, the quiet one moves to it,
// and the other two never move: no Put fails and the Get is answered by the member it was sent
// to.
func TestRebalanceMovesOnlyQuietConnections(t *testing.T) {
	t.Parallel()
	c := launchCluster(t, 2, &cluster{scheme: "http", flags: func(string) []string { return nil }})
	slowMember, freeMember := c.members[0], c.members[1]
	relay, err := testnet.StartRelay(slowMember.client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(relay.Close)
	file := filepath.Join(t.TempDir(), "endpoints")
	writeFile(t, file, relay.Addr()+"\n")
	// TCP probes: the relay's delay must not make the member look down.
	gw, sc := startGatewayWithStatus(t, "--endpoints-file="+file, "--health-check=tcp")
	direct := newClient(t, endpointsOfList(c.members)...)
	slowID, freeID := memberID(t, c, slowMember), memberID(t, c, freeMember)

	busy, slow, quiet := newClient(t, gw.addr), newClient(t, gw.addr), newClient(t, gw.addr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := quiet.Watch(ctx, "/quiet/", clientv3.WithPrefix())
	for _, cl := range []*clientv3.Client{busy, slow, quiet} {
		if _, err := cl.Get(ctx, "hello"); err != nil {
			t.Fatal(err)
		}
	}
	// A Put that etcd itself failed (a leader change or a proposal timeout on this loaded
	// machine) came back over an intact connection: only the others can be a cut connection.
	var puts, failedPuts, refusedByEtcd atomic.Int64
	var firstFailure, firstRefusal error // written by the putter before busyDone closes
	busyDone := make(chan struct{})
	go func() {
		defer close(busyDone)
		for ctx.Err() == nil {
			pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
			began := time.Now()
			_, err := busy.Put(pctx, "/busy", "v")
			pcancel()
			var answered rpctypes.EtcdError
			switch {
			case err == nil:
				puts.Add(1)
			case ctx.Err() != nil:
			case errors.As(err, &answered):
				if refusedByEtcd.Add(1) == 1 {
					firstRefusal = err
				}
			default:
				if failedPuts.Add(1) == 1 {
					firstFailure = fmt.Errorf("after %s: %w", time.Since(began).Round(time.Millisecond), err)
				}
			}
		}
	}()
	if !eventually(defaultTestTimeout, func() bool { per, _, _ := spreadOf(sc.status()); return per[relay.Addr()] == 3 }) {
		t.Fatalf("connections %+v, want the three on %s", sc.status(), relay.Addr())
	}
	time.Sleep(10 * time.Second) // connections younger than 10 s are not moved: pacing

	writeFile(t, file, relay.Addr()+"\n"+freeMember.client+"\n")
	if !eventually(defaultTestTimeout, func() bool { return sc.status().Rebalancing }) {
		t.Fatal("the gateway never saw the loads uneven")
	}
	time.Sleep(5 * time.Second) // the settle time and the round's start jitter pass: pacing

	relay.SetDelay(3 * time.Second)
	type answer struct {
		member uint64
		err    error
	}
	slowAnswer := make(chan answer, 1)
	go func() {
		gctx, gcancel := context.WithTimeout(ctx, 30*time.Second)
		defer gcancel()
		resp, err := slow.Get(gctx, "slow")
		if err != nil {
			slowAnswer <- answer{err: err}
			return
		}
		slowAnswer <- answer{member: resp.Header.MemberId}
	}()
	first, err := direct.Put(ctx, "/quiet/1", "v")
	if err != nil {
		t.Fatal(err)
	}
	if !eventually(30*time.Second, func() bool { per, _, _ := spreadOf(sc.status()); return per[freeMember.client] == 1 }) {
		t.Fatalf("connections %+v, want the quiet one moved to %s", sc.status(), freeMember.client)
	}
	got := <-slowAnswer
	if got.err != nil || got.member != slowID {
		t.Fatalf("the Get in flight: member %x, %v; want answered by %x", got.member, got.err, slowID)
	}
	relay.SetDelay(0)
	second, err := direct.Put(ctx, "/quiet/2", "v")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for len(seen) < 2 {
		select {
		case resp := <-events:
			for _, ev := range resp.Events {
				seen[ev.Kv.ModRevision] = true
			}
		case <-time.After(defaultTestTimeout):
			t.Fatalf("the moved watch saw %v, want revisions %d and %d", seen, first.Header.Revision, second.Header.Revision)
		}
	}
	if !seen[first.Header.Revision] || !seen[second.Header.Revision] {
		t.Fatalf("the moved watch saw %v, want revisions %d and %d", seen, first.Header.Revision, second.Header.Revision)
	}
	cancel()
	<-busyDone
	if n := refusedByEtcd.Load(); n > 0 {
		t.Logf("back-to-back Puts: etcd itself failed %d (the first: %v)", n, firstRefusal)
	}
	if failedPuts.Load() > 0 || puts.Load() == 0 {
		n, _ := sum(sc.metrics(), "etcd_gateway_endpoint_rebalanced_total", map[string]string{"endpoint": relay.Addr()})
		t.Fatalf("back-to-back Puts: %d failed (the first %v), %d acknowledged; %.0f connections rebalanced off the loaded member",
			failedPuts.Load(), firstFailure, puts.Load(), n)
	}
	for name, want := range map[string]struct {
		cl *clientv3.Client
		id uint64
	}{"busy": {busy, slowID}, "in flight": {slow, slowID}, "quiet": {quiet, freeID}} {
		gctx, gcancel := context.WithTimeout(context.Background(), defaultTestTimeout)
		resp, err := want.cl.Get(gctx, "which")
		gcancel()
		if err != nil || resp.Header.MemberId != want.id {
			t.Errorf("the %s client is served by %x (%v), want %x", name, resp.Header.MemberId, err, want.id)
		}
	}
	if n, _ := sum(sc.metrics(), "etcd_gateway_endpoint_rebalanced_total", map[string]string{"endpoint": relay.Addr()}); n != 1 {
		t.Errorf("%.0f connections rebalanced off the loaded member, want the quiet one", n)
	}
}
