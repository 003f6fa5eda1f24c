package listener

import (
	"context"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// DialFunc connects a client connection to a backend; *dialer.Dialer's Dial is one.
type DialFunc func(ctx context.Context) (*net.TCPConn, resolver.Endpoint, error)

// Forwarder runs proxied connections: for each client it dials a backend and pipes bytes both
// ways. It owns the goroutines of every connection and outlives restarts of the accept loop;
// Shutdown drains and ends them.
type Forwarder struct {
	dial   DialFunc
	log    *zap.Logger
	ctx    context.Context // ends dials in flight at the end of Shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	live map[*net.TCPConn]resolver.Endpoint // client side of every forwarded connection → its member
}

// NewForwarder returns a Forwarder that dials backends with dial.
func NewForwarder(dial DialFunc, log *zap.Logger) *Forwarder {
	ctx, cancel := context.WithCancel(context.Background())
	return &Forwarder{
		dial:   dial,
		log:    log.Named("listener"),
		ctx:    ctx,
		cancel: cancel,
		live:   make(map[*net.TCPConn]resolver.Endpoint),
	}
}

// Forward takes ownership of client and proxies it on a goroutine of its own.
func (f *Forwarder) Forward(client *net.TCPConn) {
	f.wg.Add(1)
	go f.serve(client)
}

// Active returns the number of connections being forwarded now.
func (f *Forwarder) Active() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.live)
}

func (f *Forwarder) serve(client *net.TCPConn) {
	defer f.wg.Done()
	defer func() {
		if p := recover(); p != nil {
			client.Close()
			f.log.Error("panic in proxied connection; closed it",
				zap.Any("panic", p), zap.Stringer("remote_addr", client.RemoteAddr()), zap.Stack("stack"))
		}
	}()
	started := time.Now()
	backend, ep, err := f.dial(f.ctx)
	if err != nil {
		client.Close()
		if ce := f.log.Check(zap.DebugLevel, "client refused: no endpoint reachable"); ce != nil {
			ce.Write(zap.Stringer("remote_addr", client.RemoteAddr()), zap.Error(err))
		}
		return
	}
	f.track(client, ep)
	p := &proxied{client: client, backend: backend, wg: &f.wg, done: func(p *proxied) {
		f.untrack(client)
		if ce := f.log.Check(zap.DebugLevel, "proxied connection closed"); ce != nil {
			ce.Write(zap.Stringer("remote_addr", client.RemoteAddr()), zap.Stringer("endpoint", ep),
				zap.Int64("bytes_up", p.up), zap.Int64("bytes_down", p.down),
				zap.Duration("duration", time.Since(started)), zap.Error(p.err()))
		}
	}}
	p.start()
}

func (f *Forwarder) track(c *net.TCPConn, ep resolver.Endpoint) {
	f.mu.Lock()
	f.live[c] = ep
	f.mu.Unlock()
}

// evictionPace is the pause between two evicted connections: a few clients move at once, and
// thousands are spread over at most the eviction spread.
const evictionPace = time.Millisecond

// Evict closes every connection proxied to ep, one every millisecond or, when there are more
// than spread allows at that pace, evenly over spread, so that their clients do not all
// reconnect at once. It returns how many it closed.
func (f *Forwarder) Evict(ctx context.Context, ep resolver.Endpoint, spread time.Duration) int {
	f.mu.Lock()
	var victims []*net.TCPConn
	for c, to := range f.live {
		if to == ep {
			victims = append(victims, c)
		}
	}
	f.mu.Unlock()
	pace := min(evictionPace, spread/time.Duration(max(len(victims), 1)))
	for i, c := range victims {
		if i > 0 {
			t := time.NewTimer(pace)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return i
			}
		}
		c.Close()
	}
	return len(victims)
}

func (f *Forwarder) untrack(c *net.TCPConn) {
	f.mu.Lock()
	delete(f.live, c)
	f.mu.Unlock()
}

// Shutdown waits up to grace for live connections to finish, then closes the rest and waits
// for their goroutines. It returns how many connections it had to close. Call it once, after
// the accept loop has stopped.
func (f *Forwarder) Shutdown(grace time.Duration) int {
	done := make(chan struct{})
	go func() {
		f.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
		f.cancel()
		return 0
	case <-t.C:
	}
	f.cancel()
	f.mu.Lock()
	closed := len(f.live)
	for c := range f.live {
		c.Close()
	}
	f.mu.Unlock()
	<-done
	return closed
}
