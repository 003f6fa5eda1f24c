package listener

import (
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
)

// openFDs counts this process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// An idle proxied connection holds its two sockets and nothing else: no splice pipes.
func TestIdleConnectionHoldsTwoDescriptors(t *testing.T) {
	backend := testnet.Serve(t, func(c *net.TCPConn) { testnet.EchoBuffered(c) })
	addr := serveListener(t, dialTo(backend.Addr()))

	// Warm up: one connection that moves bulk data, so the splice path has run.
	warm, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer warm.Close()
	roundTrip(t, warm, string(make([]byte, 256<<10)))

	const n = 50
	before := openFDs(t)
	var conns []net.Conn
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		roundTrip(t, c, "idle after this")
		conns = append(conns, c)
	}
	// Per connection: the test's client socket, the backend's accepted socket, and the
	// gateway's two: its accepted client socket and its backend socket. Polled: the copy
	// goroutines park a moment after the round trip.
	var perConn float64
	if !testnet.Eventually(defaultTestTimeout, func() bool {
		perConn = float64(openFDs(t)-before) / n
		return perConn <= 4.1
	}) {
		t.Fatalf("%.2f descriptors per idle proxied connection (2 of them the test's), want 4: the gateway holds more than its two sockets", perConn)
	}
	big := make([]byte, 1<<20)
	for _, c := range conns[:3] {
		go c.Write(big)
		c.SetReadDeadline(time.Now().Add(defaultTestTimeout))
		if _, err := io.ReadFull(c, make([]byte, len(big))); err != nil {
			t.Fatal(err)
		}
	}
}

func BenchmarkPipe(b *testing.B) {
	backend := testnet.Serve(b, func(c *net.TCPConn) { io.Copy(c, c) })
	addr := serveListener(b, dialTo(backend.Addr()))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for _, size := range []int{64, 1 << 20} {
		msg := make([]byte, size)
		got := make([]byte, size)
		b.Run(byteSize(size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				go c.Write(msg)
				if _, err := io.ReadFull(c, got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func byteSize(n int) string {
	if n >= 1<<20 {
		return "1MiB"
	}
	return "64B"
}
