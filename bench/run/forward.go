package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// forwardCandidate is a target of the forward suite: a proxy, or direct connections.
type forwardCandidate struct {
	name  string
	start func(addr string, endpoints []string) (*process, error) // nil: direct
}

// baselineName is the candidate of -baseline: an earlier build of etcd-gateway, measured in the
// same run so that a change to the data path is judged against what it replaces.
const baselineName = "etcd-gateway (baseline)"

func forwardCandidates(gateway, baseline, etcd, haproxy, work string) []forwardCandidate {
	startGateway := func(bin string) func(addr string, eps []string) (*process, error) {
		return func(addr string, eps []string) (*process, error) {
			// The echo servers speak no HTTP: probe them as HAProxy does, by TCP.
			return start(bin, "start", "--listen-addr="+addr, "--endpoints="+strings.Join(eps, ","),
				"--health-check=tcp", "--log-level=error")
		}
	}
	candidates := []forwardCandidate{
		{name: "direct"},
		{"etcd gateway", func(addr string, eps []string) (*process, error) {
			return start(etcd, "gateway", "start", "--listen-addr="+addr, "--endpoints="+strings.Join(eps, ","))
		}},
		{"HAProxy", func(addr string, eps []string) (*process, error) {
			cfg := filepath.Join(work, "haproxy-fwd-"+strings.ReplaceAll(addr, ":", "-")+".cfg")
			var b strings.Builder
			fmt.Fprintf(&b, "global\n    maxconn 9000\n    maxpipes 400\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1h\n    timeout server 1h\n"+
				"frontend f\n    bind %s\n    default_backend b\nbackend b\n    balance roundrobin\n    option splice-auto\n", addr)
			for i, ep := range eps {
				fmt.Fprintf(&b, "    server s%d %s check inter 1s\n", i, ep)
			}
			if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
				return nil, err
			}
			return start(haproxy, "-db", "-f", cfg)
		}},
		{"etcd-gateway", startGateway(gateway)},
	}
	if baseline != "" {
		candidates = append(candidates, forwardCandidate{baselineName, startGateway(baseline)})
	}
	return candidates
}

// inTurn returns the candidates in the order of repetition rep: as listed, then reversed, and
// so on. The machine's state drifts while a run goes on (etcd's, the page cache's), and a
// fixed order let the same build, measured twice in one run, differ by 6 % on etcd gets
// depending on its place.
func inTurn(candidates []forwardCandidate, rep int) []forwardCandidate {
	out := slices.Clone(candidates)
	if rep%2 == 1 {
		slices.Reverse(out)
	}
	return out
}

// results holds every repetition of every figure: results[metric][candidate].
type results map[string]map[string][]float64

func (r results) add(metric, candidate string, v float64) {
	if r[metric] == nil {
		r[metric] = map[string][]float64{}
	}
	r[metric][candidate] = append(r[metric][candidate], v)
}

func (r results) median(metric, candidate string) (float64, bool) {
	vs := slices.Clone(r[metric][candidate])
	if len(vs) == 0 {
		return 0, false
	}
	slices.Sort(vs)
	return vs[len(vs)/2], true
}

// metric is one row of the table.
type metric struct {
	name string
	unit string
}

// The idle rows: etcd's gateway is measured with 3,000 connections, all it can hold. Idle CPU
// is read from /proc in clock ticks (10 ms): over idleWindow that is 0.07 % of a core.
const (
	idleCPU    = "idle in front of 3 etcd members, no clients, 15 s: CPU (ours probes /readyz every 1 s, heartbeat every 250 ms)"
	idleWindow = 15 * time.Second

	idleRSS = "5,000 idle connections (etcd gateway: 3,000): RSS per connection"
	idleFDs = "5,000 idle connections (etcd gateway: 3,000): descriptors per connection"
)

var forwardMetrics = []metric{
	{"ping-pong 64 B, 1 connection: round trips/s", ""},
	{"ping-pong 64 B, 1 connection: p50 latency", "µs"},
	{"ping-pong 64 B, 1 connection: p99 latency", "µs"},
	{"ping-pong 64 B, 1 connection: latency added over direct (p50)", "µs"},
	{"ping-pong 64 B, 64 connections: round trips/s", ""},
	{"ping-pong 64 B, 64 connections: proxy CPU per 1000 round trips", "ms"},
	{"bulk echo, 4 connections", "MiB/s"},
	{"connect + 1 byte + close, 16 workers: connections/s", ""},
	{idleRSS, "KiB"},
	{idleFDs, ""},
	{"concurrent connections held under a 20,000 descriptor limit (tried up to 10,000)", ""},
	{"etcd serializable get, 8 connections, 64 in flight: ops/s", ""},
	{"etcd serializable get: p99", "ms"},
	{"etcd serializable get: proxy CPU per 1000 ops", "ms"},
	{"etcd put 256 B, 8 connections, 64 in flight: ops/s", ""},
	{"etcd put 256 B: p99", "ms"},
	{"etcd put 256 B: proxy CPU per 1000 ops", "ms"},
	{idleCPU, "% of a core"},
	{"RSS after start-up, 3 endpoints", "KiB"},
	{"time from start to accepting", "ms"},
	{"binary size", "MiB"},
}

// forwardParts parses -parts: "raw", "etcd", or both, comma-separated.
func forwardParts(spec string) (raw, etcd bool, err error) {
	for part := range strings.SplitSeq(spec, ",") {
		switch strings.TrimSpace(part) {
		case "raw":
			raw = true
		case "etcd":
			etcd = true
		default:
			return false, false, fmt.Errorf("-parts=%q: give raw, etcd, or raw,etcd", spec)
		}
	}
	return raw, etcd, nil
}

func runForward(gateway, baseline, etcd, haproxy, work, parts string, reps int) {
	runRaw, runEtcd, err := forwardParts(parts)
	if err != nil {
		fail(err)
	}
	if baseline != "" {
		if _, err := os.Stat(baseline); err != nil {
			fail(fmt.Errorf("-baseline: %v; give the path of an etcd-gateway binary, or leave it out", err))
		}
	}
	r := results{}
	candidates := forwardCandidates(gateway, baseline, etcd, haproxy, work)
	if runRaw {
		echoes, echoProc, err := startEchoes()
		if err != nil {
			fail(err)
		}
		defer echoProc.kill()
		for rep := range reps {
			for _, c := range inTurn(candidates, rep) {
				fmt.Fprintf(os.Stderr, "raw forwarding, %s, repetition %d\n", c.name, rep+1)
				if err := measureRaw(r, c, echoes, rep == 0); err != nil {
					fmt.Fprintf(os.Stderr, "  %s: %v\n", c.name, err)
				}
			}
		}
	}
	if runEtcd {
		cl, err := startCluster(etcd)
		if err != nil {
			fail(err)
		}
		defer cl.stop()
		for rep := range reps {
			for _, c := range inTurn(candidates, rep) {
				fmt.Fprintf(os.Stderr, "etcd workloads, %s, repetition %d\n", c.name, rep+1)
				if err := measureEtcd(r, c, cl.endpoints()); err != nil {
					fmt.Fprintf(os.Stderr, "  %s: %v\n", c.name, err)
				}
			}
		}
	}
	if fi, err := os.Stat(gateway); err == nil {
		r.add("binary size", "etcd-gateway", float64(fi.Size())/(1<<20))
	}
	if fi, err := os.Stat(baseline); err == nil {
		r.add("binary size", baselineName, float64(fi.Size())/(1<<20))
	}
	if fi, err := os.Stat(etcd); err == nil {
		r.add("binary size", "etcd gateway", float64(fi.Size())/(1<<20))
	}
	if fi, err := os.Stat(haproxy); err == nil {
		r.add("binary size", "HAProxy", float64(fi.Size())/(1<<20))
	}
	printForward(r, candidates, reps)
}

// measureRaw runs the raw forwarding workloads against one candidate in front of the echoes.
func measureRaw(r results, c forwardCandidate, echoes []string, limitTest bool) error {
	addr := echoes[0]
	var p *process
	if c.start != nil {
		addr = "127.0.0.1:" + itoa(freePort())
		began := time.Now()
		var err error
		if p, err = c.start(addr, echoes); err != nil {
			return err
		}
		defer p.kill()
		if err := waitAccepting(addr); err != nil {
			return err
		}
		r.add("time from start to accepting", c.name, float64(time.Since(began).Microseconds())/1000)
		time.Sleep(time.Second)
		r.add("RSS after start-up, 3 endpoints", c.name, float64(rssKiB(p.cmd.Process.Pid)))
	}
	const d = 2 * time.Second
	rtps, p50, p99 := pingPong(addr, 1, d)
	r.add("ping-pong 64 B, 1 connection: round trips/s", c.name, rtps)
	r.add("ping-pong 64 B, 1 connection: p50 latency", c.name, p50)
	r.add("ping-pong 64 B, 1 connection: p99 latency", c.name, p99)
	cpu0 := procCPU(p)
	rtps, _, _ = pingPong(addr, 64, d)
	r.add("ping-pong 64 B, 64 connections: round trips/s", c.name, rtps)
	if p != nil {
		r.add("ping-pong 64 B, 64 connections: proxy CPU per 1000 round trips", c.name,
			float64((procCPU(p)-cpu0).Milliseconds())/(rtps*d.Seconds()/1000))
	}
	r.add("bulk echo, 4 connections", c.name, bulk(addr, 4, d))
	r.add("connect + 1 byte + close, 16 workers: connections/s", c.name, churn(addr, 16, d))
	if p == nil {
		return nil
	}
	n := 5000
	if c.name == "etcd gateway" {
		n = 3000 // at six descriptors per connection it dies before 5,000 under the limit
	}
	rss, fds, err := idle(p.cmd.Process.Pid, addr, n)
	if err != nil {
		return err
	}
	r.add(idleRSS, c.name, rss)
	r.add(idleFDs, c.name, fds)
	if limitTest {
		r.add("concurrent connections held under a 20,000 descriptor limit (tried up to 10,000)", c.name, float64(maxConns(addr, 10000)))
	}
	return nil
}

func procCPU(p *process) time.Duration {
	if p == nil {
		return 0
	}
	return cpuTime(p.cmd.Process.Pid)
}

// waitAccepting polls addr every millisecond until it accepts.
func waitAccepting(addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 50*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("nothing accepts on %s", addr)
}

// latencies collects the latencies of many goroutines.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration
}

// add appends one goroutine's latencies.
func (l *latencies) add(mine []time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, mine...)
	l.mu.Unlock()
}

// sorted returns the latencies in order; call it after every goroutine has added its own.
func (l *latencies) sorted() []time.Duration {
	slices.Sort(l.all)
	return l.all
}

// pingPong sends 64 B and waits for the echo, on conns connections for d. It returns round
// trips per second and the p50 and p99 latency in microseconds.
func pingPong(addr string, conns int, d time.Duration) (float64, float64, float64) {
	var lats latencies
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer c.Close()
			msg, got := make([]byte, 64), make([]byte, 64)
			var mine []time.Duration
			for time.Now().Before(stop) {
				t0 := time.Now()
				if _, err := c.Write(msg); err != nil {
					break
				}
				if _, err := io.ReadFull(c, got); err != nil {
					break
				}
				mine = append(mine, time.Since(t0))
			}
			lats.add(mine)
		}()
	}
	wg.Wait()
	lat := lats.sorted()
	if len(lat) == 0 {
		return 0, 0, 0
	}
	us := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Nanoseconds()) / 1000 }
	return float64(len(lat)) / d.Seconds(), us(0.5), us(0.99)
}

// bulk writes continuously on conns connections and reads the echo back for d; MiB/s echoed.
func bulk(addr string, conns int, d time.Duration) float64 {
	var total atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			continue
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			chunk := make([]byte, 64<<10)
			for time.Now().Before(stop) {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
			c.(*net.TCPConn).CloseWrite()
		}()
		go func() {
			defer wg.Done()
			defer c.Close()
			buf := make([]byte, 64<<10)
			c.SetReadDeadline(stop.Add(time.Second))
			for {
				n, err := c.Read(buf)
				if time.Now().Before(stop) {
					total.Add(int64(n))
				}
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return float64(total.Load()) / (1 << 20) / d.Seconds()
}

// churn connects, sends 1 byte, reads it back and closes, with workers in parallel for d.
func churn(addr string, workers int, d time.Duration) float64 {
	var total atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 1)
			for time.Now().Before(stop) {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					continue
				}
				c.SetDeadline(time.Now().Add(time.Second))
				if _, err := c.Write(b); err == nil {
					if _, err := io.ReadFull(c, b); err == nil {
						total.Add(1)
					}
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	return float64(total.Load()) / d.Seconds()
}

// openEchoed opens n connections to addr, each with a 1-byte round trip so that the proxy has
// connected its backend side, 8 at a time. It returns the connections it could open.
func openEchoed(addr string, n int) []net.Conn {
	conns := make([]net.Conn, n)
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 1)
			for !failed.Load() {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err == nil {
					c.SetDeadline(time.Now().Add(2 * time.Second))
					if _, err = c.Write(b); err == nil {
						_, err = io.ReadFull(c, b)
					}
					c.SetDeadline(time.Time{})
				}
				if err != nil {
					if c != nil {
						c.Close()
					}
					failed.Store(true)
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	return slices.DeleteFunc(conns, func(c net.Conn) bool { return c == nil })
}

// idle holds n connections open through the proxy and returns its RSS (KiB) and descriptors
// per connection.
func idle(pid int, addr string, n int) (float64, float64, error) {
	rss0, fds0 := rssKiB(pid), openFDs(pid)
	conns := openEchoed(addr, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if len(conns) < n {
		return 0, 0, fmt.Errorf("held only %d of %d idle connections", len(conns), n)
	}
	time.Sleep(time.Second)
	return float64(rssKiB(pid)-rss0) / float64(n), float64(openFDs(pid)-fds0) / float64(n), nil
}

// maxConns opens connections until one fails or limit is reached, and returns how many were
// held at once.
func maxConns(addr string, limit int) int {
	conns := openEchoed(addr, limit)
	held := len(conns)
	for _, c := range conns {
		c.Close()
	}
	return held
}

// measureEtcd runs the etcd workloads against one candidate in front of the cluster.
func measureEtcd(r results, c forwardCandidate, endpoints []string) error {
	addrs := endpoints
	var p *process
	if c.start != nil {
		addr := "127.0.0.1:" + itoa(freePort())
		var err error
		if p, err = c.start(addr, endpoints); err != nil {
			return err
		}
		defer p.kill()
		if err := waitAccepting(addr); err != nil {
			return err
		}
		time.Sleep(time.Second)
		cpu0 := procCPU(p)
		time.Sleep(idleWindow)
		r.add(idleCPU, c.name, 100*float64(procCPU(p)-cpu0)/float64(idleWindow))
		addrs = []string{addr}
	}
	value := strings.Repeat("v", 256)
	for _, w := range []struct {
		name string
		op   func(cl *clientv3.Client, i int) error
	}{
		{"etcd serializable get", func(cl *clientv3.Client, i int) error {
			_, err := cl.Get(context.Background(), "bench", clientv3.WithSerializable())
			return err
		}},
		{"etcd put 256 B", func(cl *clientv3.Client, i int) error {
			_, err := cl.Put(context.Background(), "bench/"+itoa(i%1000), value)
			return err
		}},
	} {
		cpu0 := procCPU(p)
		ops, p99, err := etcdLoad(addrs, 3*time.Second, w.op)
		if err != nil {
			return err
		}
		label := w.name + ", 8 connections, 64 in flight: ops/s"
		r.add(label, c.name, ops)
		r.add(w.name+": p99", c.name, p99)
		if p != nil {
			r.add(w.name+": proxy CPU per 1000 ops", c.name, float64((procCPU(p)-cpu0).Milliseconds())/(ops*3/1000))
		}
	}
	return nil
}

// etcdLoad runs op from 8 clients with 8 requests in flight each for d, and returns ops/s and
// the p99 latency in ms.
func etcdLoad(addrs []string, d time.Duration, op func(*clientv3.Client, int) error) (float64, float64, error) {
	var clients []*clientv3.Client
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	for i := range 8 {
		cl, err := newClient(addrs[i%len(addrs)])
		if err != nil {
			return 0, 0, err
		}
		clients = append(clients, cl)
	}
	var lats latencies
	var errs atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for ci, cl := range clients {
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				for i := ci*1000 + g; time.Now().Before(stop); i += 64 {
					t0 := time.Now()
					if err := op(cl, i); err != nil {
						errs.Add(1)
						continue
					}
					mine = append(mine, time.Since(t0))
				}
				lats.add(mine)
			}()
		}
	}
	wg.Wait()
	lat := lats.sorted()
	if len(lat) == 0 {
		return 0, 0, fmt.Errorf("no request succeeded (%d errors)", errs.Load())
	}
	return float64(len(lat)) / d.Seconds(), float64(lat[len(lat)*99/100].Microseconds()) / 1000, nil
}

// printForward prints the medians, and etcd-gateway's figure divided by each peer's.
func printForward(r results, candidates []forwardCandidate, reps int) {
	ours := "etcd-gateway"
	fmt.Printf("\nMedian of %d repetitions (the descriptor-limit row: one run).\n\n| workload |", reps)
	for _, c := range candidates {
		fmt.Printf(" %s |", c.name)
	}
	for _, c := range candidates {
		if c.name != ours {
			fmt.Printf(" ours / %s |", c.name)
		}
	}
	fmt.Printf("\n|---|")
	for range 2*len(candidates) - 1 {
		fmt.Printf("---|")
	}
	fmt.Println()
	for _, m := range forwardMetrics {
		name := m.name
		if m.unit != "" {
			name += " (" + m.unit + ")"
		}
		if m.name == "ping-pong 64 B, 1 connection: latency added over direct (p50)" {
			direct, ok := r.median("ping-pong 64 B, 1 connection: p50 latency", "direct")
			if ok {
				for _, c := range candidates[1:] {
					if v, ok := r.median("ping-pong 64 B, 1 connection: p50 latency", c.name); ok {
						r.add(m.name, c.name, v-direct)
					}
				}
			}
		}
		fmt.Printf("| %s |", name)
		for _, c := range candidates {
			if v, ok := r.median(m.name, c.name); ok {
				fmt.Printf(" %s |", format(v))
			} else {
				fmt.Printf(" – |")
			}
		}
		mine, haveMine := r.median(m.name, ours)
		for _, c := range candidates {
			if c.name == ours {
				continue
			}
			if v, ok := r.median(m.name, c.name); ok && haveMine && v != 0 {
				fmt.Printf(" %.2f× |", mine/v)
			} else {
				fmt.Printf(" – |")
			}
		}
		fmt.Println()
	}
}

func format(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
