package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
)

const defaultTestTimeout = 20 * time.Second

// Binaries built once by TestMain.
var (
	etcdBin, etcdctlBin, gatewayBin string
	// matrix are the other etcd versions users run, each smoke-tested by TestVersionMatrix.
	matrix []release
)

// release is an etcd version whose members the tests start.
type release struct {
	version string
	bin     string
	// v34: 3.4 has no --unsafe-no-fsync, and logs JSON only with --logger=zap.
	v34 bool
}

// current is the etcd the full suite runs: the version in e2e/go.mod.
func current() release { return release{version: "3.6.16", bin: etcdBin} }

// flags are what every member of r gets to start fast and log little.
func (r release) flags() []string {
	if r.v34 {
		return []string{"--logger", "zap", "--max-request-bytes", "4194304", "--log-level", "error"}
	}
	return []string{"--unsafe-no-fsync", "--max-request-bytes", "4194304", "--log-level", "error"}
}

func TestMain(m *testing.M) {
	os.Exit(testnet.RunWithBinaries(m, "etcd-gateway-e2e-bin", func(dir string) []testnet.Build {
		etcdBin = filepath.Join(dir, "etcd")
		etcdctlBin = filepath.Join(dir, "etcdctl")
		gatewayBin = filepath.Join(dir, "etcd-gateway")
		matrix = []release{
			{version: "3.4.23", bin: etcd34Bin(), v34: true},
			{version: "3.5.35", bin: filepath.Join(dir, "etcd-3.5")},
			{version: "3.7.3", bin: filepath.Join(dir, "etcd-3.7")},
		}
		return []testnet.Build{
			{Dir: "versions/etcd-3.5", Args: []string{"build", "-o", matrix[1].bin, "."}},
			{Dir: "versions/etcd-3.7", Args: []string{"build", "-o", matrix[2].bin, "."}},
			{Dir: ".", Args: []string{"build", "-o", etcdBin, "./tools/etcd"}},
			{Dir: ".", Args: []string{"build", "-o", etcdctlBin, "./tools/etcdctl"}},
			// The gateway runs with the race detector: a race under real load fails the test.
			{Dir: "..", Args: []string{"build", "-race", "-o", gatewayBin, "./cmd/etcd-gateway"}},
		}
	}))
}

// etcd34Bin is Debian's etcd 3.4 server, which `make etcd-3.4` unpacks into e2e/bin without
// installing the package (whose service would take port 2379).
func etcd34Bin() string {
	abs, err := filepath.Abs(filepath.Join("bin", "etcd-3.4"))
	if err != nil {
		panic(err)
	}
	return abs
}

// freePort returns a loopback port for a child process to bind.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := testnet.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// dataDir is a directory on tmpfs when there is one, removed when the test ends.
func dataDir(t *testing.T) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "etcd-gateway-e2e")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// proc is a child process that the test owns.
type proc struct {
	cmd  *exec.Cmd
	out  *testnet.SyncBuffer
	done chan struct{}
}

func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), out: &testnet.SyncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	return p
}

func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// member is one etcd server.
type member struct {
	name   string
	client string // host:port of its client URL
	peer   string // its peer URL
	bin    string
	args   []string
	proc   *proc
}

// restart starts a stopped member again with the same flags and data.
func (m *member) restart(t *testing.T) {
	t.Helper()
	m.proc = startProc(t, m.bin, m.args...)
}

// cluster is a set of etcd members started by the test.
type cluster struct {
	release   release // zero: current()
	dir       string
	scheme    string                     // of the client URLs: http or https
	flags     func(name string) []string // extra flags per member (TLS files)
	clientTLS *tls.Config                // for the harness's own clients; nil for http
	// clientAddrs gives members a client address of the test's choosing; the others get a
	// free port.
	clientAddrs map[string]string
	members     []*member
}

// startCluster starts n plain members on loopback with data on tmpfs and waits until the
// cluster serves linearizable reads.
func startCluster(t *testing.T, n int) []*member {
	t.Helper()
	return launchCluster(t, n, &cluster{scheme: "http", flags: func(string) []string { return nil }}).members
}

// launchCluster starts n members of c and waits until they serve.
func launchCluster(t *testing.T, n int, c *cluster) *cluster {
	t.Helper()
	c.dir = dataDir(t)
	if c.release.bin == "" {
		c.release = current()
	}
	var peers []string
	for i := range n {
		m := &member{name: fmt.Sprintf("m%d", i), peer: fmt.Sprintf("http://127.0.0.1:%d", freePort(t))}
		c.members = append(c.members, m)
		peers = append(peers, m.name+"="+m.peer)
	}
	for _, m := range c.members {
		c.run(t, m, strings.Join(peers, ","), "new")
	}
	c.waitReady(t, c.members)
	return c
}

// run starts member m's process.
func (c *cluster) run(t *testing.T, m *member, initialCluster, state string) {
	t.Helper()
	m.client = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	if addr, ok := c.clientAddrs[m.name]; ok {
		m.client = addr
	}
	url := c.scheme + "://" + m.client
	args := append([]string{
		"--name", m.name, "--data-dir", filepath.Join(c.dir, m.name),
		"--listen-client-urls", url, "--advertise-client-urls", url,
		"--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
		"--initial-cluster", initialCluster, "--initial-cluster-state", state,
		"--initial-cluster-token", filepath.Base(c.dir)}, append(c.release.flags(), c.flags(m.name)...)...)
	m.bin, m.args = c.release.bin, args
	m.proc = startProc(t, m.bin, args...)
}

// waitReady waits until a linearizable read through members succeeds.
func (c *cluster) waitReady(t *testing.T, members []*member) {
	t.Helper()
	cl := newTLSClient(t, c.clientTLS, endpointsOfList(members)...)
	deadline := time.Now().Add(defaultTestTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cl.Get(ctx, "health")
		cancel()
		if err == nil {
			return
		}
		for _, m := range members {
			if m.proc.exited() {
				t.Fatalf("etcd %s exited: %s", m.name, m.proc.out)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// replace removes member i from the cluster, stops it, and adds and starts a new member on new
// ports in its place. It returns the new member.
func (c *cluster) replace(t *testing.T, i int, name string) *member {
	t.Helper()
	old := c.members[i]
	rest := slices.Delete(slices.Clone(c.members), i, i+1)
	admin := newTLSClient(t, c.clientTLS, rest[0].client)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	list, err := admin.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, mm := range list.Members {
		if mm.Name != old.name {
			continue
		}
		// etcd refuses reconfiguration until every member has been connected for a few seconds.
		for {
			_, err := admin.MemberRemove(ctx, mm.ID)
			if err == nil {
				break
			}
			if ctx.Err() != nil || !strings.Contains(err.Error(), "unhealthy cluster") {
				t.Fatalf("remove %s: %v", old.name, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	old.proc.kill()
	m := &member{name: name, peer: fmt.Sprintf("http://127.0.0.1:%d", freePort(t))}
	if _, err := admin.MemberAdd(ctx, []string{m.peer}); err != nil {
		t.Fatalf("add %s: %v", name, err)
	}
	var peers []string
	for _, mm := range append(rest, m) {
		peers = append(peers, mm.name+"="+mm.peer)
	}
	c.run(t, m, strings.Join(peers, ","), "existing")
	c.members = append(rest, m)
	c.waitReady(t, []*member{m})
	return m
}

// leader returns the index of the cluster's leader.
func leader(t *testing.T, members []*member) int {
	t.Helper()
	return (&cluster{members: members}).leader(t)
}

// leader returns the index of the cluster's leader, asked over TLS when the cluster speaks it.
func (cl *cluster) leader(t *testing.T) int {
	t.Helper()
	members := cl.members
	c := newTLSClient(t, cl.clientTLS, members[0].client)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	st, err := c.Status(ctx, members[0].client)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range members {
		mst, err := c.Status(ctx, m.client)
		if err == nil && mst.Header.MemberId == st.Leader {
			return i
		}
	}
	t.Fatal("no member is the leader")
	return -1
}

// endpointsOf returns the --endpoints value of members.
func endpointsOf(members []*member) string { return strings.Join(endpointsOfList(members), ",") }

// endpointsOfList returns the client addresses of members.
func endpointsOfList(members []*member) []string {
	var eps []string
	for _, m := range members {
		eps = append(eps, m.client)
	}
	return eps
}

// gateway is a running etcd-gateway process.
type gateway struct {
	addr string
	proc *proc
}

// startGateway starts etcd-gateway in front of members and waits until it accepts. When the
// test ends it is stopped with SIGTERM and must exit 0 without a data race.
func startGateway(t *testing.T, members []*member, args ...string) *gateway {
	t.Helper()
	return startGatewayArgs(t, append([]string{"--endpoints=" + endpointsOf(members)}, args...)...)
}

// startGatewayArgs is startGateway with every flag but --listen-addr given by the caller.
func startGatewayArgs(t *testing.T, args ...string) *gateway {
	t.Helper()
	return startGatewayOn(t, fmt.Sprintf("127.0.0.1:%d", freePort(t)), args...)
}

// startGatewayOn is startGatewayArgs listening on addr: host:port, or unix://PATH.
func startGatewayOn(t *testing.T, addr string, args ...string) *gateway {
	t.Helper()
	g := launchGateway(t, addr, args...)
	g.waitAccepting(t, addr)
	return g
}

// launchGateway starts the gateway listening on addr and does not wait for it.
func launchGateway(t *testing.T, addr string, args ...string) *gateway {
	t.Helper()
	all := append([]string{"start", "--listen-addr=" + addr, "--log-level=debug"}, args...)
	g := &gateway{addr: addr, proc: startProc(t, gatewayBin, all...)}
	t.Cleanup(func() {
		if g.proc.exited() {
			t.Errorf("gateway exited before the test ended: %s", g.proc.out)
			return
		}
		g.proc.cmd.Process.Signal(os.Interrupt)
		select {
		case <-g.proc.done:
		case <-time.After(defaultTestTimeout):
			t.Errorf("gateway did not stop on SIGINT")
		}
		if code := g.proc.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("gateway exited %d after SIGINT", code)
		}
		if strings.Contains(g.proc.out.String(), "DATA RACE") {
			t.Errorf("data race in the gateway:\n%s", g.proc.out)
		}
	})
	return g
}

// waitAccepting waits until g accepts a connection on addr: host:port, or unix://PATH. On the
// gateway's listen address, that connection is forwarded to a member once one is known.
func (g *gateway) waitAccepting(t *testing.T, addr string) {
	t.Helper()
	network, dialAddr := "tcp", addr
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		network, dialAddr = "unix", path
	}
	deadline := time.Now().Add(defaultTestTimeout)
	for {
		c, err := net.DialTimeout(network, dialAddr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if g.proc.exited() || time.Now().After(deadline) {
			t.Fatalf("gateway never accepted on %s: %s", addr, g.proc.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newClient returns a clientv3 client of endpoints, closed when the test ends.
func newClient(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	return newTLSClient(t, nil, endpoints...)
}

// newTLSClient returns a clientv3 client of endpoints that speaks TLS with cfg when it is not
// nil, closed when the test ends.
func newTLSClient(t *testing.T, cfg *tls.Config, endpoints ...string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		TLS:         cfg,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// memberID returns the ID of the member m, asked directly.
func memberID(t *testing.T, c *cluster, m *member) uint64 {
	t.Helper()
	cl := newTLSClient(t, c.clientTLS, m.client)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	st, err := cl.Status(ctx, m.client)
	if err != nil {
		t.Fatalf("status of %s: %v", m.name, err)
	}
	return st.Header.MemberId
}

// membersThroughGateway opens n new connections through the gateway, holding them all until
// each has been served (so that they spread as long-lived clients do), and returns how many
// were served by each member ID.
func membersThroughGateway(t *testing.T, addr string, cfg *tls.Config, n int) map[uint64]int {
	t.Helper()
	seen := map[uint64]int{}
	var held []*clientv3.Client
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range n {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, DialTimeout: 5 * time.Second, TLS: cfg, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := c.Get(ctx, "which")
		cancel()
		if err != nil {
			t.Fatalf("get through the gateway: %v", err)
		}
		seen[resp.Header.MemberId]++
	}
	return seen
}

// eventually polls cond every 20 ms for up to d and reports whether it came true.
func eventually(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
