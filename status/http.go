package status

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/member"
)

// The status server speaks just enough HTTP/1.1 for its four GET routes, by hand, as the
// member package's client does; net/http lends only its status codes and texts. Its server
// and what that brings (HTTP/2, MIME, international domain names) were a ninth of the
// binary, and every page of the binary is resident for the gateway's whole life. Each request
// gets its answer on its own connection, which then closes.
const (
	// requestHeadLimit bounds the request line and headers together.
	requestHeadLimit = 8 << 10
	// readHeadTimeout bounds how long a client may take to send them, writeTimeout how long
	// it may take to read the answer.
	readHeadTimeout = 5 * time.Second
	writeTimeout    = 30 * time.Second
	// lingerTimeout and lingerLimit bound what is read after the answer, before the close.
	lingerTimeout = time.Second
	lingerLimit   = 256 << 10
	// acceptPause is the wait after an accept failed for want of descriptors or memory.
	acceptPause = 100 * time.Millisecond
)

// reply is the answer a route writes: a status (200 unless set), a content type, and the body.
type reply struct {
	bytes.Buffer
	status      int
	contentType string
}

// route writes the answer to a GET of its path.
type route func(*reply)

// errBadRequest is a request head the server cannot read as HTTP/1.x.
var errBadRequest = errors.New("malformed HTTP request")

// serveHTTP accepts on s.ln and answers each connection's request with routes, until ctx
// ends; then it lets no connection linger and waits for them.
func (s *Server) serveHTTP(ctx context.Context, routes map[string]route) error {
	stop := context.AfterFunc(ctx, func() { s.ln.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := s.ln.AcceptTCP()
		switch {
		case ctx.Err() != nil:
			if c != nil {
				c.Close()
			}
			return ctx.Err()
		case err != nil && member.IsLocalShortage(err):
			s.log.Warn("status server cannot accept: out of descriptors or memory", zap.Error(err))
			pause := time.NewTimer(acceptPause)
			select {
			case <-pause.C:
			case <-ctx.Done():
				pause.Stop()
			}
			continue
		case err != nil:
			return fmt.Errorf("status server on %s: %w", s.ln.Addr(), err)
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			s.answer(ctx, c, routes)
		}()
	}
}

// answer reads one request from c, writes its answer and closes c.
func (s *Server) answer(ctx context.Context, c *net.TCPConn, routes map[string]route) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c.SetReadDeadline(time.Now().Add(readHeadTimeout))
	method, path, err := readRequestHead(bufio.NewReaderSize(c, requestHeadLimit))
	rep := &reply{status: http.StatusOK, contentType: "text/plain; charset=utf-8"}
	switch r, known := routes[path]; {
	case errors.Is(err, errBadRequest):
		rep.status = http.StatusBadRequest
		fmt.Fprintln(rep, "400 Bad Request:", err)
	case err != nil:
		return // the client left or took too long: no one to answer
	case method != "GET" && method != "HEAD":
		rep.status = http.StatusMethodNotAllowed
		fmt.Fprintln(rep, "Method Not Allowed")
	case !known:
		rep.status = http.StatusNotFound
		fmt.Fprintln(rep, "404 page not found")
	default:
		r(rep)
	}
	c.SetWriteDeadline(time.Now().Add(writeTimeout))
	answer := net.Buffers{rep.head()}
	if method != "HEAD" {
		answer = append(answer, rep.Bytes())
	}
	if _, err := answer.WriteTo(c); err != nil {
		s.log.Debug("writing an answer failed", zap.String("path", path), zap.Error(err))
		return
	}
	// What the client sent beyond the head (a body, the rest of a head too long) would make
	// the close a reset, which can destroy the answer before the client reads it: say the
	// answer is all, and read what comes until the client closes, for a moment.
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.CopyN(io.Discard, c, lingerLimit)
}

// head returns the answer's status line and headers.
func (r *reply) head() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n",
		r.status, http.StatusText(r.status), r.contentType, r.Len())
	if r.status == http.StatusMethodNotAllowed {
		b.WriteString("Allow: GET, HEAD\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// readRequestHead reads a request line and its headers, at most requestHeadLimit bytes, and
// returns the method and the path without its query. A request that is not HTTP/1.x, or
// whose head is too long, is errBadRequest.
func readRequestHead(r *bufio.Reader) (method, path string, err error) {
	read := 0
	line := func() ([]byte, error) {
		l, err := r.ReadSlice('\n')
		read += len(l)
		switch {
		case errors.Is(err, bufio.ErrBufferFull) || read > requestHeadLimit:
			return nil, fmt.Errorf("%w: its head is over %d bytes", errBadRequest, requestHeadLimit)
		case err != nil:
			return nil, err
		}
		return bytes.TrimRight(l, "\r\n"), nil
	}
	first, err := line()
	if err != nil {
		return "", "", err
	}
	parts := bytes.Split(first, []byte(" "))
	if len(parts) != 3 || len(parts[0]) == 0 || !bytes.HasPrefix(parts[1], []byte("/")) || !bytes.HasPrefix(parts[2], []byte("HTTP/1.")) {
		return "", "", fmt.Errorf("%w: request line %q", errBadRequest, first)
	}
	method, path = string(parts[0]), string(parts[1])
	if i := bytes.IndexByte(parts[1], '?'); i >= 0 {
		path = string(parts[1][:i])
	}
	for {
		h, err := line()
		if err != nil {
			return "", "", err
		}
		if len(h) == 0 {
			return method, path, nil
		}
	}
}
