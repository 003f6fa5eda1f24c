package listener

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// maxAcceptBackoff bounds the pause after a temporary accept error such as EMFILE.
const maxAcceptBackoff = time.Second

// UnixScheme prefixes a --listen-addr that is a Unix socket path: unix:///run/etcd.sock.
const UnixScheme = "unix://"

// Listen binds addr: host:port for TCP, with keep-alive on every accepted connection, or
// unix://PATH for a Unix stream socket with the given mode. A socket file left behind by a
// gateway that is gone (a connection to it is refused) is replaced; one that accepts, or whose
// state cannot be told (a full backlog answers EAGAIN: its owner is alive and busy), is not.
func Listen(ctx context.Context, addr string, keepAlive time.Duration, socketMode os.FileMode) (Acceptor, error) {
	path, isUnix := strings.CutPrefix(addr, UnixScheme)
	if !isUnix {
		lc := net.ListenConfig{KeepAlive: keepAlive}
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return ln.(*net.TCPListener), nil
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == os.ModeSocket {
		c, err := net.DialTimeout("unix", path, time.Second)
		switch {
		case err == nil:
			c.Close()
			return nil, fmt.Errorf("%s is in use by a running process", path)
		case !errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("%s may be in use by a running process (connecting to it: %v); stop it, or remove the file if nothing serves it", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	return listenUnix(path, socketMode)
}

// listenUnix binds a Unix stream socket at path, gives it mode, and only then listens, so that
// no client can connect before the socket has its mode. umask would do it too, but it is the
// whole process's.
func listenUnix(path string, mode os.FileMode) (*net.UnixListener, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	f := os.NewFile(uintptr(fd), "unix:"+path)
	defer f.Close() // FileListener holds a duplicate
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, &net.OpError{Op: "listen", Net: "unix", Addr: &net.UnixAddr{Name: path, Net: "unix"}, Err: os.NewSyscallError("bind", err)}
	}
	bound := true
	defer func() {
		if bound {
			os.Remove(path)
		}
	}()
	if err := os.Chmod(path, mode); err != nil {
		return nil, fmt.Errorf("set the mode of %s: %w", path, err)
	}
	// The kernel caps the backlog at net.core.somaxconn, as for net.Listen's sockets.
	if err := unix.Listen(fd, math.MaxUint16); err != nil {
		return nil, os.NewSyscallError("listen", err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(true) // as a listener from net.Listen does
	bound = false
	return ul, nil
}

// Acceptor is a bound listening socket as the accept loop uses it: *net.TCPListener or
// *net.UnixListener.
type Acceptor interface {
	Accept() (net.Conn, error)
	SetDeadline(t time.Time) error
	Addr() net.Addr
	Close() error
}

// Service is the accept loop: it hands every accepted connection to the Forwarder. It never
// closes the socket, so a restart keeps the port; whoever bound the socket closes it.
type Service struct {
	ln  Acceptor
	fwd *Forwarder
	log *zap.Logger
	// sleep pauses after a temporary accept error; a field so tests can watch the backoff.
	sleep func(ctx context.Context, d time.Duration)
}

var _ suture.Service = (*Service)(nil)

// NewService returns the accept loop for ln.
func NewService(ln Acceptor, fwd *Forwarder, log *zap.Logger) *Service {
	return &Service{ln: ln, fwd: fwd, log: log.Named("listener"), sleep: sleepCtx}
}

// String names the service in supervisor events.
func (s *Service) String() string { return "listener/" + s.ln.Addr().String() }

// Serve accepts until ctx ends. Temporary errors (out of descriptors, aborted handshakes) back
// off up to a second and never end it; any other error is returned for the supervisor to
// restart it.
func (s *Service) Serve(ctx context.Context) error {
	if err := s.ln.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("reset accept deadline: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { s.ln.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err == nil {
			if backoff > 0 {
				s.log.Info("accepting again")
				backoff = 0
			}
			s.fwd.Forward(c)
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, net.ErrClosed) {
			// Only the socket's owner closes it, when the gateway stops: the stop reaches this
			// service's ctx a moment later. Failing now would log a crash and restart in vain.
			<-ctx.Done()
			return ctx.Err()
		}
		if !temporary(err) {
			return fmt.Errorf("accept on %s: %w", s.ln.Addr(), err)
		}
		if backoff == 0 {
			backoff = 5 * time.Millisecond
			s.log.Warn("accept failed; backing off until it succeeds", zap.Error(err),
				zap.Int("active_connections", s.fwd.Active()))
		} else {
			backoff = min(2*backoff, maxAcceptBackoff)
		}
		s.sleep(ctx, backoff)
	}
}

// temporary reports whether an accept error is worth waiting out: the gateway's own shortage,
// or a connection that failed before it was accepted.
func temporary(err error) bool {
	if member.IsLocalShortage(err) {
		return true
	}
	for _, errno := range []syscall.Errno{syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO, syscall.EPERM, syscall.EINTR} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
