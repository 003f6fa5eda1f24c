package testnet

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// SyncBuffer is a bytes.Buffer that a child process writes to while a test reads it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var (
	portsMu    sync.Mutex
	portsTaken = map[int]bool{}
)

// gatewayDefaultPort is the port of the gateway's default --listen-addr. It is never handed
// out: a member there would be the listen address of every gateway command run without
// --listen-addr (etcd-gateway check), which refuses it.
const gatewayDefaultPort = 23790

// mayHandOut reports whether port may be handed out. Call it with portsMu held.
func mayHandOut(port int) bool { return port != gatewayDefaultPort && !portsTaken[port] }

// FreePort returns a loopback port that nothing listens on and that this process has not
// handed out before, for a child process to bind. It is drawn below the kernel's ephemeral
// range, so that the many client connections of tests and benchmarks cannot take it between
// this call and the bind.
func FreePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if !mayHandOut(port) {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		portsTaken[port] = true
		return port, nil
	}
	return 0, errors.New("no free loopback port between 20000 and 32000")
}

// WaitStopped waits up to 10 s until process pid is stopped by a signal (SIGSTOP is delivered
// asynchronously: kill returns before the target stops).
func WaitStopped(pid int) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return err
		}
		s := string(b)
		if state := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(state) > 0 && state[0] == "T" {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("process %d never stopped", pid)
}

// Build is one `go build` that a package's tests need before they run: args run in dir.
type Build struct {
	Dir  string
	Args []string
}

// RunWithBinaries is a TestMain body for tests that start binaries: it makes a temporary
// directory, lets builds name the binaries in it and runs those builds, runs the tests,
// removes the directory, and fails a passing run that leaked goroutines. It returns the exit
// status for os.Exit.
func RunWithBinaries(m *testing.M, prefix string, builds func(dir string) []Build) int {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	for _, b := range builds(dir) {
		cmd := exec.Command("go", b.Args...)
		cmd.Dir = b.Dir
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "go %s: %v\n", strings.Join(b.Args, " "), err)
			return 1
		}
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	return code
}
