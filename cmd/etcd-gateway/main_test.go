package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
)

const defaultTestTimeout = 10 * time.Second

// gatewayBin is the etcd-gateway binary built once for the tests that run it as a process.
var gatewayBin string

func TestMain(m *testing.M) {
	os.Exit(testnet.RunWithBinaries(m, "etcd-gateway-cmd-test", func(dir string) []testnet.Build {
		gatewayBin = filepath.Join(dir, "etcd-gateway")
		return []testnet.Build{{Dir: ".", Args: []string{"build", "-race", "-o", gatewayBin, "."}}}
	}))
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string { return testnet.ClosedPort(t) }

// process is a running gateway.
type process struct {
	cmd    *exec.Cmd
	stderr *testnet.SyncBuffer
	done   chan struct{}
}

// startProcess runs the gateway through sh so tests can set a file-descriptor limit first,
// and waits until it accepts on listen.
func startProcess(t *testing.T, ulimit int, listen string, args ...string) *process {
	t.Helper()
	return startProcessEnv(t, ulimit, nil, listen, args...)
}

// startProcessEnv is startProcess with env added to the gateway's environment.
func startProcessEnv(t *testing.T, ulimit int, env []string, listen string, args ...string) *process {
	t.Helper()
	script := `exec "$0" "$@"`
	if ulimit > 0 {
		script = fmt.Sprintf("ulimit -n %d && %s", ulimit, script)
	}
	cmd := exec.Command("sh", append([]string{"-c", script, gatewayBin, "start", "--listen-addr=" + listen}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	p := &process{cmd: cmd, stderr: &testnet.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	deadline := time.Now().Add(defaultTestTimeout)
	for {
		c, err := net.DialTimeout("tcp", listen, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("gateway exited at start: %s", p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway never accepted on %s: %s", listen, p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends sig and returns the exit status.
func (p *process) stop(t *testing.T, sig os.Signal) int {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(2 * defaultTestTimeout):
		t.Fatalf("gateway did not exit after %s", sig)
	}
	if strings.Contains(p.stderr.String(), "DATA RACE") {
		t.Errorf("race detected in the gateway:\n%s", p.stderr)
	}
	return p.cmd.ProcessState.ExitCode()
}

func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(defaultTestTimeout))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo = %q, %v", buf, err)
	}
}

func TestBadInputExitsTwoWithOneLine(t *testing.T) {
	listen := freeAddr(t)
	_, port, _ := net.SplitHostPort(listen)
	tests := []struct {
		name string
		args []string
	}{
		{"https endpoint", []string{"start", "--endpoints=https://127.0.0.1:2379"}},
		{"endpoint with a bad port", []string{"start", "--endpoints=127.0.0.1:x"}},
		{"empty endpoint list", []string{"start", "--endpoints=,"}},
		{"duration without unit", []string{"start", "--retry-delay=123"}},
		{"negative duration", []string{"start", "--retry-delay=-1m"}},
		{"malformed listen address", []string{"start", "--listen-addr=127.0.0.1"}},
		{"loop to itself", []string{"start", "--listen-addr=" + listen, "--endpoints=127.0.0.1:" + port}},
		{"loop through 0.0.0.0", []string{"start", "--listen-addr=0.0.0.0:" + port, "--endpoints=localhost:" + port}},
		{"loop through [::]", []string{"start", "--listen-addr=[::]:" + port, "--endpoints=[::1]:" + port}},
		{"metrics address without port", []string{"start", "--metrics-addr=127.0.0.1"}},
		{"metrics address is the listen address", []string{"start", "--listen-addr=" + listen, "--metrics-addr=" + listen}},
		{"relative unix socket", []string{"start", "--listen-addr=unix://gw.sock"}},
		{"check with bad input", []string{"check", "--endpoints=https://127.0.0.1:2379"}},
		{"unknown flag", []string{"start", "--no-such-flag"}},
		{"unknown command", []string{"serve"}},
		{"no command", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(gatewayBin, tt.args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Fatalf("exit status %d (%v), want 2; stderr: %s", code, err, stderr.String())
			}
			lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "etcd-gateway: ") {
				t.Errorf("stderr is not one line: %q", stderr.String())
			}
			if stdout.Len() != 0 {
				t.Errorf("wrote to stdout: %q", stdout.String())
			}
		})
	}
}

func TestBindFailureExitsOne(t *testing.T) {
	taken := testnet.LocalListener(t)
	cmd := exec.Command(gatewayBin, "start", "--listen-addr="+taken.Addr().String(), "--endpoints=127.0.0.1:1")
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit status %d, want 1; output: %s", code, out)
	}
	if !strings.Contains(string(out), "address already in use") {
		t.Errorf("output does not give the reason: %s", out)
	}
}

// SIGTERM stops accepting at once, lets a live connection finish, and exits 0.
func TestSIGTERMDrainsAndExitsZero(t *testing.T) {
	backend := testnet.Echo(t)
	listen := freeAddr(t)
	p := startProcess(t, 0, listen, "--endpoints="+backend.Addr(), "--shutdown-timeout=2s")
	live, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	echo(t, live, "before SIGTERM")
	p.cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(defaultTestTimeout)
	for {
		c, err := net.DialTimeout("tcp", listen, 100*time.Millisecond)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	echo(t, live, "during the drain")
	live.Close()
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0; stderr: %s", code, p.stderr)
	}
}

// Stop signals that keep coming while the gateway stops, up to its very exit, never kill it:
// it exits 0, as systemd expects of a unit stopped twice.
func TestStopSignalsUntilTheExitStillExitZero(t *testing.T) {
	backend := testnet.Echo(t)
	for range 5 {
		p := startProcess(t, 0, freeAddr(t), "--endpoints="+backend.Addr(), "--shutdown-timeout=1s")
	signals:
		for {
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
				break signals
			case <-time.After(50 * time.Microsecond):
			}
		}
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("exit status %d with SIGTERMs until the exit, want 0; stderr: %s", code, p.stderr)
		}
	}
}

// Under a low descriptor limit, more clients than it can hold make accept fail with EMFILE:
// the gateway serves what it can hold, backs off, keeps running, and serves normally once
// they leave.
func TestLowFileLimitKeepsServing(t *testing.T) {
	backend := testnet.Echo(t)
	listen := freeAddr(t)
	p := startProcess(t, 256, listen, "--endpoints="+backend.Addr())
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	// 1,000 clients at once, each asking for one echo.
	var (
		mu     sync.Mutex
		served int
		wg     sync.WaitGroup
	)
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", listen, time.Second)
			if err != nil {
				return // the backlog is full: the kernel drops the SYN
			}
			c.SetDeadline(time.Now().Add(2 * time.Second))
			_, werr := io.WriteString(c, "x")
			_, rerr := io.ReadFull(c, make([]byte, 1))
			c.SetDeadline(time.Time{})
			mu.Lock()
			defer mu.Unlock()
			clients = append(clients, c)
			if werr == nil && rerr == nil {
				served++
			}
		}()
	}
	wg.Wait()
	t.Logf("1000 clients at once under a limit of 256 descriptors: %d served while they stayed", served)
	if served == 0 || served > 256 {
		t.Errorf("%d of 1000 clients served under a 256 descriptor limit", served)
	}
	select {
	case <-p.done:
		t.Fatalf("the gateway exited: %s", p.stderr)
	default:
	}
	// Its own shortage says nothing about the member: probes must not mark it down, which
	// would close every connection to it.
	if strings.Contains(p.stderr.String(), `"to":"down"`) {
		t.Errorf("the member was marked down while the gateway was out of descriptors: %s", p.stderr)
	}
	// Running short is reported once, by the accept loop: not an error per client.
	if strings.Contains(p.stderr.String(), `"level":"error"`) {
		t.Errorf("errors logged while the gateway was out of descriptors: %s", p.stderr)
	}
	deadline := time.Now().Add(defaultTestTimeout)
	for !strings.Contains(p.stderr.String(), "accept failed; backing off") {
		if time.Now().After(deadline) {
			t.Fatalf("the gateway never ran out of descriptors; stderr: %s", p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range clients {
		c.Close()
	}
	clients = nil
	deadline = time.Now().Add(defaultTestTimeout)
	for {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(time.Second))
			_, werr := io.WriteString(c, "x")
			buf := make([]byte, 1)
			_, rerr := io.ReadFull(c, buf)
			c.Close()
			if werr == nil && rerr == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving after the clients left; stderr: %s", p.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-p.done:
		t.Fatalf("gateway exited: %s", p.stderr)
	default:
	}
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
}

// Under systemd (Type=notify) the gateway sends READY=1 once it serves, WATCHDOG=1 at half of
// WATCHDOG_USEC, and STOPPING=1 on SIGTERM.
func TestSystemdNotifications(t *testing.T) {
	backend := testnet.Echo(t)
	socket := filepath.Join(t.TempDir(), "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	got := make(chan string, 100)
	go func() {
		buf := make([]byte, 512)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- string(buf[:n])
		}
	}()
	expect := func(want string) time.Time {
		t.Helper()
		timeout := time.After(defaultTestTimeout)
		for {
			select {
			case msg := <-got:
				if msg == want {
					return time.Now()
				}
			case <-timeout:
				t.Fatalf("no %s on NOTIFY_SOCKET", want)
			}
		}
	}
	listen := freeAddr(t)
	began := time.Now()
	p := startProcessEnv(t, 0, []string{"NOTIFY_SOCKET=" + socket, "WATCHDOG_USEC=200000"}, listen, "--endpoints="+backend.Addr())
	ready := expect("READY=1")
	t.Logf("READY=1 %s after start", ready.Sub(began))
	first := expect("WATCHDOG=1")
	expect("WATCHDOG=1")
	third := expect("WATCHDOG=1")
	if every := third.Sub(first) / 2; every > 150*time.Millisecond {
		t.Errorf("WATCHDOG=1 every %s, want about 100ms (half of WATCHDOG_USEC=200000)", every)
	}
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	echo(t, c, "served when ready")
	c.Close()
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d after SIGTERM: %s", code, p.stderr)
	}
	expect("STOPPING=1")
}

func TestVersionCommand(t *testing.T) {
	out, err := exec.Command(gatewayBin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("version: %v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "etcd-gateway ") || !strings.HasPrefix(lines[1], "commit: ") ||
		lines[2] != "go: "+runtime.Version() {
		t.Fatalf("version printed %q, want the version, the commit and the Go version", out)
	}
}

// SIGTERM with 100 streams in flight: no new connection is accepted, every stream that ends
// within --shutdown-timeout arrives intact, the ones still open are closed at the timeout, and
// the process exits 0 in time.
func TestSIGTERMWithActiveStreams(t *testing.T) {
	backend := testnet.Serve(t, func(c *net.TCPConn) { testnet.EchoBuffered(c) })
	listen := freeAddr(t)
	const shutdownTimeout = 3 * time.Second
	metrics := freeAddr(t)
	p := startProcess(t, 0, listen, "--endpoints="+backend.Addr(), "--shutdown-timeout="+shutdownTimeout.String(), "--health-check=tcp",
		"--metrics-addr="+metrics)

	const streams, stuck = 100, 5 // the last 5 never finish
	type result struct {
		intact bool
		err    error
	}
	results := make(chan result, streams)
	connected := make(chan struct{}, streams)
	terminated := make(chan struct{})
	for i := range streams {
		go func() {
			c, err := net.Dial("tcp", listen)
			if err != nil {
				connected <- struct{}{}
				results <- result{err: err}
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(4 * defaultTestTimeout))
			sent := bytes.Repeat([]byte{byte(i)}, 16<<10) // 16 MB each way in all: a drain, not a throughput test
			type read struct {
				got []byte
				err error
			}
			echoed := make(chan read, 1)
			go func() {
				got, err := io.ReadAll(c)
				echoed <- read{got, err}
			}()
			connected <- struct{}{}
			<-terminated
			// Ten chunks over about a second after the stop signal, echoed back.
			for range 10 {
				if _, err := c.Write(sent); err != nil {
					<-echoed
					results <- result{err: err}
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			if i < streams-stuck { // the stuck ones never half-close: closed at the timeout
				c.(*net.TCPConn).CloseWrite()
			}
			r := <-echoed
			results <- result{intact: i < streams-stuck && r.err == nil && bytes.Equal(r.got, bytes.Repeat(sent, 10)), err: r.err}
		}()
	}
	for range streams {
		<-connected
	}
	if !testnet.Eventually(defaultTestTimeout, func() bool { return activeConnections(t, metrics) >= streams }) {
		t.Fatalf("%d connections proxied, want %d", activeConnections(t, metrics), streams)
	}
	began := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	close(terminated)
	// The listening socket closes as soon as the signal is handled: from then on new clients
	// are refused.
	refused := func() bool {
		c, err := net.DialTimeout("tcp", listen, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	}
	if !testnet.Eventually(defaultTestTimeout, refused) {
		t.Error("new connections still accepted after SIGTERM")
	}
	if !refused() {
		t.Error("a new connection was accepted after the listening socket closed")
	}
	intact := 0
	for i := range streams {
		r := <-results
		if r.intact {
			intact++
		} else if i < streams-stuck && r.err != nil && !errors.Is(r.err, io.EOF) {
			t.Logf("stream ended with %v", r.err)
		}
	}
	select {
	case <-p.done:
	case <-time.After(shutdownTimeout + defaultTestTimeout):
		t.Fatal("the gateway did not exit after its shutdown timeout")
	}
	took := time.Since(began)
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit status %d after SIGTERM: %s", code, p.stderr)
	}
	if intact != streams-stuck {
		t.Errorf("%d of %d streams that finished within the shutdown timeout arrived intact", intact, streams-stuck)
	}
	if took < shutdownTimeout-100*time.Millisecond || took > shutdownTimeout+2*time.Second {
		t.Errorf("exited %s after SIGTERM with streams still open, want about the %s shutdown timeout", took, shutdownTimeout)
	}
	t.Logf("SIGTERM with %d streams: %d finished intact, %d closed at the timeout; exit 0 after %s", streams, intact, stuck, took)
}

// 9,000 connections held at once under a 20,000 descriptor limit: every one is served (two
// descriptors each in the gateway; etcd's gateway, at six, fails near 3,300).
func TestNineThousandConcurrentConnections(t *testing.T) {
	backend := testnet.Serve(t, func(c *net.TCPConn) { testnet.EchoBuffered(c) })
	listen := freeAddr(t)
	p := startProcess(t, 20000, listen, "--endpoints="+backend.Addr())
	const n = 9000
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var failed atomic.Int64
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				c, err := net.DialTimeout("tcp", listen, 5*time.Second)
				if err != nil {
					failed.Add(1)
					continue
				}
				conns[i] = c
				c.SetDeadline(time.Now().Add(defaultTestTimeout))
				if _, err := io.WriteString(c, "x"); err != nil {
					failed.Add(1)
					continue
				}
				if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d concurrent connections failed; stderr: %.2000s", f, n, p.stderr)
	}
	// All still open: each answers again.
	for _, c := range conns[:100] {
		echo(t, c, "y")
	}
}

// A client that sends without ever reading fills its own buffers and stalls only itself: the
// other clients keep getting their answers.
func TestClientThatNeverReadsDoesNotStallOthers(t *testing.T) {
	backend := testnet.Serve(t, func(c *net.TCPConn) { testnet.EchoBuffered(c) })
	listen := freeAddr(t)
	startProcess(t, 0, listen, "--endpoints="+backend.Addr())
	hog, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer hog.Close()
	hogged := make(chan int64, 1)
	var written atomic.Int64
	go func() { // writes until the buffers on the way are full and the write blocks for good
		hog.SetWriteDeadline(time.Now().Add(5 * time.Second))
		n, _ := io.Copy(countingWriter{hog, &written}, io.LimitReader(zeros{}, 1<<30))
		hogged <- n
	}()
	// Wait until the hog is stalled: its writes stop making progress.
	if !testnet.Eventually(defaultTestTimeout, func() bool {
		before := written.Load()
		settle := time.NewTimer(50 * time.Millisecond)
		<-settle.C
		return before > 0 && written.Load() == before
	}) {
		t.Fatal("the non-reading client never stalled")
	}
	var wg sync.WaitGroup
	var slowest atomic.Int64
	for range 10 {
		c, err := net.Dial("tcp", listen)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for range 200 {
				began := time.Now()
				c.SetDeadline(time.Now().Add(defaultTestTimeout))
				if _, err := c.Write(buf); err != nil {
					t.Error(err)
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					t.Error(err)
					return
				}
				if d := int64(time.Since(began)); d > slowest.Load() {
					slowest.Store(d)
				}
			}
		}()
	}
	wg.Wait()
	n := <-hogged
	if n >= 1<<30 {
		t.Fatal("the non-reading client's writes never blocked: nothing was buffered against it")
	}
	t.Logf("non-reading client stalled after %d MiB; slowest of 2,000 round trips of the others: %s", n>>20, time.Duration(slowest.Load()))
	if time.Duration(slowest.Load()) > time.Second {
		t.Errorf("a round trip of another client took %s while one client did not read", time.Duration(slowest.Load()))
	}
}

// countingWriter counts what it writes.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// getStatus does GET path on a gateway's --metrics-addr and returns the status and body; 0
// when it could not connect.
func getStatus(addr, path string) (int, string) {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// activeConnections sums etcd_gateway_endpoint_connections_active on a gateway's
// --metrics-addr.
func activeConnections(t *testing.T, addr string) int {
	_, body := getStatus(addr, "/metrics")
	total := 0
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, "etcd_gateway_endpoint_connections_active{"); ok {
			_, value, _ := strings.Cut(rest, "} ")
			n, _ := strconv.Atoi(value)
			total += n
		}
	}
	return total
}

// Through a drain, /healthz answers 200 and /readyz 503 "draining"; a second SIGTERM ends the
// drain at once, with one line that counts the connections it closed, and exit status 0.
func TestDrainAnswersHealthAndASecondSignalEndsIt(t *testing.T) {
	backend := testnet.Serve(t, func(c *net.TCPConn) { testnet.EchoBuffered(c) })
	listen, metrics := freeAddr(t), freeAddr(t)
	p := startProcess(t, 0, listen, "--endpoints="+backend.Addr(), "--health-check=tcp", "--shutdown-timeout=1m",
		"--metrics-addr="+metrics)
	for range 3 {
		c, err := net.Dial("tcp", listen)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		echo(t, c, "live")
	}
	if code, body := getStatus(metrics, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz before the drain = %d %q", code, body)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if !testnet.Eventually(defaultTestTimeout, func() bool {
		code, body := getStatus(metrics, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "draining")
	}) {
		code, body := getStatus(metrics, "/readyz")
		t.Fatalf("/readyz during the drain = %d %q, want 503 draining", code, body)
	}
	if code, body := getStatus(metrics, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz during the drain = %d %q, want 200", code, body)
	}
	select {
	case <-p.done:
		t.Fatalf("the gateway exited during a drain of a minute: %s", p.stderr)
	default:
	}
	began := time.Now()
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status %d after a second SIGTERM: %s", code, p.stderr)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("exited %s after the second SIGTERM, want at once", took)
	}
	var cutLines []string
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		if strings.Contains(line, "drain ended by a second signal") {
			cutLines = append(cutLines, line)
		}
	}
	if len(cutLines) != 1 || !strings.Contains(cutLines[0], `"connections_closed":3`) {
		t.Fatalf("log lines about the cut drain: %q, want one that counts 3 connections", cutLines)
	}
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
