package health

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/etcd-gateway/etcd-gateway/member"
)

// heartbeatRequest is the heartbeat, written by hand: etcd answers GET /version without
// touching its storage.
var heartbeatRequest = []byte("GET /version HTTP/1.1\r\nHost: etcd\r\nUser-Agent: etcd-gateway\r\n\r\n")

// heartbeater checks that a member's process answers at all, over one kept-alive connection,
// with a hand-written request and a small read buffer: a heartbeat costs a few system calls,
// so that heartbeats four times a second stay cheap on a small host. It is used by one
// goroutine only.
type heartbeater struct {
	addr string
	// handshake makes a raw connection a TLS one; nil while the member is plain.
	handshake func(ctx context.Context, raw net.Conn) (net.Conn, error)
	dialer    func(ctx context.Context, network, addr string) (net.Conn, error)
	conn      net.Conn
	r         *bufio.Reader
	now       func() time.Time // the clock that judges whether a timeout was seen late
}

func newHeartbeater(addr string) *heartbeater {
	var d net.Dialer
	return &heartbeater{addr: addr, dialer: d.DialContext, now: time.Now}
}

// speak sets how the member is spoken to: over TLS with handshake, or plain when it is nil. A
// change drops the kept-alive connection.
func (h *heartbeater) speak(secure bool, handshake func(ctx context.Context, raw net.Conn) (net.Conn, error)) {
	if secure == (h.handshake != nil) {
		return
	}
	h.close()
	h.handshake = nil
	if secure {
		h.handshake = handshake
	}
}

// isLate reports whether err is a timeout seen late.
func isLate(err error) bool { return errors.Is(err, member.ErrSeenLate) }

// close drops the kept-alive connection.
func (h *heartbeater) close() {
	if h.conn != nil {
		h.conn.Close()
		h.conn, h.r = nil, nil
	}
}

// beat sends one heartbeat and waits up to timeout for the answer. Any HTTP answer counts;
// only silence or a refused connection is an error, and a timeout seen late is errLate. A
// kept-alive connection that the member closed is replaced once within the same timeout.
func (h *heartbeater) beat(ctx context.Context, timeout time.Duration) error {
	deadline := h.now().Add(timeout)
	fresh := h.conn == nil
	err := h.exchange(ctx, deadline)
	if err != nil && !fresh && !member.IsTimeout(err) && member.DialError(err) == nil {
		err = h.exchange(ctx, deadline) // the member closed our idle connection: reconnect
	}
	if err == nil {
		return nil
	}
	switch fault := member.Classify(err, deadline, h.now(), timeout); {
	case fault == member.SeenLate:
		return member.ErrSeenLate
	case fault == member.TimedOut:
		return fmt.Errorf("no answer to heartbeats (GET /version) within %s", timeout)
	case member.DialError(err) != nil:
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil // an answer, if not HTTP: the process is alive
}

// exchange writes the request and reads the whole answer, keeping the connection in step; on
// any error it drops the connection.
func (h *heartbeater) exchange(ctx context.Context, deadline time.Time) (err error) {
	defer func() {
		if err != nil {
			h.close()
		}
	}()
	if h.conn == nil {
		if err := h.dial(ctx, deadline); err != nil {
			return err
		}
	}
	h.conn.SetDeadline(deadline)
	if _, err := h.conn.Write(heartbeatRequest); err != nil {
		return err
	}
	length := -1
	for first := true; ; first = false {
		line, err := h.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimSpace(line)
		if first && !bytes.HasPrefix(line, []byte("HTTP/1.")) {
			return errors.New("not an HTTP answer")
		}
		if len(line) == 0 {
			break
		}
		if name, value, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(name, []byte("Content-Length")) {
			if length, err = strconv.Atoi(string(bytes.TrimSpace(value))); err != nil {
				return err
			}
		}
	}
	if length < 0 {
		h.close() // no length: the answer cannot be skipped reliably; start afresh next time
		return nil
	}
	_, err = h.r.Discard(length)
	return err
}

func (h *heartbeater) dial(ctx context.Context, deadline time.Time) error {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	conn, err := h.dialer(ctx, "tcp", h.addr)
	if err != nil {
		return err
	}
	if h.handshake != nil {
		if conn, err = h.handshake(ctx, conn); err != nil {
			return err
		}
	}
	h.conn, h.r = conn, bufio.NewReaderSize(conn, 512)
	return nil
}
