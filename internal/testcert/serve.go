package testcert

import (
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// ServeTLS serves TLS with cert on addr, asking for client certificates as auth and speaking at
// most version, and reports each handshake's error while there is room to. It stops when the
// test ends.
func ServeTLS(t testing.TB, addr string, cert tls.Certificate, auth tls.ClientAuthType, version uint16) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	failures := make(chan error, 16)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: auth, MaxVersion: version}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := tls.Server(c, cfg)
			tc.SetDeadline(time.Now().Add(2 * time.Second))
			err = tc.Handshake()
			select {
			case failures <- err:
			default:
			}
			tc.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String(), failures
}
