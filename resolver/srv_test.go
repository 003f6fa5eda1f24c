package resolver

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/internal/dnstest"
)

func newTestDNSClient(t *testing.T, s *dnstest.Server) *dnsClient {
	t.Helper()
	c, err := newDNSClient(s.Addr(), "", 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var exampleZone = []string{
	"_etcd-client-ssl._tcp.example.com. 30 IN SRV 0 0 2379 m1.example.com.",
	"_etcd-client._tcp.example.com. 10 IN SRV 10 5 2380 m2.example.com.",
	"_etcd-client._tcp.example.com. 60 IN SRV 10 0 2381 m3.example.com.",
	"m1.example.com. 30 IN A 127.0.0.11",
	"m2.example.com. 30 IN A 127.0.0.12",
	"m2.example.com. 30 IN AAAA ::1",
	"m3.example.com. 5 IN A 127.0.0.13",
}

var exampleEndpoints = []Endpoint{
	{Host: "127.0.0.11", Port: 2379, Target: "m1.example.com", TLS: true},
	{Host: "127.0.0.12", Port: 2380, Priority: 10, Weight: 5, Target: "m2.example.com"},
	{Host: "127.0.0.13", Port: 2381, Priority: 10, Target: "m3.example.com"},
	{Host: "::1", Port: 2380, Priority: 10, Weight: 5, Target: "m2.example.com"},
}

func TestDiscover(t *testing.T) {
	tests := []struct {
		name      string
		omitExtra bool
		mode      dnstest.Mode
	}{
		{name: "addresses in the additional section"},
		{name: "addresses looked up", omitExtra: true},
		{name: "truncated UDP answer retried over TCP", mode: dnstest.Truncate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := dnstest.Start(t)
			s.SetZone(exampleZone...)
			if tt.omitExtra {
				s.OmitAdditional()
			}
			s.SetMode(tt.mode)
			secure, plain := SRVNames("example.com", "")
			d, err := newTestDNSClient(t, s).discover(context.Background(), secure, plain)
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.merge(nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, Normalize(exampleEndpoints)) {
				t.Errorf("endpoints:\n got %v\nwant %v", got, Normalize(exampleEndpoints))
			}
			if d.ttl != 5*time.Second {
				t.Errorf("ttl = %s, want the smallest, 5s", d.ttl)
			}
		})
	}
}

func TestDiscoverOneNameMissingIsNormal(t *testing.T) {
	s := dnstest.Start(t)
	s.SetZone(
		"_etcd-client-prod._tcp.example.com. 30 IN SRV 0 0 2379 m1.example.com.",
		"m1.example.com. 30 IN A 127.0.0.11",
	)
	secure, plain := SRVNames("example.com", "prod")
	if secure != "_etcd-client-ssl-prod._tcp.example.com." || plain != "_etcd-client-prod._tcp.example.com." {
		t.Fatalf("names = %s, %s", secure, plain)
	}
	d, err := newTestDNSClient(t, s).discover(context.Background(), secure, plain)
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.merge(nil)
	want := []Endpoint{{Host: "127.0.0.11", Port: 2379, Target: "m1.example.com"}}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("endpoints = %v, %v; want %v", got, err, want)
	}
}

func TestDiscoverFailures(t *testing.T) {
	tests := []struct {
		name    string
		zone    []string
		mode    dnstest.Mode
		wantErr string
	}{
		{"SERVFAIL", exampleZone, dnstest.ServFail, "SERVFAIL"},
		{"timeout", exampleZone, dnstest.Silent, "timeout"},
		{"garbage", exampleZone, dnstest.Garbage, "query SRV"},
		{"no records at all", []string{"other.example.com. 30 IN A 127.0.0.1"}, dnstest.Normal, "no SRV records"},
		{"targets without addresses", []string{"_etcd-client._tcp.example.com. 30 IN SRV 0 0 2379 m1.example.com."}, dnstest.Normal, "has an address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := dnstest.Start(t)
			s.SetZone(tt.zone...)
			s.SetMode(tt.mode)
			secure, plain := SRVNames("example.com", "")
			d, err := newTestDNSClient(t, s).discover(context.Background(), secure, plain)
			var got []Endpoint
			if err == nil {
				got, err = d.merge(nil)
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("discover = %v, %v; want an error about %q", got, err, tt.wantErr)
			}
		})
	}
}

func FuzzSRVAnswer(f *testing.F) {
	m := new(dns.Msg)
	m.SetQuestion("_etcd-client._tcp.example.com.", dns.TypeSRV)
	for _, r := range exampleZone {
		rr, _ := dns.NewRR(r)
		if rr.Header().Rrtype == dns.TypeSRV {
			m.Answer = append(m.Answer, rr)
		} else {
			m.Extra = append(m.Extra, rr)
		}
	}
	packed, err := m.Pack()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(packed)
	f.Add([]byte{0xde, 0xad})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var msg dns.Msg
		if err := msg.Unpack(raw); err != nil {
			return
		}
		for _, rec := range srvRecords(&msg) {
			if rec.port == 0 || rec.target == "." || !strings.HasSuffix(rec.target, ".") {
				t.Fatalf("unusable record accepted: %+v", rec)
			}
			ips, _ := addresses(&msg, rec.target)
			for _, ip := range ips {
				if ip.To16() == nil {
					t.Fatalf("bad address %v for %s", ip, rec.target)
				}
			}
		}
	})
}

func TestDNSClientErrors(t *testing.T) {
	if _, err := newDNSClient("127.0.0.1", "", time.Second); err == nil || !strings.Contains(err.Error(), "--dns-server") {
		t.Errorf("server without port: %v", err)
	}
	if _, err := newDNSClient("", "/nonexistent/resolv.conf", time.Second); err == nil || !strings.Contains(err.Error(), "--dns-server") {
		t.Errorf("missing resolv.conf: %v", err)
	}
}

func TestOneSRVNameFailingKeepsTheOther(t *testing.T) {
	s := dnstest.Start(t)
	s.SetZone(exampleZone...)
	secure, plain := SRVNames("example.com", "")
	c := newTestDNSClient(t, s)
	run := newRefresherRun(&Refresher{log: zap.NewNop()})

	d, err := c.discover(context.Background(), secure, plain)
	if err != nil || !run.judgeNames(d) {
		t.Fatalf("both names answering: %v", err)
	}
	s.SetNameMode(secure, dnstest.ServFail)
	d, err = c.discover(context.Background(), secure, plain)
	if err != nil {
		t.Fatalf("SERVFAIL on %s alone: %v; the plain name answered", secure, err)
	}
	if run.judgeNames(d) {
		t.Error("a failed name was not reported")
	}
	got, err := d.merge(run.lastByName)
	if err != nil || !slices.Equal(got, Normalize(exampleEndpoints)) {
		t.Errorf("with %s failing: %v, %v; want its last good member kept with the others", secure, got, err)
	}

	s.SetNameMode(plain, dnstest.ServFail)
	if _, err := c.discover(context.Background(), secure, plain); err == nil {
		t.Error("both names failing is no error")
	}
}

func TestTargetsResolvedThroughTheSystemResolver(t *testing.T) {
	// "localhost" is listed in /etc/hosts and unknown to the test server: only Go's own resolver,
	// which reads /etc/hosts first, finds it.
	s := dnstest.Start(t)
	s.SetZone("_etcd-client._tcp.example.com. 30 IN SRV 0 0 2379 localhost.")
	secure, plain := SRVNames("example.com", "")
	c := newTestDNSClient(t, s)
	c.systemTargets = true
	d, err := c.discover(context.Background(), secure, plain)
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.merge(nil)
	if err != nil || !slices.ContainsFunc(got, func(e Endpoint) bool { return e.Host == "127.0.0.1" && e.Port == 2379 }) {
		t.Fatalf("endpoints = %v, %v; want localhost's 127.0.0.1 from /etc/hosts", got, err)
	}
	if d.ttl != 30*time.Second {
		t.Errorf("ttl = %s; want the SRV record's 30s", d.ttl)
	}
	if n := s.Queries("localhost.", dns.TypeA); n != 0 {
		t.Errorf("the DNS server was asked for localhost %d times; /etc/hosts answers it", n)
	}
}
