package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// CheckMode is how members are probed.
type CheckMode string

// The probe modes. Each falls back to the next when the member cannot answer it: /readyz is
// missing before etcd 3.5.11 and 3.4.29, and a member may not speak HTTP on its port at all.
const (
	CheckReadyz CheckMode = "readyz" // GET /readyz: ready for linearizable reads, not a learner, no corruption
	CheckHealth CheckMode = "health" // GET /health: no alarm, a leader, a linearizable read
	CheckTCP    CheckMode = "tcp"    // a TCP connect
)

// ParseCheckMode parses --health-check.
func ParseCheckMode(s string) (CheckMode, error) {
	switch m := CheckMode(s); m {
	case CheckReadyz, CheckHealth, CheckTCP:
		return m, nil
	}
	return "", fmt.Errorf("%q is not a health check; use readyz, health or tcp", s)
}

// NoteAliveByKey is the note of a member that requires a client certificate the gateway does not
// have: it is judged alive by the proof of its key alone.
const NoteAliveByKey = "alive by its TLS key only: the member requires a client certificate; give --health-cert-file and --health-key-file to probe /readyz"

// checker probes one endpoint. It is used by one goroutine only.
type checker struct {
	ep      resolver.Endpoint
	mode    CheckMode
	timeout time.Duration
	dialer  net.Dialer
	tls     member.TLS
	scheme  member.Scheme // what the member serves; a member from _etcd-client-ssl stays TLS
	note    string        // what the last probe found worth saying, though no fault
	client  *member.Client
	now     func() time.Time // the clock that judges whether a timeout was seen late

	// sessions keeps the member's TLS session between probes: a probe resumes it, and a full
	// handshake proves the member's chain and key again at least every fullHandshakeEvery and
	// after any probe that did not find the member healthy.
	sessions *member.SessionCache

	drains   sync.WaitGroup // the background reads after failed handshakes
	mu       sync.Mutex     // guards mismatch and fullAt, written by the concurrent requests of one probe
	mismatch error          // the certificate's names match neither the endpoint's host nor its target
	fullAt   time.Time      // when a full handshake last proved the member's chain and key
}

// fullHandshakeEvery bounds how long probes resume a TLS session: a member's certificate
// that was rotated or revoked, or its key lost, is seen by a full handshake within it.
const fullHandshakeEvery = time.Minute

func newChecker(ep resolver.Endpoint, mode CheckMode, timeout time.Duration, tlsCfg member.Policy) *checker {
	// A probe's connection lives for one request: no TCP keep-alive to set up (four system
	// calls per probe).
	c := &checker{ep: ep, mode: mode, timeout: timeout, dialer: net.Dialer{Timeout: timeout, KeepAlive: -1}, now: time.Now,
		tls: ep.MemberTLS(tlsCfg)}
	c.scheme = schemeOf(ep, member.SchemeUnknown)
	// Every probe is a new connection (Client.Do), as a new client's would be: a member that
	// serves the connections it has but accepts no new one (out of descriptors, a full accept
	// queue) must not look healthy. Heartbeats keep their connection: they ask whether the
	// process answers at all.
	c.sessions = &member.SessionCache{}
	resuming := c.tls
	resuming.Sessions = c.sessions
	c.client = &member.Client{Addr: ep.Addr(), TLS: resuming, Dial: c.dialer.DialContext, Drains: &c.drains,
		Handshaken: func(h member.Handshake) {
			if h.Resumed {
				return // the names were judged when the session was made
			}
			c.mu.Lock()
			c.mismatch, c.fullAt = h.NameMismatch, c.now()
			c.mu.Unlock()
		}}
	return c
}

// staleSession reports whether the last full handshake is fullHandshakeEvery old; false
// before any.
func (c *checker) staleSession() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.fullAt.IsZero() && c.now().Sub(c.fullAt) >= fullHandshakeEvery
}

// close waits for what failed handshakes still read.
func (c *checker) close() { c.drains.Wait() }

// canHeartbeat reports whether heartbeats can reach the member: its scheme is known and, over
// TLS, a handshake completes.
func (c *checker) canHeartbeat() bool {
	return c.scheme != member.SchemeUnknown && c.note != NoteAliveByKey
}

// httpOutcome says whether an HTTP probe gave a verdict.
type httpOutcome int

const (
	answered      httpOutcome = iota // the verdict stands
	missingPath                      // 404: the member lacks this endpoint; use the next mode from now on
	notHTTP                          // no usable HTTP answer this time; fall back to a TCP connect
	schemeChanged                    // the member no longer speaks what it did: find its scheme again
)

// verdict is what one probe found: the member's state and, unless healthy, why; or, when
// noNews is set, that the probe said nothing of the member (the reason says why).
type verdict struct {
	state  State
	reason string
	noNews member.Fault // member.SeenLate or member.LocalShortage; zero when the member was judged
}

// judged is a verdict on the member.
func judged(st State, reason string) verdict { return verdict{state: st, reason: reason} }

// check probes once and returns the verdict. A member whose scheme is not known yet is first
// asked with a TLS ClientHello: the gateway never sends plaintext to a TLS port unless the
// member itself said it is plain.
func (c *checker) check(ctx context.Context) verdict {
	if c.staleSession() {
		c.sessions.Forget()
	}
	v := c.probe(ctx)
	if v.state != Healthy || v.noNews != 0 {
		c.sessions.Forget() // after any failure, the next handshake proves the chain and key again
	}
	return v
}

// probe is check before the TLS session is kept or dropped.
func (c *checker) probe(ctx context.Context) verdict {
	c.note = ""
	redetected := false
	for c.mode != CheckTCP {
		if c.scheme == member.SchemeUnknown {
			if v, known := c.detect(ctx); !known {
				return v
			}
		}
		v, outcome := c.checkHTTP(ctx)
		switch outcome {
		case answered:
			c.noteMismatch()
			return v
		case missingPath:
			if c.mode == CheckReadyz {
				c.mode = CheckHealth
			} else {
				c.mode = CheckTCP
			}
		case schemeChanged, notHTTP:
			if redetected || c.ep.TLS || (outcome == notHTTP && c.scheme != member.SchemePlain) {
				if outcome == schemeChanged {
					return judged(Down, v.reason)
				}
				return c.checkTCP(ctx)
			}
			redetected = true
			c.scheme = member.SchemeUnknown
		}
	}
	return c.checkTCP(ctx)
}

// noteMismatch notes a certificate valid for other names than the member's.
func (c *checker) noteMismatch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mismatch != nil && c.scheme == member.SchemeTLS && c.note == "" {
		c.note = "TLS: " + c.mismatch.Error()
	}
}

// detect finds out the member's scheme with a TLS ClientHello. It reports whether the scheme is
// known; when it is not, it returns the verdict.
func (c *checker) detect(ctx context.Context) (verdict, bool) {
	deadline := c.now().Add(c.timeout)
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	raw, err := c.dialer.DialContext(ctx, "tcp", c.ep.Addr())
	if err != nil {
		return c.dialVerdict(err, deadline), false
	}
	h := member.HandshakeTLS(ctx, raw, c.tls, &c.drains)
	if h.Conn != nil {
		h.Conn.Close()
	}
	switch h.Scheme {
	case member.SchemeTLS:
		c.scheme = member.SchemeTLS
		return verdict{}, true
	case member.SchemePlain:
		if c.ep.TLS {
			return judged(Down, "listed under _etcd-client-ssl, but the member does not speak TLS"), false
		}
		c.scheme = member.SchemePlain
		return verdict{}, true
	}
	switch {
	case h.Err != nil && c.fault(h.Err, deadline) == member.SeenLate:
		return seenLate(), false
	case member.IsTimeout(h.Err):
		return judged(Down, fmt.Sprintf("no answer to a TLS ClientHello within %s; the member's scheme is not known yet", c.timeout)), false
	}
	// It answered, but neither TLS nor plain HTTP: not etcd, as a TCP connect judges.
	return c.checkTCP(ctx), false
}

// fault says what err, of an exchange due at deadline, tells of the member.
func (c *checker) fault(err error, deadline time.Time) member.Fault {
	return member.Classify(err, deadline, c.now(), c.timeout)
}

// seenLate is the verdict of a probe that timed out but was seen too late to count.
func seenLate() verdict {
	return verdict{reason: member.ErrSeenLate.Error(), noNews: member.SeenLate}
}

// dialVerdict judges a failed dial as checkTCP does.
func (c *checker) dialVerdict(err error, deadline time.Time) verdict {
	switch c.fault(err, deadline) {
	case member.LocalShortage:
		return verdict{reason: err.Error(), noNews: member.LocalShortage}
	case member.SeenLate:
		return seenLate()
	}
	return judged(Down, err.Error())
}

func (c *checker) checkTCP(ctx context.Context) verdict {
	deadline := c.now().Add(c.timeout)
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	conn, err := c.dialer.DialContext(ctx, "tcp", c.ep.Addr())
	if err != nil {
		return c.dialVerdict(err, deadline)
	}
	conn.Close()
	return judged(Healthy, "")
}

// errNotAsked is the liveness answer of a probe whose readiness request answered in time.
var errNotAsked = errors.New("not asked")

// checkHTTP does GET /readyz or /health and returns the verdict and whether it stands. When
// that has no answer after half the timeout, a liveness request (/livez, or
// /health?serializable=true) goes with it, so that a member that is alive but cannot serve a
// linearizable read in time (no leader) is degraded, not down. A member that answers at once,
// as a healthy one does, costs one connection per probe.
func (c *checker) checkHTTP(ctx context.Context) (verdict, httpOutcome) {
	path, live := "/readyz", "/livez"
	if c.mode == CheckHealth {
		path, live = "/health", "/health?serializable=true"
	}
	deadline := c.now().Add(c.timeout)
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	liveness := make(chan probeAnswer, 1)
	slow := time.AfterFunc(c.timeout/2, func() { liveness <- c.get(ctx, live) })
	ready := c.get(ctx, path)
	asked := !slow.Stop()
	var hs *member.HandshakeError
	if ready.err != nil && !errors.As(ready.err, &hs) {
		cancel() // refused or timed out: the liveness request says nothing more; a handshake's end comes soon
	}
	alive := probeAnswer{err: errNotAsked}
	if asked {
		alive = <-liveness
	}

	if err := ready.err; err != nil {
		fault := c.fault(err, deadline)
		switch {
		case fault == member.LocalShortage:
			return verdict{reason: err.Error(), noNews: member.LocalShortage}, answered
		case errors.As(err, &hs) && hs.Handshake.NeedsClientCert:
			c.note = NoteAliveByKey
			return judged(Healthy, ""), answered
		case errors.As(err, &hs) && hs.Handshake.Untrusted != nil:
			return judged(Down, hs.Error()), answered
		case errors.As(err, &hs) && hs.Handshake.Scheme == member.SchemePlain:
			return judged(Down, hs.Error()), schemeChanged
		case fault == member.SeenLate:
			return seenLate(), answered
		case member.DialError(err) != nil:
			return judged(Down, member.DialError(err).Err.Error()), answered
		case fault == member.TimedOut:
			if alive.err == nil && alive.status == http.StatusOK {
				return judged(Degraded, fmt.Sprintf("alive, but no answer to GET %s within %s", path, c.timeout)), answered
			}
			return judged(Down, fmt.Sprintf("no answer to GET %s within %s", path, c.timeout)), answered
		case errors.As(err, &hs):
			return judged(Down, hs.Error()), answered // TLS answered, but the member did not prove its key
		}
		return judged(Down, err.Error()), notHTTP
	}
	switch status, body := ready.status, ready.body; {
	case status == http.StatusNotFound:
		return judged(Down, ""), missingPath
	case status == http.StatusOK && c.mode == CheckReadyz:
		return judged(Healthy, ""), answered
	case status == http.StatusOK:
		var h struct{ Health, Reason string }
		if json.Unmarshal(body, &h) == nil && h.Health == "true" {
			if c.isLearner(ctx) {
				return judged(Down, "learner: its status says isLearner"), answered
			}
			return judged(Healthy, ""), answered
		}
		return judged(Degraded, "/health: "+strings.TrimSpace(string(body))), answered
	case status >= 500:
		reason := failedChecks(body)
		if strings.Contains(reason, "non_learner") {
			return judged(Down, "learner: "+reason), answered // a learner serves no client requests
		}
		return judged(Degraded, reason), answered
	default:
		return judged(Down, fmt.Sprintf("GET %s answered %d", path, status)), notHTTP
	}
}

// isLearner asks a member that answered /health whether it is a learner: before 3.4.29 and
// 3.5.11 there is no /readyz, and /health says a learner is healthy though it serves no client
// request. The member's own status says. A member that does not answer is not judged a learner:
// /health has just said it serves.
func (c *checker) isLearner(ctx context.Context) bool {
	a := c.do(ctx, http.MethodPost, "/v3/maintenance/status", []byte("{}"))
	var st struct {
		IsLearner bool `json:"isLearner"`
	}
	return a.err == nil && a.status == http.StatusOK && json.Unmarshal(a.body, &st) == nil && st.IsLearner
}

// probeAnswer is the outcome of one probe request.
type probeAnswer struct {
	status int
	body   []byte
	err    error
}

// answerLimit bounds what a probe reads of an answer's body.
const answerLimit = 4096

// get does one GET of path on the member, over TLS when it speaks TLS.
func (c *checker) get(ctx context.Context, path string) probeAnswer {
	return c.do(ctx, http.MethodGet, path, nil)
}

// do sends one request with body to path on the member, over TLS when it speaks TLS.
func (c *checker) do(ctx context.Context, method, path string, body []byte) probeAnswer {
	a, err := c.client.Do(ctx, c.scheme, method, path, body, answerLimit)
	return probeAnswer{status: a.Status, body: a.Body, err: err}
}

// failedChecks condenses an unhealthy answer: the "[-]" lines of /readyz, or /health's JSON.
func failedChecks(body []byte) string {
	var failed []string
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "[-]") {
			failed = append(failed, strings.TrimPrefix(line, "[-]"))
		}
	}
	if len(failed) > 0 {
		return strings.Join(failed, "; ")
	}
	return strings.TrimSpace(string(body))
}
