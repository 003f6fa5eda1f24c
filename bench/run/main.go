// Command run measures etcd-gateway against its peers, etcd's own gateway and HAProxy, in one
// run, and prints Markdown tables. Suites:
//
//   - faults: how each hides member faults from clients (see faults.go);
//   - forward: speed and footprint of the forwarding itself (see forward.go);
//   - idle: what each costs the host and the members while it forwards nothing (see idle.go);
//   - idle-profile: where an idle etcd-gateway, built with -tags profile, spends its time;
//   - echo: an internal helper, the echo servers of the forward suite in a process of their own.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
)

func main() {
	suite := flag.String("suite", "faults", "faults, forward, idle, idle-profile, or echo")
	gateway := flag.String("gateway", "bin/etcd-gateway", "etcd-gateway binary")
	etcd := flag.String("etcd", "e2e/bin/etcd", "etcd binary (also etcd's gateway)")
	haproxy := flag.String("haproxy", "haproxy", "HAProxy binary")
	parts := flag.String("parts", "raw,etcd", "forward: which workloads to run: raw forwarding, etcd, or both")
	baseline := flag.String("baseline", "", "forward, idle: an earlier etcd-gateway binary to measure in the same run")
	window := flag.Duration("window", 12*time.Second, "faults: how long each fault lasts under load")
	only := flag.String("only", "", "faults: run only the scenarios whose name contains this")
	reps := flag.Int("reps", 3, "forward: repetitions of each measurement (the median is shown)")
	listen := flag.String("listen", "", "echo: comma-separated addresses to serve")
	profiles := flag.String("profiles", "profiles", "idle-profile: where the profiles are written")
	phase := flag.Duration("phase", time.Minute, "idle: how long each phase is measured")
	settle := flag.Duration("settle", time.Minute, "idle: how long each phase runs before it is measured")
	long := flag.Duration("long", 10*time.Minute, "idle: with TLS members, read the RSS again once each proxy has run this long; 0: do not")
	flag.Parse()
	work, err := os.MkdirTemp("", "etcd-gateway-bench")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(work)
	switch *suite {
	case "faults":
		runFaults(*gateway, *etcd, *haproxy, work, *window, *only)
	case "forward":
		runForward(*gateway, *baseline, *etcd, *haproxy, work, *parts, *reps)
	case "idle":
		runIdle(*gateway, *baseline, *etcd, *haproxy, work, *settle, *phase, *long)
	case "idle-profile":
		runIdleProfile(*gateway, *etcd, work, *profiles, *phase)
	case "echo":
		serveEcho(strings.Split(*listen, ","))
	default:
		fail(fmt.Errorf("unknown suite %q", *suite))
	}
}

// runFaults runs the fault scenarios against every candidate and prints the table.
func runFaults(gateway, etcd, haproxy, work string, window time.Duration, only string) {
	scenarios := []scenario{
		{name: "one member killed with SIGKILL: failed requests", run: killMember},
		{name: "one member frozen with SIGSTOP: failed requests", run: freezeMember},
		{name: "one listed endpoint drops SYNs: failed requests", run: synDrop},
		{name: "a connected client's member freezes: time until that client is served again", run: stuckClient},
		{name: "all members die, then come back: time from the first ready member to proxy serves", run: fullOutage},
		{name: stopAcceptingRefuse, run: stopAccepting(testnet.Refuse)},
		{name: stopAcceptingBacklog, run: stopAccepting(testnet.FullBacklog)},
	}
	scenarios = append(scenarios, rollingRestartScenarios()...)
	scenarios = slices.DeleteFunc(scenarios, func(s scenario) bool { return !strings.Contains(s.name, only) })
	candidates := proxies(gateway, etcd, haproxy, work)
	results := make([][]string, len(scenarios))
	for si, sc := range scenarios {
		for _, px := range candidates {
			fmt.Fprintf(os.Stderr, "%s / %s ...\n", px.name, sc.name)
			var r string
			var err error
			if sc.reuses {
				r, err = sc.run(&env{proxyName: px.name})
			} else {
				r, err = runScenario(etcd, px, sc, window)
			}
			if err != nil {
				r = "error: " + err.Error()
			}
			fmt.Fprintf(os.Stderr, "  %s\n", r)
			results[si] = append(results[si], r)
		}
	}
	names := make([]string, len(candidates))
	for i, px := range candidates {
		names[i] = px.name
	}
	rows := make([]string, len(scenarios))
	for si, sc := range scenarios {
		rows[si] = sc.name
	}
	printTable(fmt.Sprintf("fault (%s under load, 4 workers, new connection + Get with 3 s timeout each; rolling restart: see its rows)", window),
		names, rows, func(row, col int) string { return results[row][col] })
}

// printTable prints a Markdown table: a row per name in rows, a column per name in columns.
func printTable(title string, columns, rows []string, cell func(row, col int) string) {
	fmt.Printf("\n| %s |", title)
	for _, c := range columns {
		fmt.Printf(" %s |", c)
	}
	fmt.Printf("\n|---|")
	for range columns {
		fmt.Printf("---|")
	}
	fmt.Println()
	for ri, r := range rows {
		fmt.Printf("| %s |", r)
		for ci := range columns {
			fmt.Printf(" %s |", cell(ri, ci))
		}
		fmt.Println()
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

// env is what a scenario works with.
type env struct {
	etcd      string
	cluster   *cluster
	relays    []*testnet.Relay // in front of each member, for the scenarios that stop accepting
	proxy     *process
	proxyName string
	addr      string
	window    time.Duration
}

type scenario struct {
	name string
	run  func(e *env) (string, error)
	// balance is HAProxy's balance algorithm in this scenario; roundrobin when empty.
	balance string
	// reuses: the row reads what an earlier row measured for the same proxy; nothing starts.
	reuses bool
}

func runScenario(etcd string, px proxy, sc scenario, window time.Duration) (string, error) {
	c, err := startCluster(etcd)
	if err != nil {
		return "", err
	}
	defer c.stop()
	eps := c.endpoints()
	var relays []*testnet.Relay
	if sc.name == stopAcceptingRefuse || sc.name == stopAcceptingBacklog {
		for i, ep := range eps {
			r, err := testnet.StartRelay(ep)
			if err != nil {
				return "", err
			}
			defer r.Close()
			relays = append(relays, r)
			eps[i] = r.Addr()
		}
	}
	if sc.name == "one listed endpoint drops SYNs: failed requests" {
		dropper, closeDropper, err := testnet.ListenSYNDropper()
		if err != nil {
			return "", err
		}
		defer closeDropper()
		eps = append(eps, dropper)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort())
	balance := sc.balance
	if balance == "" {
		balance = "roundrobin"
	}
	p, err := px.start(addr, eps, balance)
	if err != nil {
		return "", err
	}
	defer p.kill()
	if err := waitListening(addr); err != nil {
		return "", err
	}
	time.Sleep(2 * time.Second) // let health checks settle
	return sc.run(&env{etcd: etcd, cluster: c, relays: relays, proxy: p, proxyName: px.name, addr: addr, window: window})
}

func newClient(addr string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{addr}, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
}

// oneRequest opens a new client connection and does one Get with a 3 s timeout.
func oneRequest(addr string) error {
	c, err := newClient(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err = c.Get(ctx, "bench")
	return err
}

// underLoad runs the 4 workers for the window while fault happens at its start, and returns
// "failed of total".
func underLoad(e *env, fault func()) string {
	var total, failed int
	var mu sync.Mutex
	stop := time.Now().Add(e.window)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				err := oneRequest(e.addr)
				mu.Lock()
				total++
				if err != nil {
					failed++
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	fault()
	wg.Wait()
	return fmt.Sprintf("%d failed of %d", failed, total)
}

func killMember(e *env) (string, error) {
	victim := e.cluster.members[(e.cluster.leader()+1)%3]
	return underLoad(e, victim.proc.kill), nil
}

func freezeMember(e *env) (string, error) {
	victim := e.cluster.members[(e.cluster.leader()+1)%3]
	return underLoad(e, func() {
		time.Sleep(rand.N(time.Second)) // a random phase of the health checks' schedule
		victim.proc.signal(syscall.SIGSTOP)
	}), nil
}

func synDrop(e *env) (string, error) { return underLoad(e, func() {}), nil }

// stuckClient finds a client whose connection is served by a follower, freezes that member,
// and measures how long the client's next Get (30 s timeout) takes to succeed.
func stuckClient(e *env) (string, error) {
	victim := e.cluster.members[(e.cluster.leader()+1)%3]
	direct, err := newClient(victim.client)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	st, err := direct.Status(ctx, victim.client)
	cancel()
	direct.Close()
	if err != nil {
		return "", err
	}
	var stuck *clientv3.Client
	for range 100 {
		c, err := newClient(e.addr)
		if err != nil {
			return "", err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		resp, err := c.Get(ctx, "which")
		cancel()
		if err == nil && resp.Header.MemberId == st.Header.MemberId {
			stuck = c
			break
		}
		c.Close()
	}
	if stuck == nil {
		return "", errors.New("no connection through the proxy reached the chosen member")
	}
	defer stuck.Close()
	// Freeze at a random phase of the health checks' schedule, as a real fault would.
	time.Sleep(rand.N(time.Second))
	frozen := time.Now()
	victim.proc.signal(syscall.SIGSTOP)
	if err := testnet.WaitStopped(victim.proc.cmd.Process.Pid); err != nil {
		return "", err
	}
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := stuck.Get(ctx, "after-freeze"); err != nil {
		return "never (> 30 s)", nil
	}
	return fmt.Sprintf("%.2f s", time.Since(frozen).Seconds()), nil
}

// fullOutage kills every member, restarts them, and measures from the first member ready to
// the first request served through the proxy (1 s timeout per try, up to 90 s).
func fullOutage(e *env) (string, error) {
	for _, m := range e.cluster.members {
		m.proc.kill()
	}
	time.Sleep(3 * time.Second)
	for _, m := range e.cluster.members {
		if err := m.restart(e.etcd); err != nil {
			return "", err
		}
	}
	readyCh := make(chan time.Time, 1)
	go func() {
		first, _ := e.cluster.waitReady(30 * time.Second)
		readyCh <- first
	}()
	deadline := time.Now().Add(90 * time.Second)
	var served time.Time
	for time.Now().Before(deadline) {
		c, err := newClient(e.addr)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = c.Get(ctx, "back")
			cancel()
			c.Close()
			if err == nil {
				served = time.Now()
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	ready := <-readyCh
	if served.IsZero() {
		return "never (> 90 s)", nil
	}
	return fmt.Sprintf("%.2f s", max(served.Sub(ready), 0).Seconds()), nil
}

// The scenarios in which every member stops accepting new connections but keeps serving the
// ones it has (out of descriptors, or a full accept queue).
const (
	stopAcceptingRefuse  = "every member stops accepting (refused), 16 long-lived clients: failed Gets, clients hurt"
	stopAcceptingBacklog = "every member stops accepting (full backlog), 16 long-lived clients: failed Gets, clients hurt"
)

// stopAccepting runs 16 long-lived clients, each doing a Get (2 s timeout) every 100 ms on
// its own connection, and stops every member's relay from accepting after 2 s.
func stopAccepting(mode testnet.StopMode) func(e *env) (string, error) {
	return func(e *env) (string, error) {
		const clients = 16
		var mu sync.Mutex
		total, failed := 0, 0
		hurt := map[int]bool{}
		var stopAt time.Time
		stop := time.Now().Add(2*time.Second + e.window)
		var wg sync.WaitGroup
		for i := range clients {
			c, err := newClient(e.addr)
			if err != nil {
				return "", err
			}
			defer c.Close()
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					started := time.Now()
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					_, err := c.Get(ctx, "bench")
					cancel()
					mu.Lock()
					if !stopAt.IsZero() && !started.Before(stopAt) {
						total++
						if err != nil {
							failed++
							hurt[i] = true
						}
					}
					mu.Unlock()
					time.Sleep(100 * time.Millisecond)
				}
			}()
		}
		time.Sleep(2 * time.Second)
		mu.Lock()
		stopAt = time.Now()
		mu.Unlock()
		for _, r := range e.relays {
			if err := r.StopAccepting(mode); err != nil {
				return "", err
			}
		}
		wg.Wait()
		return fmt.Sprintf("%d failed of %d, %d of %d clients hurt", failed, total, len(hurt), clients), nil
	}
}
