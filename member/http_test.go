package member

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/internal/testcert"
	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
)

// Answers as members send them: with a length, chunked, until the connection closes; and
// what is not HTTP.
func TestReadAnswer(t *testing.T) {
	for _, tt := range []struct {
		name     string
		raw      string
		limit    int
		status   int
		body     string
		keep     bool
		wantErr  error
		leftOver string // what must stay unread: the next answer
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\nNEXT", 100, 200, "ok\n", true, nil, "NEXT"},
		{"length beyond the limit", "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 6\r\n\r\nabcdefNEXT", 2, 503, "ab", true, nil, "NEXT"},
		{"body dropped", "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabcdefNEXT", 0, 200, "", true, nil, "NEXT"},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nNEXT", 100, 200, "abcde", true, nil, "NEXT"},
		{"until close", "HTTP/1.0 200 OK\r\n\r\nall of it", 100, 200, "all of it", false, nil, ""},
		{"the member closes", "HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 100, 404, "", false, nil, ""},
		{"not HTTP", "garbage\n", 100, 0, "", false, ErrNotHTTP, ""},
		{"no status", "HTTP/1.1 OK\r\n\r\n", 100, 0, "", false, ErrNotHTTP, ""},
		{"cut short", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 100, 200, "abc", false, io.ErrUnexpectedEOF, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := bufio.NewReader(strings.NewReader(tt.raw))
			a, keep, err := readAnswer(r, tt.limit)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || a.Status != tt.status || string(a.Body) != tt.body || keep != tt.keep {
				t.Fatalf("= %d %q keep %v, %v; want %d %q keep %v", a.Status, a.Body, keep, err, tt.status, tt.body, tt.keep)
			}
			if rest, _ := io.ReadAll(r); string(rest) != tt.leftOver {
				t.Errorf("left %q unread, want %q", rest, tt.leftOver)
			}
		})
	}
}

// A Client sends each request on a new connection, plain or TLS, with its body, and reads the
// answer from Go's own HTTP server, which etcd is; a Session keeps one connection.
func TestClientAgainstAnHTTPServer(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	for _, scheme := range []Scheme{SchemePlain, SchemeTLS} {
		t.Run(scheme.String(), func(t *testing.T) {
			var accepted atomic.Int64
			mux := http.NewServeMux()
			mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
			mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
				w.Write([]byte(strings.Repeat(string(b), 1000))) // past Go's buffer: chunked
			})
			ln := testnet.LocalListener(t)
			srv := &http.Server{Handler: mux, ConnState: func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					accepted.Add(1)
				}
			}}
			var served net.Listener = ln
			if scheme == SchemeTLS {
				served = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, nil, []net.IP{net.IPv4(127, 0, 0, 1)})}})
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				srv.Serve(served)
			}()
			t.Cleanup(func() {
				srv.Close()
				<-done
			})
			var names []Handshake
			c := &Client{Addr: ln.Addr().String(), TLS: TLS{Verify: true, Roots: ca.Pool(), Names: []string{"127.0.0.1"}},
				Handshaken: func(h Handshake) { names = append(names, h) }}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for range 2 {
				a, err := c.Do(ctx, scheme, "GET", "/readyz", nil, 100)
				if err != nil || a.Status != 200 || string(a.Body) != "ok" {
					t.Fatalf("GET /readyz = %d %q, %v", a.Status, a.Body, err)
				}
			}
			a, err := c.Do(ctx, scheme, "POST", "/echo", []byte(`{"x":1}`), 1<<20)
			if err != nil || a.Status != 200 || string(a.Body) != strings.Repeat(`{"x":1}`, 1000) {
				t.Fatalf("POST /echo = %d, %d bytes, %v", a.Status, len(a.Body), err)
			}
			if a, err := c.Do(ctx, scheme, "GET", "/missing", nil, 100); err != nil || a.Status != 404 {
				t.Fatalf("GET /missing = %d, %v", a.Status, err)
			}
			if n := accepted.Load(); n != 4 {
				t.Errorf("4 requests made %d connections, want 4", n)
			}
			if scheme == SchemeTLS && len(names) != 4 {
				t.Errorf("%d handshakes reported, want 4", len(names))
			}

			s := c.Session(scheme)
			defer s.Close()
			for i := range 10 {
				if status, err := s.Get(ctx, "/readyz", time.Now().Add(5*time.Second)); err != nil || status != 200 {
					t.Fatalf("session request %d = %d, %v", i, status, err)
				}
			}
			if n := accepted.Load(); n != 5 {
				t.Errorf("10 requests of a session made %d connections, want 1", n-4)
			}
		})
	}
}

// With a SessionCache, requests resume the member's TLS session: no chain is sent and no key
// proven, which the Handshake says; after Forget the next handshake is full again.
func TestClientResumesTLSSessions(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	ln := testnet.LocalListener(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, nil, []net.IP{net.IPv4(127, 0, 0, 1)})}}))
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	sessions := &SessionCache{}
	var got []Handshake
	c := &Client{Addr: ln.Addr().String(), TLS: TLS{Verify: true, Roots: ca.Pool(), Names: []string{"127.0.0.1"}, Sessions: sessions},
		Handshaken: func(h Handshake) { got = append(got, h) }}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	request := func() Handshake {
		t.Helper()
		if a, err := c.Do(ctx, SchemeTLS, "GET", "/readyz", nil, 100); err != nil || a.Status != 200 {
			t.Fatalf("GET /readyz = %d, %v", a.Status, err)
		}
		return got[len(got)-1]
	}
	if h := request(); h.Resumed || !h.Verified() {
		t.Fatalf("first handshake %+v, want full and verified", h)
	}
	for range 2 {
		if h := request(); !h.Resumed || h.KeyProven {
			t.Fatalf("handshake %+v, want resumed, proving no key", h)
		}
	}
	sessions.Forget()
	if h := request(); h.Resumed || !h.Verified() {
		t.Fatalf("handshake after Forget %+v, want full and verified", h)
	}
}

// A request whose context is canceled ends at once, with the context's error; one whose
// deadline passes ends with a timeout.
func TestClientEndsWithItsContext(t *testing.T) {
	silent := testnet.Serve(t, func(c *net.TCPConn) { io.Copy(io.Discard, c) })
	c := &Client{Addr: silent.Addr()}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := c.Do(ctx, SchemePlain, "GET", "/readyz", nil, 100); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Do(ctx, SchemePlain, "GET", "/readyz", nil, 100); !IsTimeout(err) {
		t.Errorf("past the deadline: %v, want a timeout", err)
	}
}
