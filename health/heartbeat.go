package health

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/etcd-gateway/etcd-gateway/member"
)

// heartbeatPath is what a heartbeat asks: etcd answers GET /version without touching its
// storage.
const heartbeatPath = "/version"

// heartbeater checks that a member's process answers at all, over one kept-alive connection
// (a member.Session): a heartbeat costs a few system calls, so that heartbeats four times a
// second stay cheap on a small host. It is used by one goroutine only.
type heartbeater struct {
	client  *member.Client
	session *member.Session  // nil until the scheme is set
	now     func() time.Time // the clock that judges whether a timeout was seen late
}

// newHeartbeater returns a heartbeater that speaks to the member with client.
func newHeartbeater(client *member.Client, now func() time.Time) *heartbeater {
	return &heartbeater{client: client, now: now}
}

// speak sets how the member is spoken to: over TLS or plain. A change drops the kept-alive
// connection.
func (h *heartbeater) speak(scheme member.Scheme) {
	if h.session != nil && h.session.Scheme() == scheme {
		return
	}
	h.close()
	h.session = h.client.Session(scheme)
}

// isLate reports whether err is a timeout seen late.
func isLate(err error) bool { return errors.Is(err, member.ErrSeenLate) }

// close drops the kept-alive connection.
func (h *heartbeater) close() {
	if h.session != nil {
		h.session.Close()
	}
}

// beat sends one heartbeat and waits up to timeout for the answer. Any HTTP answer counts;
// only silence or a refused connection is an error, and a timeout seen late is
// member.ErrSeenLate. A kept-alive connection that the member closed is replaced once within
// the same timeout.
func (h *heartbeater) beat(ctx context.Context, timeout time.Duration) error {
	deadline := h.now().Add(timeout)
	fresh := h.session.Fresh()
	_, err := h.session.Get(ctx, heartbeatPath, deadline)
	if err != nil && !fresh && !member.IsTimeout(err) && member.DialError(err) == nil {
		_, err = h.session.Get(ctx, heartbeatPath, deadline) // the member closed our idle connection: reconnect
	}
	if err == nil {
		return nil
	}
	switch fault := member.Classify(err, deadline, h.now(), timeout); {
	case fault == member.SeenLate:
		return member.ErrSeenLate
	case fault == member.TimedOut:
		return fmt.Errorf("no answer to heartbeats (GET %s) within %s", heartbeatPath, timeout)
	case member.DialError(err) != nil:
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil // an answer, if not HTTP: the process is alive
}
