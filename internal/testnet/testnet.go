// Package testnet holds loopback network fixtures shared by the tests: listeners, echo
// servers, and an endpoint that drops SYNs. Everything binds to 127.0.0.1 (or ::1) and is
// closed by t.Cleanup.
package testnet

import (
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// LocalListener returns a TCP listener on 127.0.0.1:0, or [::1]:0 when IPv4 loopback is missing.
func LocalListener(t testing.TB) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ln, err = net.Listen("tcp", "[::1]:0")
	}
	if err != nil {
		t.Fatalf("listen on loopback: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// Server accepts connections on a loopback port and runs handle on each, until the test ends.
type Server struct {
	ln    *net.TCPListener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[*net.TCPConn]struct{}
}

// Serve starts a Server that runs handle for every connection. Cleanup closes the listener
// and every connection and waits for the handlers.
func Serve(t testing.TB, handle func(*net.TCPConn)) *Server {
	t.Helper()
	return serveOn(t, LocalListener(t), handle)
}

// EchoOn is Echo on a given loopback address, such as "[::1]:0".
func EchoOn(t testing.TB, addr string) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	return serveOn(t, ln.(*net.TCPListener), echo)
}

func serveOn(t testing.TB, ln *net.TCPListener, handle func(*net.TCPConn)) *Server {
	s := &Server{ln: ln, conns: map[*net.TCPConn]struct{}{}}
	s.wg.Add(1)
	go s.acceptLoop(handle)
	t.Cleanup(s.Close)
	return s
}

// Echo starts a Server that echoes every byte and half-closes when the client does.
func Echo(t testing.TB) *Server { return Serve(t, echo) }

// EchoBuffered echoes c through a small buffer until it ends. Unlike io.Copy between
// sockets it never splices, so it holds no pipe: one descriptor per connection.
func EchoBuffered(c net.Conn) {
	buf := make([]byte, 16<<10)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

func echo(c *net.TCPConn) {
	if _, err := io.Copy(c, c); err == nil {
		c.CloseWrite()
	}
}

// Named starts a Server that writes name and a newline to every client and then echoes.
func Named(t testing.TB, name string) *Server {
	return Serve(t, func(c *net.TCPConn) {
		if _, err := io.WriteString(c, name+"\n"); err != nil {
			return
		}
		if _, err := io.Copy(c, c); err == nil {
			c.CloseWrite()
		}
	})
}

func (s *Server) acceptLoop(handle func(*net.TCPConn)) {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptTCP()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			handle(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Port is the server's port.
func (s *Server) Port() uint16 { return uint16(s.ln.Addr().(*net.TCPAddr).Port) }

// Close stops the server, closes every connection and waits for the handlers.
func (s *Server) Close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// ClosedPort returns a loopback address on which nothing listens.
func ClosedPort(t testing.TB) string {
	t.Helper()
	ln := LocalListener(t)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// SYNDropper returns a loopback address whose listening socket has a full accept queue, so
// the kernel drops further SYNs and a dial to it hangs until its timeout.
func SYNDropper(t testing.TB) string {
	t.Helper()
	addr, closeAll, err := ListenSYNDropper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeAll)
	return addr
}

// ListenSYNDropper is SYNDropper for programs: it returns the address and a function that
// closes the socket and the connections that fill its queue.
func ListenSYNDropper() (addr string, closeAll func(), err error) { return listenFull(0) }

// KeepAlive reports whether TCP keep-alive is on for c.
func KeepAlive(t testing.TB, c *net.TCPConn) bool {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var on int
	var sockErr error
	if err := raw.Control(func(fd uintptr) {
		on, sockErr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
	}); err != nil {
		t.Fatal(err)
	}
	if sockErr != nil {
		t.Fatal(sockErr)
	}
	return on != 0
}

// Eventually polls cond every few milliseconds until it holds or d has passed, and reports
// whether it held: the way tests wait for a state, instead of sleeping.
func Eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		poll := time.NewTimer(5 * time.Millisecond)
		<-poll.C
	}
	return true
}
