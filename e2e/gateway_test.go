package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// ctxT returns a context bounded by the default test timeout.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// clientv3 through the gateway: put, linearizable get, a transaction, a 1.5 MiB value and a
// lease kept alive past its TTL.
func TestClientThroughGateway(t *testing.T) {
	t.Parallel()
	members := startCluster(t, 3)
	gw := startGateway(t, members)
	c := newClient(t, gw.addr)
	ctx := ctxT(t)

	if _, err := c.Put(ctx, "greeting", "hello"); err != nil {
		t.Fatalf("put: %v", err)
	}
	resp, err := c.Get(ctx, "greeting") // linearizable by default
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "hello" {
		t.Fatalf("linearizable get = %v, %v", resp, err)
	}

	txn, err := c.Txn(ctx).
		If(clientv3.Compare(clientv3.Value("greeting"), "=", "hello")).
		Then(clientv3.OpPut("greeting", "bonjour"), clientv3.OpPut("txn", "applied")).
		Else(clientv3.OpPut("txn", "not applied")).
		Commit()
	if err != nil || !txn.Succeeded {
		t.Fatalf("txn = %v, %v", txn, err)
	}
	if resp, err := c.Get(ctx, "greeting"); err != nil || string(resp.Kvs[0].Value) != "bonjour" {
		t.Fatalf("get after txn = %v, %v", resp, err)
	}

	big := make([]byte, 1536*1024)
	rand.Read(big)
	if _, err := c.Put(ctx, "big", string(big)); err != nil {
		t.Fatalf("put 1.5 MiB: %v", err)
	}
	if resp, err := c.Get(ctx, "big"); err != nil || !bytes.Equal(resp.Kvs[0].Value, big) {
		t.Fatalf("1.5 MiB value did not come back intact: %v", err)
	}

	lease, err := c.Grant(ctx, 2)
	if err != nil {
		t.Fatalf("grant: %v", err)
	}
	if _, err := c.Put(ctx, "leased", "alive", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	kaCtx, stopKeepAlive := context.WithCancel(ctx)
	defer stopKeepAlive()
	ka, err := c.KeepAlive(kaCtx, lease.ID)
	if err != nil {
		t.Fatalf("keep-alive: %v", err)
	}
	renewals := 0
	for deadline := time.After(5 * time.Second); renewals >= 0; {
		select {
		case r, ok := <-ka:
			if !ok {
				t.Fatal("keep-alive channel closed")
			}
			if r.TTL <= 0 {
				t.Fatalf("lease expired: %v", r)
			}
			renewals++
			continue
		case <-deadline:
		}
		break
	}
	if renewals < 2 {
		t.Errorf("%d keep-alive answers in 5s for a 2s lease", renewals)
	}
	if resp, err := c.Get(ctx, "leased"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("leased key gone after 5s of keep-alive through the gateway: %v, %v", resp, err)
	}
}

// A watch through the gateway that stays idle for 30 s still receives its event: the gateway
// sets no idle deadline.
func TestIdleWatchThroughGateway(t *testing.T) {
	t.Parallel()
	members := startCluster(t, 3)
	gw := startGateway(t, members)
	watcher := newClient(t, gw.addr)
	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wch := watcher.Watch(clientv3.WithRequireLeader(wctx), "watched")
	// Make sure the watch is registered before idling.
	if _, err := watcher.Put(ctxT(t), "warm-up", "x"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Second)
	writer := newClient(t, members[0].client)
	if _, err := writer.Put(ctxT(t), "watched", "after 30s"); err != nil {
		t.Fatal(err)
	}
	select {
	case resp, ok := <-wch:
		if !ok || resp.Err() != nil || len(resp.Events) != 1 || string(resp.Events[0].Kv.Value) != "after 30s" {
			t.Fatalf("watch response = %+v (open %v)", resp, ok)
		}
	case <-time.After(defaultTestTimeout):
		t.Fatal("idle watch never received the event")
	}
}

func TestEtcdctlThroughGateway(t *testing.T) {
	t.Parallel()
	members := startCluster(t, 3)
	gw := startGateway(t, members)
	ctl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(etcdctlBin, append([]string{"--endpoints=" + gw.addr, "--command-timeout=10s"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("etcdctl %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := ctl("put", "foo", "bar"); strings.TrimSpace(out) != "OK" {
		t.Fatalf("etcdctl put: %q", out)
	}
	if out := ctl("get", "foo", "--print-value-only"); strings.TrimSpace(out) != "bar" {
		t.Fatalf("etcdctl get: %q", out)
	}
	if out := ctl("endpoint", "health"); !strings.Contains(out, "is healthy") {
		t.Fatalf("etcdctl endpoint health: %q", out)
	}
}

// kill -9 of one member while 4 clients keep opening new connections through the gateway for
// 10 s: no request started after the kill fails.
func TestKillMemberWhileClientsConnect(t *testing.T) {
	t.Parallel()
	members := startCluster(t, 3)
	gw := startGateway(t, members)
	// A follower is killed, so that the failures counted are the gateway's and not those of
	// a leader election, which a linearizable read may report while it runs.
	victim := members[(leader(t, members)+1)%len(members)]

	var killedAt atomic.Int64 // unix nanos; 0 until the kill
	type failure struct {
		started time.Time
		err     error
	}
	var (
		mu       sync.Mutex
		failures []failure
		total    atomic.Int64
		after    atomic.Int64
	)
	// At least 10 s, and at least 100 requests after the kill: on a loaded machine the race-
	// enabled gateway serves fewer a second. Bounded at 60 s.
	began := time.Now()
	running := func() bool {
		return time.Since(began) < 60*time.Second && (time.Since(began) < 10*time.Second || after.Load() < 100)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; running(); i++ {
				started := time.Now()
				err := oneRequest(gw.addr, fmt.Sprintf("w%d-%d", w, i))
				total.Add(1)
				if k := killedAt.Load(); k != 0 && started.UnixNano() > k {
					after.Add(1)
					if err != nil {
						mu.Lock()
						failures = append(failures, failure{started, err})
						mu.Unlock()
					}
				}
			}
		}()
	}
	time.Sleep(2 * time.Second)
	victim.proc.cmd.Process.Kill()
	killedAt.Store(time.Now().UnixNano())
	wg.Wait()

	t.Logf("%d requests in all, %d started after the kill of %s, %d failed", total.Load(), after.Load(), victim.name, len(failures))
	if after.Load() < 100 {
		t.Errorf("only %d requests after the kill; the test did not exercise the gateway", after.Load())
	}
	for _, f := range failures {
		t.Errorf("request started %s after the kill failed: %v", f.started.Sub(time.Unix(0, killedAt.Load())), f.err)
	}
}

// oneRequest opens a new client connection through the gateway and does one Get with a 3 s
// timeout, as the fault workloads of the benchmarks do.
func oneRequest(addr, key string) error { return oneRequestTimeout(addr, key, 3*time.Second) }

// oneRequestTimeout is oneRequest with another timeout.
func oneRequestTimeout(addr, key string, timeout time.Duration) error {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, DialTimeout: timeout, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err = c.Get(ctx, key)
	return err
}

// The examples of etcd's gateway page work as written: members listed without a port mean
// port 2379, --endpoints given twice adds up, and the log says etcd's own "ready to proxy
// client requests" once the endpoints are known.
func TestEndpointsAsEtcdsPageWritesThem(t *testing.T) {
	t.Parallel()
	const etcdPort = "127.0.0.1:2379"
	if ln, err := net.Listen("tcp", etcdPort); err != nil {
		t.Fatalf("this test runs a member on etcd's client port, %s, which is taken on this host: %v; free it and run again", etcdPort, err)
	} else {
		ln.Close()
	}
	c := launchCluster(t, 3, &cluster{scheme: "http", flags: func(string) []string { return nil }, clientAddrs: map[string]string{"m0": etcdPort}})
	gw := startGatewayArgs(t, "--endpoints=127.0.0.1", "--endpoints="+c.members[1].client+","+c.members[2].client)
	if !waitLog(gw, "ready to proxy client requests", defaultTestTimeout) {
		t.Fatalf("no ready line:\n%s", gw.proc.out)
	}
	if n := strings.Count(gw.proc.out.String(), "ready to proxy client requests"); n != 1 {
		t.Errorf("%d ready lines, want 1", n)
	}
	if !strings.Contains(gw.proc.out.String(), "endpoint given without a port") {
		t.Errorf("no line says which endpoint got port 2379:\n%s", gw.proc.out)
	}
	if seen := membersThroughGateway(t, gw.addr, nil, 30); len(seen) != 3 {
		t.Errorf("30 connections reached %d members, want all 3 of both --endpoints: %v", len(seen), seen)
	}
}
