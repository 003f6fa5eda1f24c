package listener

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// DialFunc connects a client connection to a backend; *dialer.Dialer's Dial is one. The Load,
// when not nil, counts the connection, and the Forwarder calls its Done when the connection
// ends.
type DialFunc func(ctx context.Context) (*net.TCPConn, resolver.Endpoint, *health.Load, error)

// Forwarder runs proxied connections: for each client it dials a backend and pipes bytes both
// ways. It owns the goroutines of every connection and outlives restarts of the accept loop;
// Shutdown drains and ends them.
type Forwarder struct {
	dial   DialFunc
	log    *zap.Logger
	ctx    context.Context // ends dials in flight at the end of Shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup

	counters *counters
	mu       sync.Mutex
	live     map[*proxied]struct{} // every forwarded connection
	shutdown bool                  // Shutdown has closed the live connections; take no more
}

// Counters returns the counters of every address the Forwarder has forwarded to, but for
// those dropped after they left the endpoint set. It loads atomics and takes no lock a
// connection takes.
func (f *Forwarder) Counters() map[resolver.HostPort]EndpointCounters { return f.counters.read() }

// ForwarderConfig is what a Forwarder works with.
type ForwarderConfig struct {
	Dial DialFunc // connects each client to a backend
	// Known says whether an address is in the endpoint set, for the retention of its counters;
	// nil keeps every address's counters.
	Known func(resolver.HostPort) bool
	Now   func() time.Time // the clock of the counters' retention; nil is time.Now
	Log   *zap.Logger
}

// NewForwarder returns a Forwarder of cfg.
func NewForwarder(cfg ForwarderConfig) *Forwarder {
	ctx, cancel := context.WithCancel(context.Background())
	return &Forwarder{
		dial:     cfg.Dial,
		counters: newCounters(cfg.Known, cfg.Now),
		log:      cfg.Log.Named("listener"),
		ctx:      ctx,
		cancel:   cancel,
		live:     make(map[*proxied]struct{}),
	}
}

// Forward takes ownership of client, a *net.TCPConn or *net.UnixConn, and proxies it on a
// goroutine of its own.
func (f *Forwarder) Forward(client net.Conn) {
	s, ok := client.(stream)
	if !ok {
		client.Close()
		f.log.Error("cannot forward this kind of connection; closed it", zap.String("type", fmt.Sprintf("%T", client)))
		return
	}
	f.wg.Add(1)
	go f.serve(s)
}

// Active returns the number of connections being forwarded now.
func (f *Forwarder) Active() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.live)
}

func (f *Forwarder) serve(client stream) {
	defer f.wg.Done()
	defer func() {
		if p := recover(); p != nil {
			client.Close()
			f.log.Error("panic in proxied connection; closed it",
				zap.Any("panic", p), zap.Stringer("remote_addr", client.RemoteAddr()), zap.Stack("stack"))
		}
	}()
	started := time.Now()
	backend, ep, load, err := f.dial(f.ctx)
	if err != nil {
		client.Close()
		if ce := f.log.Check(zap.DebugLevel, "client refused: no endpoint reachable"); ce != nil {
			ce.Write(zap.Stringer("remote_addr", client.RemoteAddr()), zap.Error(err))
		}
		return
	}
	p := &proxied{client: client, backend: backend, endpoint: ep, load: load, born: started, wg: &f.wg, done: func(p *proxied) {
		f.untrack(p)
		load.Done()
		if ce := f.log.Check(zap.DebugLevel, "proxied connection closed"); ce != nil {
			ce.Write(zap.Stringer("remote_addr", client.RemoteAddr()), zap.Stringer("endpoint", ep),
				zap.Int64("bytes_up", p.up.n.Load()), zap.Int64("bytes_down", p.down.n.Load()),
				zap.Duration("duration", time.Since(started)), zap.Error(p.err()))
		}
	}}
	if err := p.prepare(); err != nil {
		p.abort()
		load.Done()
		f.log.Error("could not start copying; closed the connection", zap.Error(err))
		return
	}
	if !f.track(p) {
		p.abort()
		load.Done()
		return
	}
	p.start()
}

// track records a connection about to be copied; false once Shutdown has closed the rest.
func (f *Forwarder) track(p *proxied) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shutdown {
		return false
	}
	f.live[p] = struct{}{}
	p.counts = f.counters.start(p.endpoint.HostPort())
	return true
}

// evictionPace is the pause between two evicted connections: a few clients move at once, and
// thousands are spread over at most the eviction spread.
const evictionPace = time.Millisecond

// Evict closes every connection proxied to the address hp, whatever SRV weight or priority it
// had when it was dialed, one every millisecond or, when there are more than spread allows at
// that pace, evenly over spread, so that their clients do not all reconnect at once. It
// returns how many it closed.
func (f *Forwarder) Evict(ctx context.Context, hp resolver.HostPort, spread time.Duration) int {
	f.mu.Lock()
	var victims []*proxied
	for p := range f.live {
		if p.endpoint.HostPort() == hp {
			victims = append(victims, p)
		}
	}
	f.mu.Unlock()
	pace := min(evictionPace, spread/time.Duration(max(len(victims), 1)))
	for i, p := range victims {
		if i > 0 {
			t := time.NewTimer(pace)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return i
			}
		}
		p.counts.evicted.Add(1)
		p.abort()
	}
	return len(victims)
}

// liveConns appends every live connection to buf and returns it.
func (f *Forwarder) liveConns(buf []*proxied) []*proxied {
	f.mu.Lock()
	defer f.mu.Unlock()
	for p := range f.live {
		buf = append(buf, p)
	}
	return buf
}

// rebalance closes p, a quiet connection, so that its client reconnects to a less loaded
// member, unless bytes moved on it since it was last sampled or it has ended. Its client and
// its member each get a FIN: a quiet connection has no byte waiting to be read. It reports
// whether it closed p.
func (f *Forwarder) rebalance(p *proxied) bool {
	f.mu.Lock()
	_, live := f.live[p]
	if !live || p.up.n.Load() != p.quiet.up || p.down.n.Load() != p.quiet.down {
		f.mu.Unlock()
		return false
	}
	p.counts.rebalanced.Add(1)
	f.mu.Unlock()
	p.abort()
	return true
}

func (f *Forwarder) untrack(p *proxied) {
	f.mu.Lock()
	if _, ok := f.live[p]; ok {
		p.counts.end()
		delete(f.live, p)
	}
	f.mu.Unlock()
}

// Shutdown waits up to grace for live connections to finish, or until cut is closed, then
// closes the rest and waits for their goroutines. It returns how many connections it had to
// close, and whether cut ended the wait. Call it once, after the accept loop has stopped.
func (f *Forwarder) Shutdown(grace time.Duration, cut <-chan struct{}) (closed int, wasCut bool) {
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
		return 0, false
	case <-t.C:
	case <-cut:
		wasCut = true
	}
	f.cancel()
	f.mu.Lock()
	f.shutdown = true
	victims := make([]*proxied, 0, len(f.live))
	for p := range f.live {
		victims = append(victims, p)
	}
	f.mu.Unlock()
	for _, p := range victims {
		p.abort()
	}
	<-done
	return len(victims), wasCut
}
