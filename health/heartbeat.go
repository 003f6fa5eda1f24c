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
// (a member.Session): a heartbeat costs a few system calls and, pulsed, one wakeup, so that
// heartbeats four times a second stay cheap on a small host. It is used by one goroutine only.
type heartbeater struct {
	client  *member.Client
	session *member.Session  // nil until the scheme is set
	now     func() time.Time // the clock that judges whether a timeout was seen late
	grace   time.Duration    // how long a pulse waits for an answer not there yet: pulseGrace
	sentAt  time.Time        // when the heartbeat in flight was sent
}

// newHeartbeater returns a heartbeater that speaks to the member with client.
func newHeartbeater(client *member.Client, now func() time.Time) *heartbeater {
	return &heartbeater{client: client, now: now, grace: pulseGrace}
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

// scheme is what the member serves, as the last probe found.
func (h *heartbeater) scheme() member.Scheme {
	if h.session == nil {
		return member.SchemeUnknown
	}
	return h.session.Scheme()
}

// inFlight reports whether a pulse was sent and its answer not read yet.
func (h *heartbeater) inFlight() bool { return h.session != nil && h.session.Pending() }

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
// the same timeout. An answer still due to an earlier pulse is read first, within the same
// timeout.
func (h *heartbeater) beat(ctx context.Context, timeout time.Duration) error {
	deadline := h.now().Add(timeout)
	if h.session.Pending() {
		if _, err := h.session.Receive(deadline); err != nil {
			return h.judge(err, deadline, timeout)
		}
	}
	fresh := h.session.Fresh()
	_, err := h.session.Get(ctx, heartbeatPath, deadline)
	if err != nil && !fresh && !member.IsTimeout(err) && member.DialError(err) == nil {
		_, err = h.session.Get(ctx, heartbeatPath, deadline) // the member closed our idle connection: reconnect
	}
	return h.judge(err, deadline, timeout)
}

// pulse is the heartbeat of a steady member: it reads the answer to the previous pulse, which
// had a whole period to arrive and is read without waiting (or, with a timeout longer than
// the period, waited for until the timeout), then sends the next heartbeat without waiting
// for its answer. So a heartbeat costs the gateway one wakeup, and the member's answer is
// judged against the longer of the time since it was asked (a period, between pulses) and the
// timeout (the defaults are equal). An answer missing then is an error, which the prober
// confirms with a beat. A connection the member closed is replaced by a beat, which waits for
// its answer.
func (h *heartbeater) pulse(ctx context.Context, timeout time.Duration) error {
	if err := h.collect(ctx, timeout); err != nil {
		return err
	}
	h.sentAt = h.now()
	deadline := h.sentAt.Add(timeout)
	fresh := h.session.Fresh()
	err := h.session.Send(ctx, heartbeatPath, deadline)
	if err != nil && !fresh && member.DialError(err) == nil {
		return h.beat(ctx, timeout) // the connection broke: ask anew and wait
	}
	return h.judge(err, deadline, timeout)
}

// collect reads the answer to the pulse in flight, if any, as pulse does, and sends nothing.
func (h *heartbeater) collect(ctx context.Context, timeout time.Duration) error {
	if h.session.Pending() {
		deadline := h.now().Add(h.grace)
		if due := h.sentAt.Add(timeout); due.After(deadline) {
			deadline = due
		}
		_, err := h.session.Receive(deadline)
		switch {
		case err == nil:
		case member.IsTimeout(err):
			waited := deadline.Sub(h.sentAt).Round(time.Millisecond)
			return fmt.Errorf("no answer to heartbeats (GET %s) within %s", heartbeatPath, waited)
		default:
			return h.beat(ctx, timeout) // the member closed our idle connection: ask anew and wait
		}
	}
	return nil
}

// pulseGrace is how long a pulse waits for an answer that is not there yet: a read of what
// arrived, not a wait.
const pulseGrace = time.Millisecond

// judge says what err, of a heartbeat due at deadline, tells of the member.
func (h *heartbeater) judge(err error, deadline time.Time, timeout time.Duration) error {
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
