package status

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/listener"
)

// newTestServer returns a status server of an empty gateway on a loopback port, served until
// the test ends.
func newTestServer(t *testing.T) (s *Server, base string, stop func()) {
	t.Helper()
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	fwd := listener.NewForwarder(listener.ForwarderConfig{Log: zap.NewNop()})
	t.Cleanup(func() { fwd.Shutdown(time.Second, nil) })
	s = New(ln, Sources{Table: health.NewTable(), Forwarder: fwd, StaticSource: "endpoints"}, NewDialMetrics(), zap.NewNop())
	base, stop = serve(t, s)
	return s, base, stop
}

// rawExchange sends request on a new connection and returns everything the server answers
// before it closes the connection.
func rawExchange(t *testing.T, addr, request string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	answer, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer to %.40q: %v", request, err)
	}
	return string(answer)
}

// The status server answers as HTTP clients and scrapers expect: HEAD without a body, a query
// ignored, 404 and 405 (with Allow) as net/http's mux did, 400 for what is not HTTP/1.x or a
// head too long, and Connection: close with an exact Content-Length.
func TestServerSpeaksHTTP(t *testing.T) {
	s, base, stop := newTestServer(t)
	defer stop()
	addr := s.ln.Addr().String()
	client := &http.Client{Timeout: 5 * time.Second}

	resp, err := client.Head(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != 3 || !resp.Close {
		t.Errorf("HEAD /healthz = %d, length %d, close %v; want 200, 3 (the GET's), close", resp.StatusCode, resp.ContentLength, resp.Close)
	}
	if code, body := get(t, base+"/healthz?verbose=1"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz with a query = %d %q, want 200 ok", code, body)
	}
	if code, _ := get(t, base+"/nowhere"); code != 404 {
		t.Errorf("/nowhere = %d, want 404", code)
	}
	resp, err = client.Post(base+"/readyz", "text/plain", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /readyz = %d, Allow %q; want 405, GET, HEAD", resp.StatusCode, resp.Header.Get("Allow"))
	}

	answer := rawExchange(t, addr, "GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
	if want := "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"; answer != want {
		t.Errorf("an HTTP/1.0 GET got %q, want %q", answer, want)
	}
	for _, bad := range []string{
		"HELLO\r\n\r\n",
		"GET /healthz SPDY/3\r\n\r\n",
		"GET /healthz HTTP/1.1\r\nX-Long: " + strings.Repeat("a", requestHeadLimit) + "\r\n\r\n",
	} {
		if answer := rawExchange(t, addr, bad); !strings.HasPrefix(answer, "HTTP/1.1 400 Bad Request\r\n") {
			t.Errorf("%.30q... got %.60q, want 400", bad, answer)
		}
	}
}

// A client that connects and sends nothing, or half a request, holds up neither the other
// clients nor the server's stop.
func TestServerIsNotHeldBySilentClients(t *testing.T) {
	s, base, stop := newTestServer(t)
	var held []net.Conn
	for _, start := range []string{"", "GET /metrics HTTP/1.1\r\n"} {
		c, err := net.Dial("tcp", s.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, start)
		held = append(held, c)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz beside two silent clients = %d", code)
	}
	stopped := make(chan struct{})
	go func() {
		stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(time.Second): // well under the head timeout the silent clients would get
		t.Fatal("the server's stop waits for silent clients")
	}
	for _, c := range held {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := bufio.NewReader(c).ReadByte(); err != io.EOF {
			t.Errorf("a silent client's connection after the stop: %v, want it closed", err)
		}
	}
}
