// Package dnstest is a real DNS server for tests: miekg/dns on a loopback port, UDP and TCP,
// serving a zone the test replaces while the code under test runs, and able to misbehave on
// demand (SERVFAIL, silence, garbage, truncation).
package dnstest

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
)

// Mode is how the server answers.
type Mode int

// The answering modes.
const (
	Normal   Mode = iota // answer from the zone
	ServFail             // answer SERVFAIL
	Silent               // never answer: the client times out
	Garbage              // answer bytes that are not a DNS message
	Truncate             // over UDP, answer empty with the TC bit set; over TCP, answer normally
)

// Server is a DNS server on 127.0.0.1 that serves one zone.
type Server struct {
	t    testing.TB
	addr string

	mu      sync.Mutex
	rrs     []dns.RR
	mode    Mode
	byName  map[string]Mode // names answered in another mode than mode
	noExtra bool
	queries map[string]int // "name TYPE" → count
	servers []*dns.Server
}

// Start serves an empty zone on a loopback port, UDP and TCP, until the test ends. The port is
// outside the ephemeral range and never handed out twice (testnet.FreePort), so that Restart
// finds it free: an ephemeral port may be taken meanwhile by any outgoing connection, the
// gateway's own DNS queries included.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, queries: map[string]int{}}
	for attempt := 0; ; attempt++ {
		port, err := testnet.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		pc, err := net.ListenPacket("udp", addr)
		if err == nil {
			var ln net.Listener
			if ln, err = net.Listen("tcp", addr); err == nil {
				s.addr = addr
				s.serve(pc, ln)
				break
			}
			pc.Close()
		}
		if attempt > 10 {
			t.Fatalf("no port free for both UDP and TCP: %v", err)
		}
	}
	t.Cleanup(s.Stop)
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

func (s *Server) serve(pc net.PacketConn, ln net.Listener) {
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: dns.HandlerFunc(s.handle)},
		{Listener: ln, Handler: dns.HandlerFunc(s.handle)},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		s.mu.Lock()
		s.servers = append(s.servers, srv)
		s.mu.Unlock()
	}
}

// Stop shuts the server down; queries then go unanswered.
func (s *Server) Stop() {
	s.mu.Lock()
	servers := s.servers
	s.servers = nil
	s.mu.Unlock()
	for _, srv := range servers {
		srv.Shutdown()
	}
}

// Restart serves again on the same port after Stop.
func (s *Server) Restart() {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pc, err := net.ListenPacket("udp", s.addr)
		if err == nil {
			var ln net.Listener
			if ln, err = net.Listen("tcp", s.addr); err == nil {
				s.serve(pc, ln)
				return
			}
			pc.Close()
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("restart DNS server on %s: %v", s.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SetZone replaces the zone with records in zone-file syntax, one per string.
func (s *Server) SetZone(records ...string) {
	s.t.Helper()
	var rrs []dns.RR
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			s.t.Fatalf("record %q: %v", r, err)
		}
		rrs = append(rrs, rr)
	}
	s.mu.Lock()
	s.rrs = rrs
	s.mu.Unlock()
}

// SetMode changes how the server answers.
func (s *Server) SetMode(m Mode) {
	s.mu.Lock()
	s.mode = m
	s.mu.Unlock()
}

// SetNameMode makes the server answer queries for name (fully qualified) in mode m, whatever
// the mode of the others.
func (s *Server) SetNameMode(name string, m Mode) {
	s.mu.Lock()
	if s.byName == nil {
		s.byName = map[string]Mode{}
	}
	s.byName[strings.ToLower(name)] = m
	s.mu.Unlock()
}

// OmitAdditional makes SRV answers come without the targets' addresses, so that clients
// must look them up.
func (s *Server) OmitAdditional() {
	s.mu.Lock()
	s.noExtra = true
	s.mu.Unlock()
}

// Queries returns how many queries for name (fully qualified) and qtype arrived.
func (s *Server) Queries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[strings.ToLower(name)+" "+dns.TypeToString[qtype]]
}

func (s *Server) handle(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		return
	}
	q := req.Question[0]
	s.mu.Lock()
	s.queries[strings.ToLower(q.Name)+" "+dns.TypeToString[q.Qtype]]++
	mode, noExtra := s.mode, s.noExtra
	if m, ok := s.byName[strings.ToLower(q.Name)]; ok {
		mode = m
	}
	rrs := s.rrs
	s.mu.Unlock()

	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	_, udp := w.RemoteAddr().(*net.UDPAddr)
	switch mode {
	case Silent:
		return
	case Garbage:
		w.Write([]byte{0xde, 0xad, 0xbe, 0xef, 0x01})
		return
	case ServFail:
		m.Rcode = dns.RcodeServerFailure
		w.WriteMsg(m)
		return
	case Truncate:
		if udp {
			m.Truncated = true
			w.WriteMsg(m)
			return
		}
	}
	nameExists := false
	for _, rr := range rrs {
		if !strings.EqualFold(rr.Header().Name, q.Name) {
			continue
		}
		nameExists = true
		if rr.Header().Rrtype == q.Qtype {
			m.Answer = append(m.Answer, dns.Copy(rr))
		}
	}
	if !nameExists {
		m.Rcode = dns.RcodeNameError
	}
	for _, ans := range m.Answer {
		srv, ok := ans.(*dns.SRV)
		if !ok || noExtra {
			continue
		}
		for _, rr := range rrs {
			t := rr.Header().Rrtype
			if strings.EqualFold(rr.Header().Name, srv.Target) && (t == dns.TypeA || t == dns.TypeAAAA) {
				m.Extra = append(m.Extra, dns.Copy(rr))
			}
		}
	}
	w.WriteMsg(m)
}
