package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
)

// load runs 4 workers, each opening a new client connection through the gateway and doing one
// Get with a 3 s timeout, until stop is closed. It returns, per request, when it started and
// whether it failed.
type load struct {
	mu       sync.Mutex
	requests []request
	stop     chan struct{}
	wg       sync.WaitGroup
}

type request struct {
	started time.Time
	err     error
}

func startLoad(addr string) *load {
	l := &load{stop: make(chan struct{})}
	for w := range 4 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				started := time.Now()
				err := oneRequest(addr, fmt.Sprintf("load-%d-%d", w, i))
				l.mu.Lock()
				l.requests = append(l.requests, request{started, err})
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// finish stops the workers.
func (l *load) finish() {
	close(l.stop)
	l.wg.Wait()
}

// since returns how many requests started at or after from, and those of them that failed.
func (l *load) since(from time.Time) (total int, failed []request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.requests {
		if r.started.Before(from) {
			continue
		}
		total++
		if r.err != nil {
			failed = append(failed, r)
		}
	}
	return total, failed
}

// clientOn returns a client through the gateway whose connection is served by the member
// with ID id.
func clientOn(t *testing.T, addr string, cfg *tls.Config, id uint64) *clientv3.Client {
	t.Helper()
	for range 50 {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, DialTimeout: 3 * time.Second, TLS: cfg, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		resp, err := c.Get(ctx, "which")
		cancel()
		if err == nil && resp.Header.MemberId == id {
			t.Cleanup(func() { c.Close() })
			return c
		}
		c.Close()
	}
	t.Fatalf("no connection through the gateway reached member %x", id)
	return nil
}

// A member frozen with SIGSTOP accepts TCP and answers nothing. The gateway takes it out of
// rotation and closes the connections to it, so a client connected to it is served again by
// another member, and new clients are not sent to it.
func TestFrozenMember(t *testing.T) {
	t.Parallel()
	members := startCluster(t, 3)
	gw := startGateway(t, members)
	victim := members[(leader(t, members)+1)%3] // a follower, so the cluster keeps its leader
	victimID := memberID(t, &cluster{}, victim)
	stuck := clientOn(t, gw.addr, nil, victimID)

	l := startLoad(gw.addr)
	time.Sleep(time.Second)
	frozen := time.Now()
	victim.proc.cmd.Process.Signal(syscall.SIGSTOP)
	defer victim.proc.cmd.Process.Signal(syscall.SIGCONT)
	if err := testnet.WaitStopped(victim.proc.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := stuck.Get(ctx, "after-freeze")
	served := time.Since(frozen)
	if err != nil {
		t.Fatalf("the client connected to the frozen member was not served again: %v", err)
	}
	if resp.Header.MemberId == victimID {
		t.Fatal("served by the frozen member")
	}
	t.Logf("client connected to the frozen member served again after %s", served)
	if served > 2*time.Second { // heartbeats find it within 0.75 s; the margin absorbs a loaded machine
		t.Errorf("client connected to the frozen member waited %s", served)
	}
	time.Sleep(5 * time.Second)
	l.finish()
	all, failedAll := l.since(frozen)
	t.Logf("%d requests from the freeze on, %d failed", all, len(failedAll))
	total, failed := l.since(frozen.Add(1500 * time.Millisecond))
	for _, f := range failed {
		t.Errorf("request started %s after the freeze failed: %v", f.started.Sub(frozen), f.err)
	}
	if total < 50 {
		t.Errorf("only %d requests after the freeze: the load did not run", total)
	}
}

// Every member killed, then restarted: the gateway serves again within about a second of the
// first member being ready, whatever --retry-delay is.
func TestFullOutageRecovery(t *testing.T) {
	t.Parallel()
	members := startCluster(t, 3)
	gw := startGateway(t, members, "--retry-delay=1m")
	for _, m := range members {
		m.proc.kill()
	}
	// Wait until the gateway has seen them all down.
	time.Sleep(2 * time.Second)
	for _, m := range members {
		m.restart(t)
	}
	// The cluster is ready when a member first answers GET /readyz with 200.
	var ready atomic.Int64
	go func() {
		probe := &http.Client{Timeout: 200 * time.Millisecond}
		for deadline := time.Now().Add(defaultTestTimeout); time.Now().Before(deadline); {
			for _, m := range members {
				resp, err := probe.Get("http://" + m.client + "/readyz")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						ready.Store(time.Now().UnixNano())
						return
					}
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	deadline := time.Now().Add(defaultTestTimeout)
	var servedAt time.Time
	for time.Now().Before(deadline) {
		if oneRequestTimeout(gw.addr, "recovered", time.Second) == nil {
			servedAt = time.Now()
			break
		}
	}
	if servedAt.IsZero() {
		t.Fatal("the gateway never served again after the cluster came back")
	}
	for ready.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if ready.Load() == 0 {
		t.Fatal("no member ever answered /readyz")
	}
	lag := servedAt.Sub(time.Unix(0, ready.Load()))
	t.Logf("gateway served %s after the cluster was ready (negative: before the direct probe saw it)", lag)
	if lag > 2*time.Second {
		t.Errorf("gateway served %s after the cluster was ready, with --retry-delay=1m", lag)
	}
}

// Two of three members stopped: the survivor has no leader and is degraded, and serializable
// reads through the gateway still work.
func TestNoQuorumServesSerializableReads(t *testing.T) {
	t.Parallel()
	members := startCluster(t, 3)
	gw := startGateway(t, members)
	if _, err := newClient(t, gw.addr).Put(ctxT(t), "survives", "yes"); err != nil {
		t.Fatal(err)
	}
	members[1].proc.kill()
	members[2].proc.kill()
	deadline := time.Now().Add(defaultTestTimeout)
	for {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{gw.addr}, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		resp, err := c.Get(ctx, "survives", clientv3.WithSerializable())
		cancel()
		c.Close()
		if err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == "yes" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serializable read through the gateway without quorum: %v", err)
		}
	}
	if !waitLog(gw, `"to":"degraded"`, defaultTestTimeout) {
		t.Errorf("the survivor was never logged degraded:\n%s", gw.proc.out)
	}
}

// A listed endpoint that drops SYNs costs clients nothing.
func TestSYNDroppingEndpoint(t *testing.T) {
	t.Parallel()
	members := startCluster(t, 3)
	dropper := testnet.SYNDropper(t)
	gw := startGatewayArgs(t, "--endpoints="+endpointsOf(members)+","+dropper)
	began := time.Now()
	l := startLoad(gw.addr)
	time.Sleep(5 * time.Second)
	l.finish()
	total, failed := l.since(began)
	t.Logf("%d requests with an endpoint that drops SYNs, %d failed", total, len(failed))
	for _, f := range failed {
		t.Errorf("request started %s in failed: %v", f.started.Sub(began), f.err)
	}
}

// waitLog waits until the gateway has logged text.
func waitLog(g *gateway, text string, within time.Duration) bool {
	return eventually(within, func() bool { return strings.Contains(g.proc.out.String(), text) })
}
