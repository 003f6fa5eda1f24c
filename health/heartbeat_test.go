package health

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
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
	dialed := 0
	dial := countingDial(&dialed)
	hb := newHeartbeater(&member.Client{Addr: ep.Addr(), Dial: dial}, time.Now)
	hb.speak(member.SchemePlain)
	defer hb.close()
	for i := range 20 {
		if err := hb.beat(context.Background(), time.Second); err != nil {
			t.Fatalf("beat %d: %v", i, err)
		}
		if dialed != 1 {
			t.Fatalf("beat %d made connection %d", i, dialed)
		}
	}
}

// A member that closes the kept-alive connection after an answer costs no heartbeat: the
// next beat finds it closed and reconnects within its timeout.
func TestHeartbeaterReconnectsWhenTheMemberCloses(t *testing.T) {
	oneAnswer := testnet.Serve(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(defaultTestTimeout))
		buf := make([]byte, 512)
		if _, err := c.Read(buf); err == nil {
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"))
		}
	}) // then the connection is closed
	dialed := 0
	dial := countingDial(&dialed)
	hb := newHeartbeater(&member.Client{Addr: oneAnswer.Addr(), Dial: dial}, time.Now)
	hb.speak(member.SchemePlain)
	defer hb.close()
	for i := range 3 {
		if err := hb.beat(context.Background(), time.Second); err != nil {
			t.Fatalf("beat %d on a member that closes after each answer: %v", i, err)
		}
	}
	if dialed != 3 {
		t.Errorf("3 beats made %d connections, want 3: one each, none failing", dialed)
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
		scheme  member.Scheme
		wantErr string
	}{
		{"TLS member", tlsMember.Addr(), member.SchemeTLS, ""},
		{"not HTTP but alive", notHTTP.Addr(), member.SchemePlain, ""},
		{"silent", silent.Addr(), member.SchemePlain, "no answer to heartbeats"},
		{"refused", testnet.ClosedPort(t), member.SchemePlain, "heartbeat"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			trust := resolver.Endpoint{Host: "127.0.0.1"}.MemberTLS(member.Policy{Roots: ca.Pool()})
			hb := newHeartbeater(&member.Client{Addr: tt.addr, TLS: trust}, time.Now)
			hb.speak(tt.scheme)
			defer hb.close()
			err := hb.beat(context.Background(), 200*time.Millisecond)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("beat = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// A pulse reads the previous heartbeat's answer without waiting and sends the next without
// waiting for its answer; a member that stops answering is found by the next pulse.
func TestHeartbeaterPulses(t *testing.T) {
	var silent atomic.Bool
	release := make(chan struct{})
	defer close(release)
	requests := make(chan struct{}, 16)
	ep := fakeMember(t, map[string]http.HandlerFunc{"/version": func(w http.ResponseWriter, r *http.Request) {
		requests <- struct{}{}
		if silent.Load() {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		answer(200, "{}")(w, r)
	}}, nil)
	dialed := 0
	dial := countingDial(&dialed)
	hb := newHeartbeater(&member.Client{Addr: ep.Addr(), Dial: dial}, time.Now)
	hb.grace = defaultTestTimeout // the answers are read as a period after they were sent would
	hb.speak(member.SchemePlain)
	defer hb.close()
	const period = 250 * time.Millisecond
	for i := range 5 {
		if err := hb.pulse(context.Background(), period); err != nil {
			t.Fatalf("pulse %d: %v", i, err)
		}
		if !hb.session.Pending() {
			t.Fatalf("pulse %d left no heartbeat in flight", i)
		}
		<-requests // the member got it; its answer follows at once
	}
	if dialed != 1 {
		t.Fatalf("5 pulses made %d connections, want 1", dialed)
	}
	silent.Store(true)
	const timeout = 50 * time.Millisecond
	if err := hb.pulse(context.Background(), timeout); err != nil {
		t.Fatalf("the pulse that reads the last answer: %v", err)
	}
	<-requests
	hb.grace = pulseGrace
	err := hb.pulse(context.Background(), timeout)
	if err == nil || !strings.Contains(err.Error(), "no answer to heartbeats (GET /version) within 50ms") {
		t.Fatalf("pulse after a heartbeat the member did not answer = %v, want no answer within the 50ms timeout", err)
	}
}

// countingDial dials as a net.Dialer does and counts its dials in n.
func countingDial(n *int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		*n++
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}
