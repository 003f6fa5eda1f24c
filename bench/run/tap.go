package main

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// tap relays the connections made to one member and counts them, and, for a member that
// serves TLS, its full and resumed handshakes: what a proxy's probes cost the member. A
// handshake is resumed when the member's ServerHello accepts a pre-shared key (TLS 1.3), the
// only readable sign of it: the rest of the handshake is encrypted.
type tap struct {
	target string
	ln     net.Listener

	conns, full, resumed atomic.Int64
	closed               atomic.Bool
	mu                   sync.Mutex
	open                 map[net.Conn]struct{}
	wg                   sync.WaitGroup
}

func startTap(target string) (*tap, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &tap{target: target, ln: ln, open: map[net.Conn]struct{}{}}
	t.wg.Add(1)
	go t.serve()
	return t, nil
}

func (t *tap) addr() string { return t.ln.Addr().String() }

func (t *tap) serve() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return
		}
		t.conns.Add(1)
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.relay(c)
		}()
	}
}

func (t *tap) relay(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", t.target)
	if err != nil {
		return
	}
	defer up.Close()
	t.mu.Lock()
	t.open[c], t.open[up] = struct{}{}, struct{}{}
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.open, c)
		delete(t.open, up)
		t.mu.Unlock()
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(up, c)
		up.(*net.TCPConn).CloseWrite()
	}()
	t.countHandshake(c, up)
	io.Copy(c, up)
	c.(*net.TCPConn).CloseWrite()
	<-done
}

// countHandshake relays the member's first TLS record, a ServerHello when it serves TLS, and
// counts the handshake it begins.
func (t *tap) countHandshake(c, up net.Conn) {
	head := make([]byte, 5)
	if _, err := io.ReadFull(up, head); err != nil {
		return
	}
	if head[0] != 22 { // no TLS handshake record: a plain member
		c.Write(head)
		return
	}
	record := make([]byte, 5+int(binary.BigEndian.Uint16(head[3:5])))
	copy(record, head)
	if _, err := io.ReadFull(up, record[5:]); err != nil {
		c.Write(record[:5])
		return
	}
	if acceptsPSK(record[5:]) {
		t.resumed.Add(1)
	} else {
		t.full.Add(1)
	}
	c.Write(record)
}

// acceptsPSK reports whether a ServerHello carries the pre_shared_key extension (41).
func acceptsPSK(hello []byte) bool {
	if len(hello) < 4+2+32+1 || hello[0] != 2 {
		return false
	}
	b := hello[4+2+32:]
	if 1+int(b[0]) > len(b) {
		return false
	}
	b = b[1+int(b[0]):] // session ID
	if len(b) < 2+1+2 {
		return false
	}
	b = b[2+1:] // cipher suite, compression
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if n > len(b) {
		return false
	}
	for b = b[:n]; len(b) >= 4; {
		kind, size := binary.BigEndian.Uint16(b), int(binary.BigEndian.Uint16(b[2:]))
		if kind == 41 {
			return true
		}
		if 4+size > len(b) {
			return false
		}
		b = b[4+size:]
	}
	return false
}

// stop closes the tap's listener, so that new connections are refused as by a dead member,
// and the connections it relays.
func (t *tap) stop() {
	if t.closed.Swap(true) {
		return
	}
	t.ln.Close()
	t.mu.Lock()
	for c := range t.open {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
}

// stopped reports whether stop was called.
func (t *tap) stopped() bool { return t.closed.Load() }
