package listener

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// copyBufferSize is the buffer of one read; a read that fills it switches to splice.
const copyBufferSize = 16 << 10

// buffers are shared by every connection: a connection holds one only while it moves bytes.
var buffers = sync.Pool{New: func() any {
	b := make([]byte, copyBufferSize)
	return &b
}}

// proxied is one client connection and its backend, copied both ways, each direction by a
// half on a goroutine of its own: the goroutine that dialed (with its deep stack) does not stay
// parked for the life of the connection. A clean end of one direction is passed on as a
// half-close while the other keeps flowing; an error in either closes both. The half that
// finishes last closes both connections and calls done.
type proxied struct {
	client   stream
	backend  *net.TCPConn
	endpoint resolver.Endpoint
	load     *health.Load  // the endpoint's: told of the bytes clients send, for the heartbeats
	born     time.Time     // when the client arrived
	up, down half          // client to backend, backend to client
	quiet    quietness     // the rebalancer's view of its traffic; only the rebalancer touches it
	counts   *addrCounters // its endpoint address's, set when it is tracked
	pending  atomic.Int32
	done     func(*proxied)
	wg       *sync.WaitGroup // owner of the two goroutines
}

// stream is a connection that can half-close and hand out its descriptor: a backend's
// *net.TCPConn, and a client's *net.TCPConn or *net.UnixConn.
type stream interface {
	net.Conn
	CloseWrite() error
	SyscallConn() (syscall.RawConn, error)
}

// half is one direction of a proxied connection.
type half struct {
	p        *proxied
	dst, src stream
	raw      syscall.RawConn  // src's
	queued   io.LimitedReader // reused by every splice of this direction
	n        atomic.Int64     // bytes copied; read by the rebalancer while it runs
	sum      *atomic.Uint64   // the address's count of this direction, which n's bytes go to too
	sent     *health.Load     // told of every chunk before it is written, for the client-to-backend direction only
	err      error            // why it ended; nil after a clean EOF
}

// prepare sets up both directions. It must finish before the connection is tracked: from then
// on the rebalancer reads the byte counters while the halves run.
func (p *proxied) prepare() error {
	p.up = half{p: p, dst: p.backend, src: p.client, sent: p.load}
	p.down = half{p: p, dst: p.client, src: p.backend}
	for _, h := range []*half{&p.up, &p.down} {
		raw, err := h.src.SyscallConn()
		if err != nil {
			return err
		}
		h.raw = raw
		h.queued.R = h.src
	}
	return nil
}

// start runs both directions of a prepared connection, counting their bytes into p.counts.
func (p *proxied) start() {
	p.up.sum, p.down.sum = &p.counts.bytesUp, &p.counts.bytesDown
	p.pending.Store(2)
	p.wg.Add(2)
	go p.up.copyUp()
	go p.down.copyDown()
}

// abort closes both connections, which ends both directions.
func (p *proxied) abort() {
	p.client.Close()
	p.backend.Close()
}

// err is the first error of either direction, nil when both ended cleanly.
func (p *proxied) err() error {
	if p.up.err != nil {
		return p.up.err
	}
	return p.down.err
}

// copyUp runs the client-to-backend direction; named so that goroutine dumps say what it is.
func (h *half) copyUp() { h.run() }

// copyDown runs the backend-to-client direction.
func (h *half) copyDown() { h.run() }

// run copies until src ends or fails. At EOF, while the other direction still flows, it passes
// the EOF on as a half-close (FIN to dst); when the other has ended too, closing both sends the
// FIN anyway, so the last direction spares the shutdown call. On an error it closes both
// connections, which also ends the other direction.
func (h *half) run() {
	defer h.p.wg.Done()
	err := h.copy()
	if err == nil && h.p.pending.Load() == 2 {
		err = h.dst.CloseWrite()
	}
	h.err = err
	if err != nil {
		h.p.abort()
	}
	if h.p.pending.Add(-1) == 0 {
		h.p.abort()
		h.p.done(h.p)
	}
}

// copy copies src to dst until EOF without holding anything while src is idle: it waits for
// src in the poller with no buffer and no splice pipe (io.Copy between two TCP connections
// parks inside splice holding a pipe, two more descriptors per direction of every idle
// connection). Small reads go through a pooled buffer; a read that fills the buffer switches
// to splice for exactly the bytes already queued, so bulk transfers stay zero-copy.
func (h *half) copy() error {
	for {
		var (
			buf     *[]byte
			n       int
			readErr error
		)
		err := h.raw.Read(func(fd uintptr) bool {
			if buf == nil {
				buf = buffers.Get().(*[]byte)
			}
			n, readErr = syscall.Read(int(fd), *buf)
			switch readErr {
			case syscall.EAGAIN:
				buffers.Put(buf) // hold nothing while waiting
				buf = nil
				return false
			case syscall.EINTR:
				return false
			}
			return true
		})
		if err == nil && readErr != nil {
			err = os.NewSyscallError("read", readErr)
		}
		if err != nil || n <= 0 {
			if buf != nil {
				buffers.Put(buf)
			}
			return err // n == 0: EOF
		}
		h.sent.Sent(n) // before the write: whoever waits for a request hears of it before its answer can come
		w, err := h.dst.Write((*buf)[:n])
		h.n.Add(int64(w))
		h.sum.Add(uint64(w))
		full := n == len(*buf)
		buffers.Put(buf)
		if err != nil {
			return err
		}
		if rf, ok := h.dst.(io.ReaderFrom); ok && full {
			m, err := h.spliceQueued(rf)
			h.n.Add(m)
			h.sum.Add(uint64(m))
			if err != nil {
				return err
			}
		}
	}
}

// spliceQueued splices the bytes queued on src to dst (as dst's ReadFrom), as long as there are
// some. A TCP destination splices from a TCP or a Unix source.
func (h *half) spliceQueued(dst io.ReaderFrom) (int64, error) {
	var total int64
	for {
		queued, err := queuedBytes(h.raw)
		if err != nil || queued == 0 {
			return total, err
		}
		h.queued.N = int64(queued)
		n, err := dst.ReadFrom(&h.queued)
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
}

// queuedBytes returns how many bytes wait to be read on the socket.
func queuedBytes(raw syscall.RawConn) (int, error) {
	var n int
	var ioctlErr error
	if err := raw.Control(func(fd uintptr) {
		n, ioctlErr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	}); err != nil {
		return 0, err
	}
	if ioctlErr != nil {
		return 0, os.NewSyscallError("ioctl SIOCINQ", ioctlErr)
	}
	return n, nil
}
