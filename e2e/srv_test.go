package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/internal/dnstest"
	"github.com/etcd-gateway/etcd-gateway/internal/testcert"
)

// srvZone lists members as SRV records of service (e.g. "_etcd-client") under example.com,
// weight 0 as in etcd's documented example, each target with an A record.
func srvZone(members []*member, service string, ttl int) []string {
	var zone []string
	for _, m := range members {
		_, port, _ := net.SplitHostPort(m.client)
		target := m.name + ".example.com."
		zone = append(zone,
			fmt.Sprintf("%s._tcp.example.com. %d IN SRV 0 0 %s %s", service, ttl, port, target),
			fmt.Sprintf("%s %d IN A 127.0.0.1", target, ttl))
	}
	return zone
}

// A cluster found only through plain SRV records, as in etcd's documented example; then a
// member is replaced by a new one on new ports and the zone updated: clients through the
// gateway keep working, and new connections reach the new member, with no restart.
func TestSRVDiscoveryFollowsMemberReplacement(t *testing.T) {
	t.Parallel()
	c := launchCluster(t, 3, &cluster{scheme: "http", flags: func(string) []string { return nil }})
	zone := dnstest.Start(t)
	zone.SetZone(srvZone(c.members, "_etcd-client", 1)...)
	gw := startGatewayArgs(t, "--discovery-srv=example.com", "--dns-server="+zone.Addr())

	client := newClient(t, gw.addr)
	if _, err := client.Put(ctxT(t), "srv", "works"); err != nil {
		t.Fatalf("put through an SRV-discovered cluster: %v", err)
	}
	seen := membersThroughGateway(t, gw.addr, nil, 30)
	if len(seen) != 3 {
		t.Fatalf("30 connections reached %d members, want all 3: %v", len(seen), seen)
	}

	// Clients keep working while the member is replaced.
	var failures, requests atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				requests.Add(1)
				if err := oneRequest(gw.addr, fmt.Sprintf("replace-%d-%d", w, i)); err != nil {
					failures.Add(1)
					t.Logf("request during the replacement failed: %v", err)
				}
			}
		}()
	}
	victim := (leader(t, c.members) + 1) % 3 // a follower: no election
	oldID := memberID(t, c, c.members[victim])
	fresh := c.replace(t, victim, "m3")
	newID := memberID(t, c, fresh)
	zone.SetZone(srvZone(c.members, "_etcd-client", 1)...)

	deadline := time.Now().Add(defaultTestTimeout)
	for {
		seen = membersThroughGateway(t, gw.addr, nil, 15)
		if seen[newID] > 0 && seen[oldID] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway never moved to the new member: %v (old %x, new %x)", seen, oldID, newID)
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d requests during the replacement, %d failed", requests.Load(), failures.Load())
	if failures.Load() > 0 {
		t.Errorf("%d of %d requests failed during the replacement", failures.Load(), requests.Load())
	}
	if !strings.Contains(gw.proc.out.String(), "discovered endpoint set") {
		t.Error("no log line for the new endpoint set")
	}
}

// TLS members found through _etcd-client-ssl records: those whose certificate verifies against
// --trusted-ca-file serve clients that speak TLS end to end through the gateway; a member
// whose certificate another CA signed is left out.
func TestSRVDiscoveryTLSMembers(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t, "cluster CA")
	rogue := testcert.NewCA(t, "rogue CA")
	dir := t.TempDir()
	type files struct{ ca, cert, key string }
	certs := map[string]files{}
	for name, signer := range map[string]*testcert.CA{"m0": ca, "m1": ca, "m2": rogue} {
		caFile, cert, key := signer.WriteFiles(t, dir, name, []string{"example.com"}, []net.IP{net.IPv4(127, 0, 0, 1)})
		certs[name] = files{caFile, cert, key}
	}
	both := x509.NewCertPool()
	both.AppendCertsFromPEM(ca.PEM())
	both.AppendCertsFromPEM(rogue.PEM())
	c := launchCluster(t, 3, &cluster{
		scheme: "https",
		flags: func(name string) []string {
			return []string{"--cert-file", certs[name].cert, "--key-file", certs[name].key}
		},
		clientTLS: &tls.Config{RootCAs: both, ServerName: "example.com"},
	})
	zone := dnstest.Start(t)
	zone.SetZone(srvZone(c.members, "_etcd-client-ssl", 1)...)
	gw := startGatewayArgs(t, "--discovery-srv=example.com", "--dns-server="+zone.Addr(), "--trusted-ca-file="+certs["m0"].ca)

	clientTLS := &tls.Config{RootCAs: ca.Pool(), ServerName: "example.com"}
	client := newTLSClient(t, clientTLS, gw.addr)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	if _, err := client.Put(ctx, "tls", "end to end"); err != nil {
		t.Fatalf("put over TLS through the gateway: %v", err)
	}
	if resp, err := client.Get(ctx, "tls"); err != nil || string(resp.Kvs[0].Value) != "end to end" {
		t.Fatalf("get over TLS through the gateway: %v, %v", resp, err)
	}
	rogueID := memberID(t, c, c.members[2])
	seen := membersThroughGateway(t, gw.addr, clientTLS, 30)
	if seen[rogueID] > 0 || len(seen) != 2 {
		t.Fatalf("connections reached %v; want the two verified members only (rogue %x)", seen, rogueID)
	}
	out := gw.proc.out.String()
	if !strings.Contains(out, "member left out: it did not prove it holds a TLS certificate that verifies") || !strings.Contains(out, "m2.example.com") {
		t.Errorf("no log line says why m2 was left out:\n%s", out)
	}
}

// /metrics answers 200 with one series per member address through SRV changes that list one
// address in several ways: a weight and priority change, the same address under both SRV
// names, and two targets on one IP.
func TestMetricsThroughSRVChanges(t *testing.T) {
	t.Parallel()
	c := launchCluster(t, 3, &cluster{scheme: "http", flags: func(string) []string { return nil }})
	zone := dnstest.Start(t)
	base := srvZone(c.members, "_etcd-client", 1)
	zone.SetZone(base...)
	gw, sc := startGatewayWithStatus(t, "--discovery-srv=example.com", "--dns-server="+zone.Addr(), "--insecure-discovery")
	client := newClient(t, gw.addr)
	if _, err := client.Put(ctxT(t), "srv-metrics", "v"); err != nil {
		t.Fatal(err)
	}
	_, port0, _ := net.SplitHostPort(c.members[0].client)
	m0 := c.members[0].client
	steps := []struct {
		name   string
		extra  []string
		target string // what /status must show for m0 once the change is seen
		weight int
	}{
		{"weight and priority change", []string{fmt.Sprintf("_etcd-client._tcp.example.com. 1 IN SRV 0 10 %s m0.example.com.", port0)}, "m0.example.com", 10},
		{"same address under both SRV names", []string{
			fmt.Sprintf("_etcd-client-ssl._tcp.example.com. 1 IN SRV 5 1 %s secure.example.com.", port0),
			"secure.example.com. 1 IN A 127.0.0.1"}, "secure.example.com", 1},
		{"two targets on one IP", []string{
			fmt.Sprintf("_etcd-client._tcp.example.com. 1 IN SRV 0 20 %s alias.example.com.", port0),
			"alias.example.com. 1 IN A 127.0.0.1"}, "alias.example.com", 20},
	}
	for _, step := range steps {
		var zoneNow []string
		for _, rr := range base {
			if step.name == "weight and priority change" && strings.Contains(rr, "SRV") && strings.HasSuffix(rr, "m0.example.com.") {
				continue // replaced by the heavier record
			}
			zoneNow = append(zoneNow, rr)
		}
		zone.SetZone(append(zoneNow, step.extra...)...)
		seen := eventually(defaultTestTimeout, func() bool {
			for _, ep := range sc.status().Endpoints {
				if ep.Endpoint == m0 && ep.Target == step.target && ep.Weight != nil && *ep.Weight == step.weight {
					return true
				}
			}
			return false
		})
		if !seen {
			t.Fatalf("%s: the gateway never showed the change: %+v", step.name, sc.status())
		}
		mfs := sc.metrics() // fails unless 200 and parseable
		for _, name := range []string{"etcd_gateway_endpoint_health", "etcd_gateway_endpoint_connections_total", "etcd_gateway_endpoint_dial_duration_seconds"} {
			labels := map[string]int{}
			for _, m := range mfs[name].GetMetric() {
				var key []string
				for _, l := range m.GetLabel() {
					key = append(key, l.GetName()+"="+l.GetValue())
				}
				labels[strings.Join(key, ",")]++
			}
			for key, n := range labels {
				if n != 1 {
					t.Errorf("%s: %d series of %s{%s}", step.name, n, name, key)
				}
			}
		}
		if n := len(mfs["etcd_gateway_endpoint_health"].GetMetric()); n != 9 {
			t.Errorf("%s: %d health series, want 3 members × 3 states", step.name, n)
		}
		if _, err := client.Put(ctxT(t), "srv-metrics", step.name); err != nil {
			t.Errorf("%s: put through the gateway: %v", step.name, err)
		}
	}
}
