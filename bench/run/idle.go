package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/internal/testcert"
)

// The idle suite measures what each proxy costs while it forwards nothing, side by side: each
// proxy in front of a 3-member cluster of its own, every member behind a tap that counts what
// the proxy's probes cost it. Probes are every second for both proxies that probe. The phases
// follow each other in one window for all proxies, first with plain members, then with TLS
// members: no client; two clients that each hold an idle watch; then one member killed (its
// port refusing) with the two clients still there. Each phase is measured after it settled:
// what a change of phase set off (clients connecting, reconnecting from the killed member)
// is over, and the proxies are in the state they keep while nothing changes, which is most of
// an idle host's life.

// idleCandidate is a proxy of the idle suite.
type idleCandidate struct {
	name  string
	start func(addr string, endpoints []string, certs *memberCerts) (*process, error)
}

func idleCandidates(gateway, baseline, etcd, haproxy, work string) []idleCandidate {
	ours := func(bin string) func(string, []string, *memberCerts) (*process, error) {
		return func(addr string, eps []string, certs *memberCerts) (*process, error) {
			args := []string{"start", "--listen-addr=" + addr, "--endpoints=" + strings.Join(eps, ","), "--log-level=error"}
			if certs != nil {
				args = append(args, "--trusted-ca-file="+certs.ca)
			}
			return start(bin, args...)
		}
	}
	candidates := []idleCandidate{
		{"etcd-gateway", ours(gateway)},
		{"etcd gateway", func(addr string, eps []string, _ *memberCerts) (*process, error) {
			return start(etcd, "gateway", "start", "--listen-addr="+addr, "--endpoints="+strings.Join(eps, ","))
		}},
		{"HAProxy + GET /readyz", func(addr string, eps []string, certs *memberCerts) (*process, error) {
			cfg := filepath.Join(work, "haproxy-idle-"+strings.ReplaceAll(addr, ":", "-")+".cfg")
			text := haproxyConfig(addr, eps, "roundrobin")
			if certs != nil {
				text = strings.ReplaceAll(text, " check inter 1s", " check check-ssl verify required ca-file "+certs.ca+" inter 1s")
			}
			if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
				return nil, err
			}
			return start(haproxy, "-db", "-f", cfg)
		}},
	}
	if baseline != "" {
		candidates = append(candidates, idleCandidate{baselineName, ours(baseline)})
	}
	return candidates
}

// idleSetup is one proxy running in front of its cluster.
type idleSetup struct {
	name    string
	cluster *cluster
	taps    []*tap
	proc    *process
	addr    string
	started time.Time
	clients []*clientv3.Client
}

func (s *idleSetup) pid() int { return s.proc.cmd.Process.Pid }

func (s *idleSetup) stop() {
	for _, cl := range s.clients {
		cl.Close()
	}
	if s.proc != nil {
		s.proc.kill()
	}
	for _, t := range s.taps {
		t.stop()
	}
	s.cluster.stop()
}

// idleTable holds the suite's figures: rows in order, and a cell per row and proxy.
type idleTable struct {
	rows  []string
	cells map[string]map[string]string
}

func (t *idleTable) set(row, proxy, value string) {
	if t.cells == nil {
		t.cells = map[string]map[string]string{}
	}
	if t.cells[row] == nil {
		t.rows = append(t.rows, row)
		t.cells[row] = map[string]string{}
	}
	t.cells[row][proxy] = value
}

func runIdle(gateway, baseline, etcd, haproxy, work string, settle, window, long time.Duration) {
	candidates := idleCandidates(gateway, baseline, etcd, haproxy, work)
	var table idleTable
	for _, certs := range []*memberCerts{nil, writeMemberCerts(work)} {
		kind := "plain"
		if certs != nil {
			kind = "TLS"
		}
		if err := idleRun(&table, candidates, etcd, certs, kind, settle, window, long); err != nil {
			fail(err)
		}
	}
	names := make([]string, len(candidates))
	for i, c := range candidates {
		names[i] = c.name
	}
	printTable(fmt.Sprintf("idle, 3 members each, probes every 1 s (%s per phase)", window), names, table.rows, func(row, col int) string {
		if v := table.cells[table.rows[row]][names[col]]; v != "" {
			return v
		}
		return "–"
	})
}

// idleRun runs the three phases with members of one kind (plain or TLS), and, with TLS
// members, reads every proxy's RSS again once it has run for long.
func idleRun(table *idleTable, candidates []idleCandidate, etcd string, certs *memberCerts, kind string, settle, window, long time.Duration) error {
	var setups []*idleSetup
	defer func() {
		for _, s := range setups {
			s.stop()
		}
	}()
	for _, c := range candidates {
		fmt.Fprintf(os.Stderr, "%s members: starting %s ...\n", kind, c.name)
		cl, err := startClusterWith(etcd, certs)
		if err != nil {
			return err
		}
		s := &idleSetup{name: c.name, cluster: cl, addr: fmt.Sprintf("127.0.0.1:%d", freePort())}
		setups = append(setups, s)
		var eps []string
		for _, m := range cl.members {
			t, err := startTap(m.client)
			if err != nil {
				return err
			}
			s.taps = append(s.taps, t)
			eps = append(eps, t.addr())
		}
		if s.proc, err = c.start(s.addr, eps, certs); err != nil {
			return err
		}
		s.started = time.Now()
		if err := waitAccepting(s.addr); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	time.Sleep(2 * time.Second) // start-up done: the first probes answered
	for _, s := range setups {
		table.set(kind+" members: RSS 2 s after start", s.name, mib(rssKiB(s.pid())))
	}

	idlePhase(table, setups, kind+" members, no client", certs, settle, window)
	for _, s := range setups {
		for range 2 {
			cl, err := idleWatcher(s.addr, certs)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			s.clients = append(s.clients, cl)
		}
	}
	idlePhase(table, setups, kind+" members, 2 idle watch clients", certs, settle, window)
	for _, s := range setups {
		s.taps[0].stop() // the port refuses, as a dead member's
		s.cluster.members[0].proc.kill()
	}
	idlePhase(table, setups, kind+" members, one member killed, 2 idle watch clients", certs, settle, window)
	if certs == nil || long <= 0 {
		return nil
	}
	for _, s := range setups {
		for _, cl := range s.clients {
			cl.Close()
		}
		s.clients = nil
	}
	fmt.Fprintf(os.Stderr, "%s members: idle until %s after start ...\n", kind, long)
	time.Sleep(time.Until(setups[len(setups)-1].started.Add(long)))
	for _, s := range setups {
		table.set(fmt.Sprintf("%s members: RSS after %s (one member down, no client since the phases)", kind, long), s.name, mib(rssKiB(s.pid())))
	}
	return nil
}

// idlePhase measures every proxy over window, once settle has passed: CPU, what its probes
// cost each live member, and its RSS at the end.
func idlePhase(table *idleTable, setups []*idleSetup, phase string, certs *memberCerts, settle, window time.Duration) {
	fmt.Fprintf(os.Stderr, "%s: settling for %s, then %s ...\n", phase, settle, window)
	time.Sleep(settle) // what the change of phase set off is over: no state to wait for in a proxy of another make
	type mark struct {
		cpu                  time.Duration
		conns, full, resumed int64
	}
	read := func(s *idleSetup) mark {
		m := mark{cpu: onCPU(s.pid())}
		for _, t := range s.taps {
			m.conns += t.conns.Load()
			m.full += t.full.Load()
			m.resumed += t.resumed.Load()
		}
		return m
	}
	before := make([]mark, len(setups))
	for i, s := range setups {
		before[i] = read(s)
	}
	time.Sleep(window)
	for i, s := range setups {
		after := read(s)
		live := 0
		for _, t := range s.taps {
			if !t.stopped() {
				live++
			}
		}
		perMember := func(n int64) string {
			return fmt.Sprintf("%.2f", float64(n)/float64(live)/window.Seconds())
		}
		table.set(phase+": CPU, % of a core", s.name, fmt.Sprintf("%.3f", 100*float64(after.cpu-before[i].cpu)/float64(window)))
		table.set(phase+": new connections per live member per s", s.name, perMember(after.conns-before[i].conns))
		if certs != nil {
			table.set(phase+": full TLS handshakes per live member per s", s.name, perMember(after.full-before[i].full))
			table.set(phase+": resumed TLS handshakes per live member per s", s.name, perMember(after.resumed-before[i].resumed))
		}
		table.set(phase+": RSS at the end, MiB", s.name, mib(rssKiB(s.pid())))
	}
}

func mib(kib int) string { return fmt.Sprintf("%.1f", float64(kib)/1024) }

// idleWatcher connects a client to addr and waits until its watch is in place.
func idleWatcher(addr string, certs *memberCerts) (*clientv3.Client, error) {
	cfg := clientv3.Config{Endpoints: []string{addr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if certs != nil {
		pem, err := os.ReadFile(certs.ca)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		cfg.TLS = &tls.Config{RootCAs: pool}
	}
	cl, err := clientv3.New(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case resp := <-cl.Watch(context.Background(), "idle", clientv3.WithCreatedNotify()):
		if err := resp.Err(); err != nil {
			cl.Close()
			return nil, err
		}
		return cl, nil
	case <-ctx.Done():
		cl.Close()
		return nil, fmt.Errorf("no watch through %s within 10 s", addr)
	}
}

// writeMemberCerts writes a CA and a certificate for members on 127.0.0.1 into work.
func writeMemberCerts(work string) *memberCerts {
	ca, err := testcert.GenerateCA("etcd-gateway bench CA")
	if err != nil {
		fail(err)
	}
	certPEM, keyPEM, err := ca.GeneratePEM([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		fail(err)
	}
	c := &memberCerts{ca: filepath.Join(work, "ca.pem"), cert: filepath.Join(work, "member.pem"), key: filepath.Join(work, "member-key.pem")}
	for path, data := range map[string][]byte{c.ca: ca.PEM(), c.cert: certPEM, c.key: keyPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			fail(err)
		}
	}
	return c
}

// runIdleProfile profiles a gateway built with the profile tag for window in front of 3 idle
// members, plain then TLS, with no client, and prints where its CPU time and its allocations
// went.
func runIdleProfile(gateway, etcd, work, out string, window time.Duration) {
	for _, certs := range []*memberCerts{nil, writeMemberCerts(work)} {
		kind := "plain"
		if certs != nil {
			kind = "tls"
		}
		dir, err := filepath.Abs(filepath.Join(out, kind))
		if err != nil {
			fail(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			fail(err)
		}
		os.Remove(filepath.Join(dir, "allocs.pprof"))
		c, err := startClusterWith(etcd, certs)
		if err != nil {
			fail(err)
		}
		args := []string{"start", "--listen-addr=127.0.0.1:" + itoa(freePort()), "--endpoints=" + strings.Join(c.endpoints(), ","), "--log-level=error"}
		if certs != nil {
			args = append(args, "--trusted-ca-file="+certs.ca)
		}
		p := &process{cmd: exec.Command(gateway, args...), done: make(chan struct{})}
		p.cmd.Env = append(os.Environ(), "ETCD_GATEWAY_PROFILE="+dir+","+window.String())
		if err := p.cmd.Start(); err != nil {
			c.stop()
			fail(err)
		}
		go func() {
			p.cmd.Wait()
			close(p.done)
		}()
		fmt.Fprintf(os.Stderr, "%s members: profiling for %s ...\n", kind, window)
		written := waitFile(filepath.Join(dir, "allocs.pprof"), window+30*time.Second)
		p.kill()
		c.stop()
		if !written {
			fail(fmt.Errorf("%s: no profile written; build the gateway with -tags profile", gateway))
		}
		for _, report := range [][]string{
			{"-top", "-nodecount=25", filepath.Join(dir, "cpu.pprof")},
			{"-top", "-cum", "-nodecount=30", filepath.Join(dir, "cpu.pprof")},
			{"-top", "-sample_index=alloc_space", "-nodecount=25", filepath.Join(dir, "allocs.pprof")},
			{"-top", "-sample_index=alloc_objects", "-nodecount=25", filepath.Join(dir, "allocs.pprof")},
		} {
			fmt.Printf("\n## %s members: go tool pprof %s\n\n", kind, strings.Join(report, " "))
			cmd := exec.Command("go", append([]string{"tool", "pprof"}, report...)...)
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			cmd.Run()
		}
	}
}

// waitFile waits up to within for path to exist.
func waitFile(path string, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}
