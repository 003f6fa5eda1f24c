package member

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"strconv"
	"sync"
	"time"
)

// Answer is a member's HTTP answer: its status, and its body up to the limit asked for.
type Answer struct {
	Status int
	Body   []byte
}

// ErrNotHTTP is an answer that is not HTTP/1.x.
var ErrNotHTTP = errors.New("not an HTTP answer")

// Client speaks HTTP/1.1 to the endpoints of one member (/readyz, /livez, /health, /version,
// the JSON gateway) over TLS or plain TCP, by hand: a request is a few writes, an answer a
// few reads into a small buffer. Its fields are set at construction and not changed after;
// it is safe for concurrent use.
type Client struct {
	Addr string // host:port of the member's client URL
	TLS  TLS    // how to handshake when the member serves TLS
	// Dial connects to Addr; nil is a net.Dialer's.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Drains owns the background reads after failed handshakes (see HandshakeTLS); nil reads
	// them before the request fails.
	Drains *sync.WaitGroup
	// Handshaken, when not nil, is told of every completed handshake: what its names said.
	Handshaken func(Handshake)

	mu       sync.Mutex
	requests map[requestKey][]byte // the bodiless requests made so far, written once each
}

// requestKey names a bodiless request.
type requestKey struct{ method, path string }

// readers are the buffers answers are read through, shared by every Client.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 1024) }}

// bodiless returns the bytes of a request without a body that closes the connection, built
// once per method and path.
func (c *Client) bodiless(method, path string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := requestKey{method, path}
	if b, ok := c.requests[k]; ok {
		return b
	}
	if c.requests == nil {
		c.requests = make(map[requestKey][]byte)
	}
	b := request(method, path, c.Addr, nil, true)
	c.requests[k] = b
	return b
}

// Do sends one request on a new connection, which it closes: a new connection each time, as a
// new client's would be, so that a member that accepts no new connection is not taken for
// one that serves. body, when not nil, is sent as JSON. The answer's body is read up to limit
// bytes. Errors are the dial's (DialError), the handshake's (*HandshakeError), timeouts
// (IsTimeout) and ErrNotHTTP, each wrapped with the request's method and path.
func (c *Client) Do(ctx context.Context, scheme Scheme, method, path string, body []byte, limit int) (Answer, error) {
	a, err := c.do(ctx, scheme, method, path, body, limit)
	if err != nil {
		return a, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return a, nil
}

func (c *Client) do(ctx context.Context, scheme Scheme, method, path string, body []byte, limit int) (Answer, error) {
	conn, err := c.connect(ctx, scheme)
	if err != nil {
		return Answer{}, err
	}
	defer conn.Close()
	stop := watch(ctx, conn)
	defer stop()
	var req []byte
	if body == nil {
		req = c.bodiless(method, path)
	} else {
		req = request(method, path, c.Addr, body, true)
	}
	if _, err := conn.Write(req); err != nil {
		return Answer{}, ctxErr(ctx, err)
	}
	r := readers.Get().(*bufio.Reader)
	r.Reset(conn)
	a, _, err := readAnswer(r, limit)
	r.Reset(nil)
	readers.Put(r)
	return a, ctxErr(ctx, err)
}

// connect dials the member and, for TLS, handshakes.
func (c *Client) connect(ctx context.Context, scheme Scheme) (net.Conn, error) {
	dial := c.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	raw, err := dial(ctx, "tcp", c.Addr)
	if err != nil || scheme != SchemeTLS {
		return raw, err
	}
	h := HandshakeTLS(ctx, raw, c.TLS, c.Drains)
	if err := h.Failure(); err != nil {
		return nil, err
	}
	if c.Handshaken != nil {
		c.Handshaken(h)
	}
	return h.Conn, nil
}

// Session is one kept-alive HTTP/1.1 connection to a member, for the heartbeats: a request on
// it costs a few system calls. A request can be sent and its answer read later (Send, then
// Receive), so that a heartbeat costs one wakeup of the gateway rather than one to send and
// one to read. It is used by one goroutine.
type Session struct {
	client  *Client
	scheme  Scheme
	conn    net.Conn
	r       *bufio.Reader
	path    string // of the request in req
	req     []byte
	pending bool // a request was sent and its answer not read
}

// Session returns a Session that speaks scheme to the member; it connects on first use.
func (c *Client) Session(scheme Scheme) *Session { return &Session{client: c, scheme: scheme} }

// Scheme is what the Session speaks.
func (s *Session) Scheme() Scheme { return s.scheme }

// Fresh reports whether the next request connects anew.
func (s *Session) Fresh() bool { return s.conn == nil }

// Pending reports whether a request was sent and its answer is not read yet.
func (s *Session) Pending() bool { return s.pending }

// Get sends GET path and reads the whole answer by deadline, discarding its body; the
// connection is kept for the next request unless the answer ends it or an error does.
func (s *Session) Get(ctx context.Context, path string, deadline time.Time) (status int, err error) {
	if err := s.Send(ctx, path, deadline); err != nil {
		return 0, err
	}
	return s.Receive(deadline)
}

// Send sends GET path, connecting by deadline first when the Session has no connection, and
// does not wait for the answer: Receive reads it. An error closes the connection.
func (s *Session) Send(ctx context.Context, path string, deadline time.Time) (err error) {
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.conn == nil {
		dctx, cancel := context.WithDeadline(ctx, deadline)
		conn, err := s.client.connect(dctx, s.scheme)
		cancel()
		if err != nil {
			return err
		}
		s.conn, s.r = conn, bufio.NewReaderSize(conn, 512)
	}
	if s.path != path || s.req == nil {
		s.path, s.req = path, request("GET", path, s.client.Addr, nil, false)
	}
	s.conn.SetWriteDeadline(deadline)
	if _, err := s.conn.Write(s.req); err != nil {
		return err
	}
	s.pending = true
	return nil
}

// Receive reads the answer to the request sent, by deadline, discarding its body. The
// connection is kept unless the answer ends it or an error does.
func (s *Session) Receive(deadline time.Time) (status int, err error) {
	if !s.pending {
		return 0, errors.New("no request sent")
	}
	s.pending = false
	s.conn.SetReadDeadline(deadline)
	a, keep, err := readAnswer(s.r, 0)
	if err != nil || !keep {
		s.Close() // the answer cannot be told from the next one, or the member ends the connection
	}
	return a.Status, err
}

// Close drops the kept-alive connection.
func (s *Session) Close() {
	if s.conn != nil {
		s.conn.Close()
		s.conn, s.r = nil, nil
	}
	s.pending = false
}

// request is an HTTP/1.1 request; close asks the member to close the connection after its
// answer.
func request(method, path, host string, body []byte, close bool) []byte {
	b := make([]byte, 0, 128+len(body))
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\nUser-Agent: etcd-gateway\r\n"...)
	if close {
		b = append(b, "Connection: close\r\n"...)
	}
	if body != nil {
		b = append(b, "Content-Type: application/json\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, body...)
}

// readAnswer reads one answer from r: its status, and its body up to limit bytes (the rest is
// read and dropped). keep says whether the connection can carry another request: the answer's
// length was known and the member did not say it closes.
func readAnswer(r *bufio.Reader, limit int) (a Answer, keep bool, err error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return a, false, err
	}
	proto, rest, _ := bytes.Cut(bytes.TrimSpace(line), []byte(" "))
	code, _, _ := bytes.Cut(rest, []byte(" "))
	if !bytes.HasPrefix(proto, []byte("HTTP/1.")) || len(code) != 3 {
		return a, false, ErrNotHTTP
	}
	if a.Status, err = strconv.Atoi(string(code)); err != nil {
		return a, false, ErrNotHTTP
	}
	length, chunked, closes := int64(-1), false, false
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return a, false, err
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return a, false, fmt.Errorf("%w: a header line without a colon", ErrNotHTTP)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.ParseInt(string(value), 10, 64); err != nil || length < 0 {
				return a, false, fmt.Errorf("%w: Content-Length %q", ErrNotHTTP, value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			closes = bytes.EqualFold(value, []byte("close"))
		}
	}
	var body io.Reader
	switch {
	case chunked:
		body = httputil.NewChunkedReader(r)
	case length >= 0:
		body = io.LimitReader(r, length)
	default:
		body = r // until the member closes the connection
	}
	var read int64
	if limit > 0 {
		a.Body, err = io.ReadAll(io.LimitReader(body, int64(limit)))
		read = int64(len(a.Body))
		if err != nil {
			return a, false, err
		}
	}
	skipped, err := io.Copy(io.Discard, body)
	if read += skipped; err != nil {
		return a, false, err
	}
	if length >= 0 && read < length {
		return a, false, io.ErrUnexpectedEOF
	}
	if chunked { // the trailer, up to its empty line
		for {
			line, err := r.ReadSlice('\n')
			if err != nil {
				return a, false, err
			}
			if len(bytes.TrimSpace(line)) == 0 {
				break
			}
		}
	}
	return a, (chunked || length >= 0) && !closes, nil
}

// watch makes conn's reads and writes fail once ctx ends; stop releases it.
func watch(ctx context.Context, conn net.Conn) (stop func() bool) {
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	return context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
}

// ctxErr is err, or context.Canceled when the context was canceled: watch then made the
// connection's deadline pass, which the connection reports as a timeout.
func ctxErr(ctx context.Context, err error) error {
	if err != nil && errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err()
	}
	return err
}
