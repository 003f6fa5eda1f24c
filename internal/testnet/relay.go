package testnet

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// StopMode is how a Relay stops accepting new connections.
type StopMode int

const (
	// Refuse closes the listening socket: new connections are refused, as from a process
	// that stopped listening.
	Refuse StopMode = iota
	// FullBacklog keeps a listening socket whose accept queue is full and never accepts: new
	// connections time out, as to a process out of descriptors.
	FullBacklog
)

func (m StopMode) String() string {
	if m == Refuse {
		return "refuse"
	}
	return "full-backlog"
}

// Relay forwards the TCP connections it accepts on a loopback port to a target address. It
// can stop accepting new connections while the ones it relays keep working, which is how a
// member out of descriptors, or with a full accept queue, looks from the network.
type Relay struct {
	target string
	port   int
	delay  atomic.Int64 // added to every chunk relayed, in nanoseconds

	mu      sync.Mutex
	ln      *net.TCPListener // nil while stopped
	full    func()           // closes the full-backlog socket; nil unless stopped that way
	conns   map[net.Conn]struct{}
	closed  bool
	serving sync.WaitGroup
}

// StartRelay starts a Relay to target on a free loopback port.
func StartRelay(target string) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Relay{target: target, port: ln.Addr().(*net.TCPAddr).Port, conns: map[net.Conn]struct{}{}}
	r.serve(ln.(*net.TCPListener))
	return r, nil
}

// Addr is the relay's host:port.
func (r *Relay) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

func (r *Relay) serve(ln *net.TCPListener) {
	r.ln = ln
	r.serving.Add(1)
	go func() {
		defer r.serving.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.serving.Add(1)
			go func() {
				defer r.serving.Done()
				r.relay(c)
			}()
		}
	}()
}

// relay copies c to a new connection to the target and back, passing half-closes on.
func (r *Relay) relay(c net.Conn) {
	defer c.Close()
	up, err := net.DialTimeout("tcp", r.target, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	if !r.track(c, up) {
		return
	}
	defer r.untrack(c, up)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.copy(up, c)
		up.(*net.TCPConn).CloseWrite()
	}()
	r.copy(c, up)
	c.(*net.TCPConn).CloseWrite()
	<-done
}

// copy copies src to dst until EOF, holding each chunk for the relay's delay.
func (r *Relay) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if d := time.Duration(r.delay.Load()); d > 0 {
				time.Sleep(d) // the latency of a long link, not a wait for a state
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// SetDelay makes the relay hold every chunk it relays, each way, for d: a link with latency.
func (r *Relay) SetDelay(d time.Duration) { r.delay.Store(int64(d)) }

func (r *Relay) track(cs ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	for _, c := range cs {
		r.conns[c] = struct{}{}
	}
	return true
}

func (r *Relay) untrack(cs ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		delete(r.conns, c)
	}
}

// Relayed returns how many connections the relay is relaying.
func (r *Relay) Relayed() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns) / 2
}

// StopAccepting stops accepting new connections in the given way; the relayed ones go on.
func (r *Relay) StopAccepting(mode StopMode) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln == nil {
		return errors.New("relay: not accepting already")
	}
	r.ln.Close()
	r.ln = nil
	if mode == FullBacklog {
		_, closeAll, err := listenFull(r.port)
		if err != nil {
			return err
		}
		r.full = closeAll
	}
	return nil
}

// Resume accepts new connections again, on the same port.
func (r *Relay) Resume() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln != nil {
		return errors.New("relay: accepting already")
	}
	if r.full != nil {
		r.full()
		r.full = nil
	}
	ln, err := net.Listen("tcp", r.Addr())
	if err != nil {
		return fmt.Errorf("relay: listen again: %w", err)
	}
	r.serve(ln.(*net.TCPListener))
	return nil
}

// Close stops the relay and closes every relayed connection.
func (r *Relay) Close() {
	r.mu.Lock()
	r.closed = true
	if r.ln != nil {
		r.ln.Close()
	}
	if r.full != nil {
		r.full()
	}
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.serving.Wait()
}

// listenFull listens on 127.0.0.1:port (0: any) with an accept queue that it fills, so the
// kernel drops further SYNs and a dial to it hangs until its timeout. It returns the address
// and a function that closes the socket and the connections that fill its queue.
func listenFull(port int) (addr string, closeAll func(), err error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("socket: %w", err)
	}
	var fill []net.Conn
	closeAll = func() {
		for _, c := range fill {
			c.Close()
		}
		syscall.Close(fd)
	}
	// As net.Listen does: the port may have connections of an earlier listener.
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		closeAll()
		return "", nil, fmt.Errorf("SO_REUSEADDR: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
		closeAll()
		return "", nil, fmt.Errorf("bind: %w", err)
	}
	// A backlog of 0 holds one connection in the accept queue.
	if err := syscall.Listen(fd, 0); err != nil {
		closeAll()
		return "", nil, fmt.Errorf("listen: %w", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		closeAll()
		return "", nil, fmt.Errorf("getsockname: %w", err)
	}
	addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	for range 16 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return addr, closeAll, nil
		}
		if err != nil {
			closeAll()
			return "", nil, fmt.Errorf("fill accept queue of %s: %w", addr, err)
		}
		fill = append(fill, c)
	}
	closeAll()
	return "", nil, fmt.Errorf("accept queue of %s never filled", addr)
}
