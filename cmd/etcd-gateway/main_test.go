package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
)

const defaultTestTimeout = 10 * time.Second

// gatewayBin is the etcd-gateway binary built once for the tests that run it as a process.
var gatewayBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "etcd-gateway-cmd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gatewayBin = filepath.Join(dir, "etcd-gateway")
	build := exec.Command("go", "build", "-race", "-o", gatewayBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build etcd-gateway:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
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
		{"endpoint without port", []string{"start", "--endpoints=127.0.0.1"}},
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

// Under a low descriptor limit, more clients than it can hold make accept fail with EMFILE:
// the gateway backs off, keeps running, and serves normally once they leave.
func TestLowFileLimitKeepsServing(t *testing.T) {
	backend := testnet.Echo(t)
	listen := freeAddr(t)
	p := startProcess(t, 48, listen, "--endpoints="+backend.Addr())
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range 100 {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err != nil {
			continue // the backlog is full: the kernel drops the SYN
		}
		clients = append(clients, c)
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
