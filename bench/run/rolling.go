package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The rolling restart: 30 long-lived clients through the proxy, each watching a prefix and
// doing a serializable Get and a Put of its own key every 5 s; a writer puts to the watched
// prefix straight to the cluster every 10 s; each member in turn gets SIGTERM, stays down 3 s,
// restarts and serves 5 s once ready. The scenario runs once per proxy and fills several rows.
const (
	rollingClients  = 30
	rollingPeriod   = 5 * time.Second
	rollingWrites   = 10 * time.Second
	rollingWatched  = "/watched/"
	rollingObserved = 60 * time.Second // after the last restart
)

// Row names of the rolling restart, in the order printed.
const (
	rollingAfter   = "rolling restart, 30 clients (HAProxy: balance leastconn): clients per member right after the last restart"
	rolling30s     = "rolling restart: clients per member 30 s later"
	rollingEven    = "rolling restart: seconds from the last restart until even (spread ≤ 2)"
	rollingFailed  = "rolling restart: failed Gets / Puts, acknowledged puts a watch missed"
	rollingFirstIn = "rolling restart: from a member's first ready answer to its first new connection (each restart)"
)

// rollingRestartScenarios returns the rows of the rolling restart; the first runs it and the
// others read what it measured for the same proxy.
func rollingRestartScenarios() []scenario {
	results := map[string]*rollingResult{} // by proxy
	run := func(e *env) (string, error) {
		r, err := rollingRestart(e)
		if err != nil {
			return "", err
		}
		results[e.proxyName] = r
		return r.after, nil
	}
	read := func(field func(*rollingResult) string) func(*env) (string, error) {
		return func(e *env) (string, error) {
			r := results[e.proxyName]
			if r == nil {
				return "", fmt.Errorf("the rolling restart did not run")
			}
			return field(r), nil
		}
	}
	return []scenario{
		{name: rollingAfter, run: run, balance: "leastconn"},
		{name: rolling30s, run: read(func(r *rollingResult) string { return r.later }), reuses: true},
		{name: rollingEven, run: read(func(r *rollingResult) string { return r.even }), reuses: true},
		{name: rollingFailed, run: read(func(r *rollingResult) string { return r.failed }), reuses: true},
		{name: rollingFirstIn, run: read(func(r *rollingResult) string { return r.firstIn }), reuses: true},
	}
}

// rollingResult is what one rolling restart measured, as table cells.
type rollingResult struct {
	after, later, even, failed, firstIn string
}

// rollingFleet is the long-lived clients: which member served each one's last Get, what their
// watches saw, what failed.
type rollingFleet struct {
	mu         sync.Mutex
	on         []uint64 // member ID of each client's last Get
	seen       []map[int64]bool
	failedGets int
	failedPuts int
}

func rollingRestart(e *env) (*rollingResult, error) {
	ids, err := memberIDs(e.cluster)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &rollingFleet{on: make([]uint64, rollingClients), seen: make([]map[int64]bool, rollingClients)}
	direct, err := clientv3.New(clientv3.Config{Endpoints: e.cluster.endpoints(), DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	defer direct.Close()
	// Every watch starts after this revision, so that none misses a put made once it runs.
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	start, err := direct.Get(rctx, rollingWatched, clientv3.WithPrefix())
	rcancel()
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i := range rollingClients {
		c, err := newClient(e.addr)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		f.seen[i] = map[int64]bool{}
		wch := c.Watch(ctx, rollingWatched, clientv3.WithPrefix(), clientv3.WithRev(start.Header.Revision+1))
		wg.Add(2)
		go func() {
			defer wg.Done()
			for resp := range wch {
				f.mu.Lock()
				for _, ev := range resp.Events {
					f.seen[i][ev.Kv.ModRevision] = true
				}
				f.mu.Unlock()
			}
		}()
		go func() {
			defer wg.Done()
			t := time.NewTimer(time.Duration(i) * rollingPeriod / rollingClients)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				f.op(ctx, c, i)
				t.Reset(rollingPeriod)
			}
		}()
	}
	var revsMu sync.Mutex
	var revs []int64
	writerCtx, stopWriter := context.WithCancel(ctx)
	defer stopWriter()
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(rollingWrites)
		defer tick.Stop()
		for i := 0; ; i++ {
			pctx, pcancel := context.WithTimeout(writerCtx, 5*time.Second)
			resp, err := direct.Put(pctx, fmt.Sprintf("%sk%d", rollingWatched, i), "v")
			pcancel()
			if err == nil {
				revsMu.Lock()
				revs = append(revs, resp.Header.Revision)
				revsMu.Unlock()
			}
			select {
			case <-writerCtx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	// A prober: a new connection and a Get every 100 ms, to see when a member gets new ones.
	type served struct {
		at     time.Time
		member uint64
	}
	var probesMu sync.Mutex
	var probes []served
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			c, err := newClient(e.addr)
			if err == nil {
				gctx, gcancel := context.WithTimeout(ctx, 3*time.Second)
				resp, err := c.Get(gctx, "which", clientv3.WithSerializable())
				gcancel()
				if err == nil {
					probesMu.Lock()
					probes = append(probes, served{time.Now(), resp.Header.MemberId})
					probesMu.Unlock()
				}
				c.Close()
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	time.Sleep(2 * rollingPeriod) // every client has done its first Get: pacing

	readies := make([]time.Time, len(e.cluster.members))
	for i, m := range e.cluster.members {
		m.proc.signal(syscall.SIGTERM)
		<-m.proc.done
		time.Sleep(3 * time.Second) // down 3 s: fault pacing
		if err := m.restart(e.etcd); err != nil {
			return nil, err
		}
		ready, ok := firstReady(m.client, 30*time.Second)
		if !ok {
			return nil, fmt.Errorf("%s never ready after its restart", m.name)
		}
		readies[i] = ready
		time.Sleep(5 * time.Second) // serves 5 s before the next restart: pacing
	}
	lastRestart := time.Now()
	res := &rollingResult{after: f.spread(ids)}
	res.even = fmt.Sprintf("never (> %d s)", int(rollingObserved.Seconds()))
	for time.Since(lastRestart) < rollingObserved {
		if res.later == "" && time.Since(lastRestart) >= 30*time.Second {
			res.later = f.spread(ids)
		}
		if res.even == fmt.Sprintf("never (> %d s)", int(rollingObserved.Seconds())) && f.isEven(ids) {
			// Each client reports its member every 5 s: the figure is late by up to that much.
			res.even = fmt.Sprintf("%.0f s", time.Since(lastRestart).Seconds())
		}
		time.Sleep(250 * time.Millisecond)
	}
	var firstIn []string
	probesMu.Lock()
	for i, ready := range readies {
		cell := "never"
		for _, p := range probes {
			if p.member == ids[i] && p.at.After(ready) {
				cell = fmt.Sprintf("%.1f s", p.at.Sub(ready).Seconds())
				break
			}
		}
		firstIn = append(firstIn, cell)
	}
	probesMu.Unlock()
	res.firstIn = strings.Join(firstIn, ", ")
	stopWriter()
	revsMu.Lock()
	acked := slices.Clone(revs)
	revsMu.Unlock()
	time.Sleep(2 * time.Second) // the last events reach the watches: pacing
	f.mu.Lock()
	missed := 0
	for _, seen := range f.seen {
		for _, r := range acked {
			if !seen[r] {
				missed++
			}
		}
	}
	res.failed = fmt.Sprintf("%d / %d, %d missed", f.failedGets, f.failedPuts, missed)
	f.mu.Unlock()
	return res, nil
}

// op does one serializable Get and one Put of client i's own key, and notes which member
// served the Get.
func (f *rollingFleet) op(ctx context.Context, c *clientv3.Client, i int) {
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.Get(octx, fmt.Sprintf("/own/%d", i), clientv3.WithSerializable())
	f.mu.Lock()
	if err != nil && ctx.Err() == nil {
		f.failedGets++
	} else if err == nil {
		f.on[i] = resp.Header.MemberId
	}
	f.mu.Unlock()
	if _, err := c.Put(octx, fmt.Sprintf("/own/%d", i), "v"); err != nil && ctx.Err() == nil {
		f.mu.Lock()
		f.failedPuts++
		f.mu.Unlock()
	}
}

// counts returns how many clients each member of ids served last, in the order of ids.
func (f *rollingFleet) counts(ids []uint64) []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := make([]int, len(ids))
	for _, on := range f.on {
		if k := slices.Index(ids, on); k >= 0 {
			n[k]++
		}
	}
	return n
}

// spread returns the clients per member as a cell, most loaded first: "15/15/0".
func (f *rollingFleet) spread(ids []uint64) string {
	n := f.counts(ids)
	sort.Sort(sort.Reverse(sort.IntSlice(n)))
	var parts []string
	for _, c := range n {
		parts = append(parts, fmt.Sprint(c))
	}
	return strings.Join(parts, "/")
}

// isEven reports whether every client was last served and the members are within 2.
func (f *rollingFleet) isEven(ids []uint64) bool {
	n := f.counts(ids)
	total := 0
	for _, c := range n {
		total += c
	}
	return total == rollingClients && slices.Max(n)-slices.Min(n) <= 2
}

// memberIDs returns the ID of each member of c, in order.
func memberIDs(c *cluster) ([]uint64, error) {
	var ids []uint64
	for _, m := range c.members {
		cl, err := newClient(m.client)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := cl.Status(ctx, m.client)
		cancel()
		cl.Close()
		if err != nil {
			return nil, err
		}
		ids = append(ids, st.Header.MemberId)
	}
	return ids, nil
}

// firstReady polls addr's /readyz every 20 ms and returns when it first answered 200.
func firstReady(addr string, within time.Duration) (time.Time, bool) {
	probe := &http.Client{Timeout: 200 * time.Millisecond}
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if resp, err := probe.Get("http://" + addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Now(), true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Time{}, false
}
