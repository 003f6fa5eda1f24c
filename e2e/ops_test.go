package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// writeFile replaces path with text the way configuration tools do: a new file renamed over it.
func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// onlyMember waits until every new connection through the gateway reaches the member id.
func onlyMember(t *testing.T, c *cluster, addr string, id uint64) {
	t.Helper()
	deadline := time.Now().Add(defaultTestTimeout)
	for {
		seen := membersThroughGateway(t, addr, c.clientTLS, 6)
		if len(seen) == 1 && seen[id] == 6 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("new connections reach members %v, want only %x", seen, id)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// SIGHUP with a changed --endpoints-file moves new connections to the new endpoints while a
// watch through the gateway keeps running; a malformed file keeps the set.
func TestEndpointsFileReload(t *testing.T) {
	t.Parallel()
	c := launchCluster(t, 3, &cluster{scheme: "http", flags: func(string) []string { return nil }})
	members := c.members
	file := filepath.Join(t.TempDir(), "endpoints")
	writeFile(t, file, "# first member only\n"+members[0].client+"\n")
	gw := startGatewayArgs(t, "--endpoints-file="+file)
	id0, id1 := memberID(t, c, members[0]), memberID(t, c, members[1])
	onlyMember(t, c, gw.addr, id0)

	watcher := newClient(t, gw.addr)
	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wch := watcher.Watch(clientv3.WithRequireLeader(wctx), "reloaded")
	if _, err := watcher.Put(ctxT(t), "warm-up", "x"); err != nil { // the watch is registered
		t.Fatal(err)
	}

	writeFile(t, file, members[1].client+"  # moved\n")
	gw.proc.cmd.Process.Signal(syscall.SIGHUP)
	onlyMember(t, c, gw.addr, id1)
	if !waitLog(gw, "endpoints file loaded", defaultTestTimeout) {
		t.Fatal("the reload was not logged")
	}

	writeFile(t, file, members[2].client+"\nnot an endpoint\n")
	gw.proc.cmd.Process.Signal(syscall.SIGHUP)
	if !waitLog(gw, "endpoints file refused", defaultTestTimeout) {
		t.Fatalf("a malformed endpoints file was not refused: %s", gw.proc.out)
	}
	onlyMember(t, c, gw.addr, id1)

	writer := newClient(t, members[2].client)
	if _, err := writer.Put(ctxT(t), "reloaded", "still watching"); err != nil {
		t.Fatal(err)
	}
	select {
	case resp, ok := <-wch:
		if !ok || resp.Err() != nil || len(resp.Events) != 1 || string(resp.Events[0].Kv.Value) != "still watching" {
			t.Fatalf("watch response after the reloads = %+v (open %v)", resp, ok)
		}
	case <-time.After(defaultTestTimeout):
		t.Fatal("the watch opened before the reload never got its event")
	}
}

// --listen-addr=unix:///PATH carries etcdctl traffic over a Unix socket.
func TestUnixSocketListener(t *testing.T) {
	t.Parallel()
	members := startCluster(t, 3)
	sock := filepath.Join(t.TempDir(), "etcd.sock")
	startGatewayOn(t, "unix://"+sock, "--endpoints="+endpointsOf(members), "--listen-socket-mode=0600")
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %s: mode %v, %v; want 0600", sock, fi.Mode().Perm(), err)
	}
	ctl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(etcdctlBin, append([]string{"--endpoints=unix://" + sock, "--command-timeout=10s"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("etcdctl %s: %v: %.500s", args[0], err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// 100 kB: more than one read of the copy path, within one argument's limit.
	value := strings.Repeat("u", 100_000)
	if out := ctl("put", "over-unix", value); out != "OK" {
		t.Fatalf("etcdctl put over the unix socket: %.500q", out)
	}
	if out := ctl("get", "over-unix", "--print-value-only"); out != value {
		t.Fatalf("etcdctl get over the unix socket returned %d bytes", len(out))
	}
}

// runCheck runs etcd-gateway check with args and returns its output and exit status.
func runCheck(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(gatewayBin, append([]string{"check"}, args...)...).CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "DATA RACE") {
		t.Fatalf("data race in check:\n%s", out)
	}
	if exit != nil {
		return string(out), exit.ExitCode()
	}
	return string(out), 0
}

// check exits 0 with a table when an endpoint is healthy, 1 when none is, 2 on bad input.
func TestCheckCommand(t *testing.T) {
	t.Parallel()
	members := startCluster(t, 3)
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	run := func(args ...string) (string, int) { return runCheck(t, args...) }
	out, code := run("--endpoints=" + endpointsOf(members) + "," + dead)
	if code != 0 {
		t.Fatalf("check of a healthy cluster exited %d:\n%s", code, out)
	}
	for _, m := range members {
		if !strings.Contains(out, m.client) {
			t.Errorf("check output does not list %s:\n%s", m.client, out)
		}
	}
	if !strings.Contains(out, "3 of 4 endpoints healthy") || !strings.Contains(out, dead) || !strings.Contains(out, "down") {
		t.Errorf("check output does not show the dead endpoint as down:\n%s", out)
	}
	if n := strings.Count(out, " http "); n != 3 {
		t.Errorf("check output shows %d members as http, want the 3 plain ones:\n%s", n, out)
	}
	if out, code := run("--endpoints=" + dead); code != 1 || !strings.Contains(out, "0 of 1 endpoints healthy") {
		t.Errorf("check with no healthy endpoint exited %d, want 1:\n%s", code, out)
	}
	if out, code := run("--endpoints=https://" + dead); code != 2 || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("check with bad input exited %d, want 2 with one line:\n%s", code, out)
	}
}
