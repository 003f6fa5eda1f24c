package resolver

import (
	"slices"
	"strings"
	"testing"
)

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		give    string
		want    Endpoint
		wantErr string
	}{
		{give: "127.0.0.1:2379", want: Endpoint{Host: "127.0.0.1", Port: 2379}},
		{give: " etcd-1.example.com:2379 ", want: Endpoint{Host: "etcd-1.example.com", Port: 2379}},
		{give: "[::1]:2379", want: Endpoint{Host: "::1", Port: 2379}},
		{give: "http://10.0.1.10:2379", want: Endpoint{Host: "10.0.1.10", Port: 2379}},
		{give: "HTTP://10.0.1.10:2379/", want: Endpoint{Host: "10.0.1.10", Port: 2379}},
		{give: "https://10.0.1.10:2379", wantErr: "does not terminate TLS"},
		{give: "unix:///tmp/x", wantErr: "unknown scheme"},
		{give: "10.0.1.10", want: Endpoint{Host: "10.0.1.10", Port: 2379}},
		{give: "infra0.example.com", want: Endpoint{Host: "infra0.example.com", Port: 2379}},
		{give: "http://infra0.example.com/", want: Endpoint{Host: "infra0.example.com", Port: 2379}},
		{give: "::1", want: Endpoint{Host: "::1", Port: 2379}},
		{give: "[::1]", want: Endpoint{Host: "::1", Port: 2379}},
		{give: "fe80::1:2379x", wantErr: "give host:port"},
		{give: "[::1", wantErr: "give host:port"},
		{give: ":2379", wantErr: "has no host"},
		{give: "[ ]:1", wantErr: "has no host"},
		{give: "[\t]:1", wantErr: "has no host"},
		{give: "[a b]:1", wantErr: "contains a space"},
		{give: "[a\x00]:1", wantErr: "control character"},
		{give: "10.0.1.10:0", wantErr: "not a number from 1 to 65535"},
		{give: "10.0.1.10:65536", wantErr: "not a number from 1 to 65535"},
		{give: "10.0.1.10:http", wantErr: "not a number from 1 to 65535"},
		{give: "http://10.0.1.10:2379/v3", wantErr: "without a path"},
		{give: "", wantErr: "empty endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			got, err := ParseEndpoint(tt.give)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseEndpoint(%q) error = %v, want one containing %q", tt.give, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error spans lines: %q", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseEndpoint(%q) = %+v, %v; want %+v", tt.give, got, err, tt.want)
			}
		})
	}
}

func TestPortsDefaulted(t *testing.T) {
	got := PortsDefaulted("infra0.example.com,10.0.1.11:2380,[::1], bad:port:x")
	want := []Endpoint{{Host: "infra0.example.com", Port: 2379}, {Host: "::1", Port: 2379}}
	if !slices.Equal(got, want) {
		t.Fatalf("PortsDefaulted = %v, want %v", got, want)
	}
}

func TestParseEndpointsSortsAndDeduplicates(t *testing.T) {
	got, err := ParseEndpoints("b:2,a:1,,b:2, a:1")
	if err != nil {
		t.Fatal(err)
	}
	want := []Endpoint{{Host: "a", Port: 1}, {Host: "b", Port: 2}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, empty := range []string{"", ",", " , "} {
		if _, err := ParseEndpoints(empty); err == nil {
			t.Errorf("ParseEndpoints(%q) accepted an empty list", empty)
		}
	}
}

func TestEndpointAddrBracketsIPv6(t *testing.T) {
	if got := (Endpoint{Host: "::1", Port: 2379}).Addr(); got != "[::1]:2379" {
		t.Fatalf("Addr = %q", got)
	}
}

func FuzzParseEndpoints(f *testing.F) {
	for _, seed := range []string{"127.0.0.1:2379", "[::1]:2379,http://a:1", "https://x:1", "a", ":", "[::1", "a:1,a:1"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, list string) {
		eps, err := ParseEndpoints(list)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error for %q: %q", list, err)
			}
			return
		}
		if len(eps) == 0 {
			t.Fatalf("no error and no endpoints for %q", list)
		}
		for _, ep := range eps {
			if ep.Port == 0 || strings.TrimSpace(ep.Host) != ep.Host || ep.Host == "" {
				t.Fatalf("accepted %+v from %q", ep, list)
			}
			again, err := ParseEndpoint(ep.Addr())
			if err != nil || again != ep {
				t.Fatalf("%+v does not round-trip through Addr %q: %+v, %v", ep, ep.Addr(), again, err)
			}
		}
		if !slices.IsSortedFunc(eps, compare) || len(slices.Compact(slices.Clone(eps))) != len(eps) {
			t.Fatalf("result of %q not sorted and unique: %v", list, eps)
		}
	})
}

// One endpoint per address: the TLS record wins, then the lowest priority.
func TestNormalizeKeepsOneEndpointPerAddress(t *testing.T) {
	eps := []Endpoint{
		{Host: "10.0.0.1", Port: 2379, Priority: 0, Weight: 5, Target: "a.example.com"},
		{Host: "10.0.0.1", Port: 2379, Priority: 10, Weight: 1, Target: "a.example.com", TLS: true},
		{Host: "10.0.0.1", Port: 2379, Priority: 5, Weight: 1, Target: "b.example.com", TLS: true},
		{Host: "10.0.0.2", Port: 2379, Priority: 20, Weight: 1, Target: "c.example.com"},
		{Host: "10.0.0.2", Port: 2379, Priority: 10, Weight: 1, Target: "d.example.com"},
		{Host: "10.0.0.2", Port: 2380, Priority: 30},
	}
	got := Normalize(eps)
	want := []Endpoint{
		{Host: "10.0.0.1", Port: 2379, Priority: 5, Weight: 1, Target: "b.example.com", TLS: true},
		{Host: "10.0.0.2", Port: 2379, Priority: 10, Weight: 1, Target: "d.example.com"},
		{Host: "10.0.0.2", Port: 2380, Priority: 30},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Normalize = %+v\nwant %+v", got, want)
	}
}
