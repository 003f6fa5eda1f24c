package health

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/internal/testcert"
	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// Heartbeats reuse one kept-alive connection, and replace it when the member closes it.
func TestHeartbeaterKeepsOneConnection(t *testing.T) {
	ep := fakeMember(t, map[string]http.HandlerFunc{"/version": answer(200, `{"etcdserver":"3.6.16","etcdcluster":"3.6.0"}`)}, nil)
	hb := newHeartbeater(ep.Addr())
	defer hb.close()
	var first string
	for i := range 20 {
		if err := hb.beat(context.Background(), time.Second); err != nil {
			t.Fatalf("beat %d: %v", i, err)
		}
		if i == 0 {
			first = hb.conn.LocalAddr().String()
		} else if hb.conn == nil || hb.conn.LocalAddr().String() != first {
			t.Fatalf("beat %d used another connection", i)
		}
	}

	// The member closes the idle connection: the next beat reconnects within its timeout.
	hb.conn.(*net.TCPConn).CloseRead()
	if err := hb.beat(context.Background(), time.Second); err != nil {
		t.Fatalf("beat after the connection was closed: %v", err)
	}
}

func TestHeartbeaterVerdicts(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	tlsMember := fakeMember(t, map[string]http.HandlerFunc{"/version": answer(200, "{}")}, &tls.Config{
		Certificates: []tls.Certificate{ca.Issue(t, []string{"example.com"}, nil)},
	})
	silent := testnet.Serve(t, func(c *net.TCPConn) { io.Copy(io.Discard, c) }) // reads, never answers
	notHTTP := testnet.Serve(t, func(c *net.TCPConn) { c.Write([]byte("garbage\n")) })
	tests := []struct {
		name    string
		addr    string
		secure  bool
		wantErr string
	}{
		{"TLS member", tlsMember.Addr(), true, ""},
		{"not HTTP but alive", notHTTP.Addr(), false, ""},
		{"silent", silent.Addr(), false, "no answer to heartbeats"},
		{"refused", testnet.ClosedPort(t), false, "heartbeat"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hb := newHeartbeater(tt.addr)
			chk := newChecker(resolver.Endpoint{Host: "127.0.0.1"}, CheckReadyz, time.Second, member.Policy{Roots: ca.Pool()})
			hb.speak(tt.secure, chk.handshake)
			defer hb.close()
			err := hb.beat(context.Background(), 200*time.Millisecond)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("beat = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
