package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

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

// TLSConfig is what probes of TLS members need.
type TLSConfig struct {
	Roots        *x509.CertPool    // nil: the system roots
	Certificates []tls.Certificate // a client certificate, for members that require one
	Domain       string            // the SRV domain, one name a member's certificate may be valid for
}

// checker probes one endpoint. It is used by one goroutine only.
type checker struct {
	ep      resolver.Endpoint
	mode    CheckMode
	timeout time.Duration
	client  *http.Client
	dialer  net.Dialer
	tls     *tls.Config      // nil for a plain member
	now     func() time.Time // the clock that judges whether a timeout was seen late
}

func newChecker(ep resolver.Endpoint, mode CheckMode, timeout time.Duration, tlsCfg TLSConfig) *checker {
	c := &checker{ep: ep, mode: mode, timeout: timeout, dialer: net.Dialer{Timeout: timeout}, now: time.Now}
	// Every probe is a new connection, as a new client's would be: a member that serves the
	// connections it has but accepts no new one (out of descriptors, a full accept queue)
	// must not look healthy. Heartbeats keep their connection: they ask whether the process
	// answers at all.
	transport := &http.Transport{
		DialContext:        c.dialer.DialContext,
		DisableKeepAlives:  true,
		DisableCompression: true,
	}
	if ep.TLS {
		roots := tlsCfg.Roots
		c.tls = &tls.Config{
			Certificates: tlsCfg.Certificates,
			// Verified below against the SRV domain or the target, as discovery did.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if err := resolver.VerifyServer(cs.PeerCertificates, roots, tlsCfg.Domain, ep.Target); err != nil {
					return &untrustedError{err}
				}
				return nil
			},
		}
		transport.TLSClientConfig = c.tls
	}
	c.client = &http.Client{Transport: transport, Timeout: timeout}
	return c
}

// close releases the kept-alive probe connection.
func (c *checker) close() { c.client.CloseIdleConnections() }

// httpOutcome says whether an HTTP probe gave a verdict.
type httpOutcome int

const (
	answered    httpOutcome = iota // the verdict stands
	missingPath                    // 404: the member lacks this endpoint; use the next mode from now on
	notHTTP                        // no usable HTTP answer this time; fall back to a TCP connect
)

// check probes once and returns the endpoint's state and, unless healthy, why.
func (c *checker) check(ctx context.Context) (State, string) {
	for c.mode != CheckTCP {
		st, reason, outcome := c.checkHTTP(ctx)
		switch outcome {
		case answered:
			return st, reason
		case missingPath:
			if c.mode == CheckReadyz {
				c.mode = CheckHealth
			} else {
				c.mode = CheckTCP
			}
		case notHTTP:
			return c.checkTCP(ctx)
		}
	}
	return c.checkTCP(ctx)
}

func (c *checker) checkTCP(ctx context.Context) (State, string) {
	deadline := c.now().Add(c.timeout)
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	conn, err := c.dialer.DialContext(ctx, "tcp", c.ep.Addr())
	if LocalShortage(err) {
		return noVerdict, err.Error()
	}
	if err != nil && isTimeout(err) && ObservedLate(deadline, c.now(), c.timeout) {
		return tooLate, errLate.Error()
	}
	if err != nil {
		return Down, err.Error()
	}
	conn.Close()
	return Healthy, ""
}

// checkHTTP does GET /readyz or /health and returns the verdict and whether it stands. With it
// goes a liveness request (/livez, or /health?serializable=true), so that a member that is
// alive but cannot serve a linearizable read in time (no leader) is degraded, not down.
func (c *checker) checkHTTP(ctx context.Context) (State, string, httpOutcome) {
	path, live := "/readyz", "/livez"
	if c.mode == CheckHealth {
		path, live = "/health", "/health?serializable=true"
	}
	deadline := c.now().Add(c.timeout)
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	liveness := make(chan probeAnswer, 1)
	go func() { liveness <- c.get(ctx, live) }()
	ready := c.get(ctx, path)
	if ready.err != nil {
		cancel()
	}
	alive := <-liveness

	if err := ready.err; err != nil {
		var untrusted *untrustedError
		switch {
		case LocalShortage(err):
			return noVerdict, err.Error(), answered
		case errors.As(err, &untrusted):
			return Down, untrusted.Error(), answered
		case isTimeout(err) && ObservedLate(deadline, c.now(), c.timeout):
			return tooLate, errLate.Error(), answered
		case dialError(err) != nil:
			return Down, dialError(err).Err.Error(), answered
		case isTimeout(err):
			if alive.err == nil && alive.status == http.StatusOK {
				return Degraded, fmt.Sprintf("alive, but no answer to GET %s within %s", path, c.timeout), answered
			}
			return Down, fmt.Sprintf("no answer to GET %s within %s", path, c.timeout), answered
		}
		return Down, err.Error(), notHTTP
	}
	switch status, body := ready.status, ready.body; {
	case status == http.StatusNotFound:
		return Down, "", missingPath
	case status == http.StatusOK && c.mode == CheckReadyz:
		return Healthy, "", answered
	case status == http.StatusOK:
		var h struct{ Health, Reason string }
		if json.Unmarshal(body, &h) == nil && h.Health == "true" {
			return Healthy, "", answered
		}
		return Degraded, "/health: " + strings.TrimSpace(string(body)), answered
	case status >= 500:
		reason := failedChecks(body)
		if strings.Contains(reason, "non_learner") {
			return Down, "learner: " + reason, answered // a learner serves no client requests
		}
		return Degraded, reason, answered
	default:
		return Down, fmt.Sprintf("GET %s answered %d", path, status), notHTTP
	}
}

// probeAnswer is the outcome of one probe request.
type probeAnswer struct {
	status int
	body   []byte
	err    error
}

// get does one GET of path on the member.
func (c *checker) get(ctx context.Context, path string) probeAnswer {
	scheme := "http"
	if c.ep.TLS {
		scheme = "https"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+c.ep.Addr()+path, nil)
	if err != nil {
		return probeAnswer{err: err}
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return probeAnswer{err: err}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return probeAnswer{status: resp.StatusCode, body: body}
}

// untrustedError is a member certificate that does not verify: the member is down for us,
// whatever a TCP connect would say.
type untrustedError struct{ err error }

func (e *untrustedError) Error() string { return "TLS: " + e.err.Error() }

func (e *untrustedError) Unwrap() error { return e.err }

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
