package testcert

import (
	"crypto/tls"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// ImpostorKind is how an impostor fails to prove it holds the key of the chain it presents.
type ImpostorKind int

// The impostors.
const (
	ImpostorTLS13 ImpostorKind = iota // TLS 1.3, signs CertificateVerify with another key
	ImpostorTLS12                     // TLS 1.2, signs ServerKeyExchange with another key
	ImpostorAlert                     // TLS 1.2, sends an alert right after its Certificate
)

func (k ImpostorKind) String() string {
	return [...]string{"TLS 1.3", "TLS 1.2", "alert after Certificate"}[k]
}

// Impostor is a server on loopback that presents a real certificate chain without its key.
type Impostor struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

// ServeImpostor presents stolen's chain, with a key of its own, on a loopback port until the
// test ends.
func ServeImpostor(t testing.TB, stolen tls.Certificate, kind ImpostorKind) *Impostor {
	t.Helper()
	fake := tls.Certificate{Certificate: stolen.Certificate, PrivateKey: newKey(t)}
	cfg := &tls.Config{Certificates: []tls.Certificate{fake}, MaxVersion: tls.VersionTLS13}
	if kind != ImpostorTLS13 {
		cfg.MaxVersion = tls.VersionTLS12
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	im := &Impostor{ln: ln}
	im.wg.Add(1)
	go func() {
		defer im.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			im.accepted.Add(1)
			if kind == ImpostorAlert {
				c = &alertAfterCertificate{Conn: c}
			}
			im.wg.Add(1)
			go func() {
				defer im.wg.Done()
				tls.Server(c, cfg).Handshake()
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		im.wg.Wait()
	})
	return im
}

// Addr is the impostor's host:port.
func (im *Impostor) Addr() string { return im.ln.Addr().String() }

// Port is the impostor's port.
func (im *Impostor) Port() uint16 { return uint16(im.ln.Addr().(*net.TCPAddr).Port) }

// Accepted returns how many connections the impostor accepted.
func (im *Impostor) Accepted() int64 { return im.accepted.Load() }

// alertAfterCertificate rewrites a TLS 1.2 server's first flight: ServerHello and Certificate
// pass, then a fatal handshake_failure alert ends the connection, in place of the signed key
// exchange.
type alertAfterCertificate struct {
	net.Conn
	done bool
}

func (c *alertAfterCertificate) Write(b []byte) (int, error) {
	if c.done {
		return 0, net.ErrClosed
	}
	var kept []byte
	for rest := b; len(rest) >= 5; {
		n := int(binary.BigEndian.Uint16(rest[3:5]))
		if len(rest) < 5+n {
			break
		}
		if rest[0] == 22 { // handshake records: keep ServerHello (2) and Certificate (11)
			for msgs := rest[5 : 5+n]; len(msgs) >= 4; {
				m := 4 + (int(msgs[1])<<16 | int(msgs[2])<<8 | int(msgs[3]))
				if m > len(msgs) {
					break
				}
				if msgs[0] == 2 || msgs[0] == 11 {
					kept = append(kept, msgs[:m]...)
				}
				msgs = msgs[m:]
			}
		}
		rest = rest[5+n:]
	}
	out := []byte{22, 3, 3, byte(len(kept) >> 8), byte(len(kept))}
	out = append(out, kept...)
	out = append(out, 21, 3, 3, 0, 2, 2, 40) // fatal handshake_failure
	c.done = true
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}
