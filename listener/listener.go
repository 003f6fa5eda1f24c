package listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"
)

// maxAcceptBackoff bounds the pause after a temporary accept error such as EMFILE.
const maxAcceptBackoff = time.Second

// Listen binds addr for TCP with keep-alive on every accepted connection.
func Listen(ctx context.Context, addr string, keepAlive time.Duration) (*net.TCPListener, error) {
	lc := net.ListenConfig{KeepAlive: keepAlive}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// Acceptor is the part of *net.TCPListener the accept loop uses.
type Acceptor interface {
	AcceptTCP() (*net.TCPConn, error)
	SetDeadline(t time.Time) error
	Addr() net.Addr
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
		c, err := s.ln.AcceptTCP()
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

// temporary reports whether an accept error is worth waiting out.
func temporary(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO, syscall.EPERM, syscall.EINTR} {
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
