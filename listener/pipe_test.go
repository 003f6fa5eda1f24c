package listener

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
)

const defaultTestTimeout = 10 * time.Second

type pipeResult struct {
	up, down int64
	err      error
}

// startProxied starts copying between a client connection and a backend served by handle, and returns
// the client side and the channel the result arrives on.
func startProxied(t *testing.T, handle func(*net.TCPConn)) (*net.TCPConn, <-chan pipeResult) {
	t.Helper()
	backend := testnet.Serve(t, handle)
	front := testnet.LocalListener(t)
	client, err := net.DialTCP("tcp", nil, front.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	accepted, err := front.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.Dial("tcp", backend.Addr())
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan pipeResult, 1)
	var wg sync.WaitGroup
	p := &proxied{client: accepted, backend: back.(*net.TCPConn), counts: &addrCounters{}, wg: &wg, done: func(p *proxied) {
		res <- pipeResult{p.up.n.Load(), p.down.n.Load(), p.err()}
	}}
	if err := p.prepare(); err != nil {
		t.Fatal(err)
	}
	p.start()
	t.Cleanup(func() {
		client.Close()
		wg.Wait()
	})
	return client, res
}

func waitResult(t *testing.T, res <-chan pipeResult) pipeResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(defaultTestTimeout):
		t.Fatal("copying did not end")
		return pipeResult{}
	}
}

func TestPipeBytesBothWays(t *testing.T) {
	client, res := startProxied(t, func(c *net.TCPConn) { io.Copy(c, c) })
	msg := bytes.Repeat([]byte("etcd-gateway "), 100_000)
	go client.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("echo differs from what was sent")
	}
	client.Close()
	r := waitResult(t, res)
	if r.up != int64(len(msg)) || r.down != int64(len(msg)) {
		t.Errorf("pipe counted up=%d down=%d, want %d each", r.up, r.down, len(msg))
	}
}

// The client writes, half-closes and only then reads: it must get the whole reply, which the
// backend sends after it has read to EOF. etcd's own gateway fails this.
func TestPipeHalfCloseFromClient(t *testing.T) {
	reply := bytes.Repeat([]byte("r"), 1<<20)
	client, res := startProxied(t, func(c *net.TCPConn) {
		n, err := io.Copy(io.Discard, c)
		if err != nil || n != 5 {
			return
		}
		c.Write(reply)
		c.CloseWrite()
	})
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(client)
	if err != nil {
		t.Fatalf("read reply after half-close: %v", err)
	}
	if len(got) != len(reply) {
		t.Fatalf("got %d bytes of reply, want %d", len(got), len(reply))
	}
	if r := waitResult(t, res); r.err != nil {
		t.Errorf("pipe ended with %v, want a clean end", r.err)
	}
}

// The backend sends and half-closes first; the client's later request must still reach it.
func TestPipeHalfCloseFromBackend(t *testing.T) {
	got := make(chan []byte, 1)
	client, res := startProxied(t, func(c *net.TCPConn) {
		c.Write([]byte("banner"))
		c.CloseWrite()
		b, _ := io.ReadAll(c)
		got <- b
	})
	banner, err := io.ReadAll(client)
	if err != nil || string(banner) != "banner" {
		t.Fatalf("read banner = %q, %v", banner, err)
	}
	if _, err := client.Write([]byte("request after EOF")); err != nil {
		t.Fatal(err)
	}
	client.CloseWrite()
	select {
	case b := <-got:
		if string(b) != "request after EOF" {
			t.Fatalf("backend read %q", b)
		}
	case <-time.After(defaultTestTimeout):
		t.Fatal("backend never got the request")
	}
	if r := waitResult(t, res); r.err != nil {
		t.Errorf("pipe ended with %v, want a clean end", r.err)
	}
}

// A backend that resets mid-stream ends both directions and closes the client.
func TestPipeBackendReset(t *testing.T) {
	client, res := startProxied(t, func(c *net.TCPConn) {
		buf := make([]byte, 5)
		io.ReadFull(c, buf)
		c.Write([]byte("partial"))
		c.SetLinger(0)
		c.Close()
	})
	client.Write([]byte("hello"))
	r := waitResult(t, res)
	if r.err == nil {
		t.Error("pipe ended cleanly after a backend reset; want the error")
	}
	client.SetReadDeadline(time.Now().Add(defaultTestTimeout))
	_, err := io.ReadAll(client)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("client connection still open after the backend reset")
	}
}
