package listener

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// copyBufferSize is the buffer of one read; a read that fills it switches to splice.
const copyBufferSize = 16 << 10

// buffers are shared by every connection: a connection holds one only while it moves bytes.
var buffers = sync.Pool{New: func() any {
	b := make([]byte, copyBufferSize)
	return &b
}}

// proxied is one client connection and its backend, copied both ways by two goroutines of
// their own: the goroutine that dialed (with its deep stack) does not stay parked for the life
// of the connection. A clean end of one direction is passed on as a half-close while the other
// keeps flowing; an error in either closes both. The goroutine that finishes last closes both
// connections and calls done.
type proxied struct {
	client, backend *net.TCPConn
	up, down        int64 // bytes copied each way
	errUp, errDown  error
	pending         atomic.Int32
	done            func(*proxied)
	wg              *sync.WaitGroup // owner of the two goroutines
}

// start runs both directions.
func (p *proxied) start() {
	p.pending.Store(2)
	p.wg.Add(2)
	go p.copyUp()
	go p.copyDown()
}

// copyUp is the client-to-backend direction; named so that goroutine dumps say what it is.
func (p *proxied) copyUp() {
	defer p.wg.Done()
	p.up, p.errUp = copyHalf(p.backend, p.client)
	p.finish()
}

// copyDown is the backend-to-client direction.
func (p *proxied) copyDown() {
	defer p.wg.Done()
	p.down, p.errDown = copyHalf(p.client, p.backend)
	p.finish()
}

func (p *proxied) finish() {
	if p.pending.Add(-1) == 0 {
		p.client.Close()
		p.backend.Close()
		p.done(p)
	}
}

// err is the first error of either direction, nil when both ended cleanly.
func (p *proxied) err() error {
	if p.errUp != nil {
		return p.errUp
	}
	return p.errDown
}

// copyHalf copies src to dst until EOF, then half-closes: FIN to dst, no more reads from src.
// On an error it closes both, which also ends the copy in the other direction.
func copyHalf(dst, src *net.TCPConn) (int64, error) {
	n, err := copyLean(dst, src)
	if err == nil {
		err = dst.CloseWrite()
		src.CloseRead()
	}
	if err != nil {
		dst.Close()
		src.Close()
	}
	return n, err
}

// copyLean copies src to dst until EOF without holding anything while src is idle: it waits
// for src in the poller with no buffer and no splice pipe (io.Copy between two TCP
// connections parks inside splice holding a pipe, two more descriptors per direction of every
// idle connection). Small reads go through a pooled buffer; a read that fills the buffer
// switches to splice for exactly the bytes already queued, so bulk transfers stay zero-copy.
func copyLean(dst, src *net.TCPConn) (int64, error) {
	raw, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	var total int64
	queued := &io.LimitedReader{R: src} // reused by every splice of this direction
	for {
		var (
			buf     *[]byte
			n       int
			readErr error
		)
		err := raw.Read(func(fd uintptr) bool {
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
			return total, err // n == 0: EOF
		}
		w, err := dst.Write((*buf)[:n])
		total += int64(w)
		full := n == len(*buf)
		buffers.Put(buf)
		if err != nil {
			return total, err
		}
		if full {
			m, err := spliceQueued(dst, queued, raw)
			total += m
			if err != nil {
				return total, err
			}
		}
	}
}

// spliceQueued splices to dst the bytes queued on src (the reader of lr, a *net.TCPConn), as
// long as there are some.
func spliceQueued(dst *net.TCPConn, lr *io.LimitedReader, raw syscall.RawConn) (int64, error) {
	var total int64
	for {
		queued, err := queuedBytes(raw)
		if err != nil || queued == 0 {
			return total, err
		}
		lr.N = int64(queued)
		n, err := dst.ReadFrom(lr)
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
