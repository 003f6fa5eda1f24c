package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// chaosDuration is how long the integrity test kills and restarts backends under load.
const chaosDuration = 2 * time.Minute

// checksumBackend reads a stream "id=N\n" + payload to EOF and answers
// "id=N backend=NAME n=LEN sha=HEX\n". It can be killed (every connection reset, the port
// closed) and restarted on the same port.
type checksumBackend struct {
	name string
	addr string

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
	kills  []time.Time     // when it was killed
	served map[string]bool // stream ids whose header it read
	wg     sync.WaitGroup
}

func newChecksumBackend(t *testing.T, name string) *checksumBackend {
	b := &checksumBackend{name: name, addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), conns: map[net.Conn]bool{}, served: map[string]bool{}}
	b.start(t)
	t.Cleanup(func() { b.kill() })
	return b
}

func (b *checksumBackend) start(t *testing.T) {
	ln, err := net.Listen("tcp", b.addr)
	if err != nil {
		t.Errorf("restart %s: %v", b.name, err)
		return
	}
	b.mu.Lock()
	b.ln = ln
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns[c] = true
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				b.serve(c)
				b.mu.Lock()
				delete(b.conns, c)
				b.mu.Unlock()
				c.Close()
			}()
		}
	}()
}

func (b *checksumBackend) serve(c net.Conn) {
	r := bufio.NewReader(c)
	header, err := r.ReadString('\n')
	if err != nil {
		return
	}
	id := strings.TrimSpace(strings.TrimPrefix(header, "id="))
	b.mu.Lock()
	b.served[id] = true
	b.mu.Unlock()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return
	}
	fmt.Fprintf(c, "id=%s backend=%s n=%d sha=%s\n", id, b.name, n, hex.EncodeToString(h.Sum(nil)))
}

// kill resets every connection and closes the port, as a crashed process would.
func (b *checksumBackend) kill() {
	b.mu.Lock()
	if b.ln != nil {
		b.ln.Close()
		b.ln = nil
	}
	for c := range b.conns {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	b.kills = append(b.kills, time.Now())
	b.mu.Unlock()
	b.wg.Wait()
}

// killedBetween reports whether b was killed between from and to.
func (b *checksumBackend) killedBetween(from, to time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, k := range b.kills {
		if !k.Before(from) && !k.After(to) {
			return true
		}
	}
	return false
}

// streamedTo returns the backend that read stream id's header, or nil.
func streamedTo(backends []*checksumBackend, id string) *checksumBackend {
	for _, b := range backends {
		b.mu.Lock()
		ok := b.served[id]
		b.mu.Unlock()
		if ok {
			return b
		}
	}
	return nil
}

// reactionTime is how long after a backend's kill the gateway may still close connections to
// it: until its probe or a failed dial has marked it down and the eviction has run. A stream
// opened to a restarted backend in that window may be closed with the rest.
const reactionTime = 3 * time.Second

// Streams through the gateway while backends are killed and restarted at random: a stream
// whose backend stays up completes with the right checksum, one whose backend dies ends early,
// and no stream ever receives different bytes or another stream's answer.
func TestStreamIntegrityUnderBackendChaos(t *testing.T) {
	t.Parallel()
	var backends []*checksumBackend
	var eps []string
	for i := range 3 {
		b := newChecksumBackend(t, fmt.Sprintf("b%d", i))
		backends = append(backends, b)
		eps = append(eps, b.addr)
	}
	gw := startGatewayArgs(t, "--endpoints="+strings.Join(eps, ","), "--health-check=tcp", "--retry-delay=1s", "--log-level=info")

	stop := make(chan struct{})
	var chaos sync.WaitGroup
	var kills atomic.Int64
	chaos.Add(1)
	go func() { // one backend down at a time, for 0.3-1.5 s, every 0.5-2 s
		defer chaos.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(500+rand.IntN(1500)) * time.Millisecond):
			}
			b := backends[rand.IntN(len(backends))]
			b.kill()
			kills.Add(1)
			time.Sleep(time.Duration(300+rand.IntN(1200)) * time.Millisecond)
			b.start(t)
		}
	}()

	var (
		completed, endedEarly, refused atomic.Int64
		failMu                         sync.Mutex
		failures                       []string
	)
	fail := func(format string, args ...any) {
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	var clients sync.WaitGroup
	deadline := time.Now().Add(chaosDuration)
	for w := range 16 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				payload := make([]byte, 1+rand.IntN(512<<10))
				for j := range payload {
					payload[j] = byte(rand.Uint32())
				}
				began := time.Now()
				reply, err := stream(gw.addr, id, payload)
				b := streamedTo(backends, id)
				switch {
				case err == nil:
					sum := sha256.Sum256(payload)
					want := fmt.Sprintf("id=%s backend=%s n=%d sha=%s", id, b.nameOrNone(), len(payload), hex.EncodeToString(sum[:]))
					if reply != want {
						fail("stream %s: got %q, want %q", id, reply, want)
						continue
					}
					completed.Add(1)
				case b == nil:
					refused.Add(1) // never reached a backend: closed by the gateway, or no backend up
				default:
					if !b.killedBetween(began.Add(-reactionTime), time.Now()) {
						fail("stream %s to %s ended early (%v) though its backend was not killed", id, b.name, err)
						continue
					}
					endedEarly.Add(1)
				}
			}
		}()
	}
	clients.Wait()
	close(stop)
	chaos.Wait()
	t.Logf("%s of chaos: %d backend kills; %d streams completed intact, %d ended early with their backend, %d never reached a backend",
		chaosDuration, kills.Load(), completed.Load(), endedEarly.Load(), refused.Load())
	for _, f := range failures {
		t.Error(f)
	}
	if completed.Load() < 100 {
		t.Errorf("only %d streams completed in %s", completed.Load(), chaosDuration)
	}
}

func (b *checksumBackend) nameOrNone() string {
	if b == nil {
		return "none"
	}
	return b.name
}

// stream sends "id=ID\n" and payload through the gateway, half-closes, and reads the answer to
// the end. It returns the answer's line, or an error when the stream ended without a whole one.
func stream(addr, id string, payload []byte) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	sent := make(chan error, 1)
	go func() {
		_, err := c.Write(append([]byte("id="+id+"\n"), payload...))
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		sent <- err
	}()
	answer, err := io.ReadAll(c)
	if werr := <-sent; err == nil && werr != nil {
		err = werr
	}
	if err != nil {
		return "", err
	}
	line, ok := strings.CutSuffix(string(answer), "\n")
	if !ok || strings.Contains(line, "\n") {
		if len(answer) == 0 {
			return "", io.ErrUnexpectedEOF
		}
		return "", errors.New("incomplete answer " + strconv.Quote(string(answer)))
	}
	return line, nil
}

// etcdChaosDuration is how long members are killed and restarted under puts and a watch.
const etcdChaosDuration = time.Minute

// Through the gateway while members are killed with SIGKILL and restarted (one at a time):
// every put the cluster acknowledged is readable afterwards, and a watch that resumes from its
// last revision whenever it breaks sees every acknowledged put.
func TestEtcdSemanticsUnderMemberChaos(t *testing.T) {
	t.Parallel()
	members := startCluster(t, 3)
	gw := startGateway(t, members)

	start, err := newClient(t, gw.addr).Put(ctxT(t), "chaos/start", "x")
	if err != nil {
		t.Fatal(err)
	}
	var (
		watchMu sync.Mutex
		seen    = map[int64]string{} // revision → key, as the watch delivered it
		resumes int
	)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	watcher := newClient(t, gw.addr)
	go func() { // resumes from the revision after the last one seen whenever the watch breaks
		defer close(watchDone)
		next := start.Header.Revision + 1
		for watchCtx.Err() == nil {
			for resp := range watcher.Watch(clientv3.WithRequireLeader(watchCtx), "chaos/k", clientv3.WithPrefix(), clientv3.WithRev(next)) {
				if resp.Err() != nil {
					break
				}
				watchMu.Lock()
				for _, ev := range resp.Events {
					seen[ev.Kv.ModRevision] = string(ev.Kv.Key)
					next = ev.Kv.ModRevision + 1
				}
				watchMu.Unlock()
			}
			watchMu.Lock()
			resumes++
			watchMu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()

	stop := make(chan struct{})
	var chaos sync.WaitGroup
	var kills atomic.Int64
	chaos.Add(1)
	go func() {
		defer chaos.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(2000+rand.IntN(2000)) * time.Millisecond):
			}
			m := members[rand.IntN(len(members))]
			m.proc.kill()
			kills.Add(1)
			time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Millisecond)
			m.restart(t)
		}
	}()

	type acked struct {
		key string
		rev int64
	}
	var (
		ackMu   sync.Mutex
		acks    []acked
		unacked atomic.Int64
	)
	var writers sync.WaitGroup
	deadline := time.Now().Add(etcdChaosDuration)
	for w := range 4 {
		writers.Add(1)
		cl := newClient(t, gw.addr)
		go func() {
			defer writers.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				key := fmt.Sprintf("chaos/k/%d/%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				resp, err := cl.Put(ctx, key, key)
				cancel()
				if err != nil {
					unacked.Add(1) // may or may not have been applied: not checked
					continue
				}
				ackMu.Lock()
				acks = append(acks, acked{key, resp.Header.Revision})
				ackMu.Unlock()
			}
		}()
	}
	writers.Wait()
	close(stop)
	chaos.Wait()
	for _, m := range members {
		if m.proc.exited() {
			m.restart(t)
		}
	}

	reader := newClient(t, gw.addr)
	var lost []string
	for _, a := range acks {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := reader.Get(ctx, a.key)
		cancel()
		if err != nil {
			t.Fatalf("read back %s: %v", a.key, err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != a.key || resp.Kvs[0].ModRevision != a.rev {
			lost = append(lost, a.key)
		}
	}
	// The watch must catch up to the last acknowledged revision, then hold every one.
	last := int64(0)
	for _, a := range acks {
		last = max(last, a.rev)
	}
	caughtUp := false
	for wait := time.Now().Add(20 * time.Second); time.Now().Before(wait); time.Sleep(50 * time.Millisecond) {
		watchMu.Lock()
		_, caughtUp = seen[last]
		watchMu.Unlock()
		if caughtUp {
			break
		}
	}
	stopWatch()
	<-watchDone
	var missed []string
	for _, a := range acks {
		if seen[a.rev] != a.key {
			missed = append(missed, a.key)
		}
	}
	t.Logf("%s of chaos: %d member kills; %d puts acknowledged, %d not; watch resumed %d times",
		etcdChaosDuration, kills.Load(), len(acks), unacked.Load(), resumes)
	if len(lost) > 0 {
		t.Errorf("%d acknowledged puts not readable afterwards, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
	if !caughtUp || len(missed) > 0 {
		t.Errorf("the resumed watch missed %d acknowledged puts (caught up: %v), e.g. %v", len(missed), caughtUp, missed[:min(5, len(missed))])
	}
	if len(acks) < 100 {
		t.Errorf("only %d puts acknowledged in %s", len(acks), etcdChaosDuration)
	}
}
