//go:build soak

package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// soakDuration is how long the soak runs; SOAK_DURATION overrides it (make soak: 10m).
func soakDuration(t *testing.T) time.Duration {
	d := 10 * time.Minute
	if s := os.Getenv("SOAK_DURATION"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			t.Fatalf("SOAK_DURATION=%q: %v", s, err)
		}
	}
	return d
}

// gatewayResources reads the gateway's goroutines, open descriptors and RSS from /metrics.
func gatewayResources(sc statusClient) (goroutines, fds, rss float64) {
	mfs := sc.metrics()
	goroutines, _ = sum(mfs, "go_goroutines", nil)
	fds, _ = sum(mfs, "process_open_fds", nil)
	rss, _ = sum(mfs, "process_resident_memory_bytes", nil)
	return goroutines, fds, rss
}

// Connection churn and random member faults (SIGKILL and restart, SIGSTOP and SIGCONT) for
// the soak duration: afterwards the gateway's goroutines, descriptors and memory are back to
// where they started.
func TestSoak(t *testing.T) {
	d := soakDuration(t)
	// The release build: the race detector's shadow memory would hide what the gateway holds.
	release, err := filepath.Abs("../bin/etcd-gateway")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(release); err != nil {
		t.Fatalf("%v; run make soak, which builds it", err)
	}
	raceBuilt := gatewayBin
	gatewayBin = release
	t.Cleanup(func() { gatewayBin = raceBuilt })
	members := startCluster(t, 3)
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	gw := startGateway(t, members, "--metrics-addr="+metricsAddr, "--log-level=info")
	sc := statusClient{t: t, base: "http://" + metricsAddr}

	warm := time.Now().Add(5 * time.Second)
	for time.Now().Before(warm) {
		oneRequest(gw.addr, "soak-warm-up")
	}
	time.Sleep(2 * time.Second)
	g0, fd0, rss0 := gatewayResources(sc)

	began := time.Now()
	load := startLoad(gw.addr)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var faults atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(5+rand.IntN(10)) * time.Second):
			}
			m := members[rand.IntN(len(members))]
			faults.Add(1)
			if rand.IntN(2) == 0 {
				m.proc.kill()
				time.Sleep(3 * time.Second)
				m.restart(t)
			} else {
				m.proc.cmd.Process.Signal(syscall.SIGSTOP)
				time.Sleep(3 * time.Second)
				m.proc.cmd.Process.Signal(syscall.SIGCONT)
			}
		}
	}()
	time.Sleep(d)
	close(stop)
	wg.Wait()
	load.finish()
	total, failed := load.since(began)

	// Let evicted and closed connections, probes and the runtime settle.
	time.Sleep(10 * time.Second)
	g1, fd1, rss1 := gatewayResources(sc)
	t.Logf("soak of %s: %d requests, %d failed, %d member faults", d, total, len(failed), faults.Load())
	t.Logf("goroutines %v -> %v, descriptors %v -> %v, RSS %.1f -> %.1f MiB", g0, g1, fd0, fd1, rss0/(1<<20), rss1/(1<<20))
	if g1 > g0+5 {
		t.Errorf("goroutines grew from %v to %v", g0, g1)
	}
	if fd1 > fd0+5 {
		t.Errorf("open descriptors grew from %v to %v", fd0, fd1)
	}
	if rss1 > 1.5*rss0 {
		t.Errorf("RSS grew from %.1f to %.1f MiB", rss0/(1<<20), rss1/(1<<20))
	}
}
