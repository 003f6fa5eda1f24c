package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// The etcd versions users run besides the one of the full suite, each on one real 3-member
// cluster, plain and then TLS: the gateway finds the members' scheme and follows their member
// list; it finds a healthy member, a learner, a member killed with kill -9 and a survivor
// without quorum; and the members log no warning about it.
func TestVersionMatrix(t *testing.T) {
	t.Parallel()
	for _, r := range matrix {
		t.Run(r.version, func(t *testing.T) {
			t.Parallel()
			if _, err := os.Stat(r.bin); err != nil {
				t.Fatalf("etcd %s is not there (%v); run make etcd-3.4, as make test does", r.version, err)
			}
			t.Run("plain", func(t *testing.T) {
				c := launchCluster(t, 3, &cluster{release: r, scheme: "http", flags: func(string) []string { return []string{"--log-level", "info"} }})
				smokeVersion(t, &tlsCluster{cluster: c})
			})
			t.Run("tls", func(t *testing.T) { smokeVersion(t, launchTLSClusterOf(t, r, 3, false)) })
		})
	}
}

// smokeVersion runs the version matrix's checks on c, a fresh cluster of three members.
func smokeVersion(t *testing.T, c *tlsCluster) {
	before := c.logOffsets()
	gw, sc := startGatewayWithStatus(t, "--endpoints="+c.members[0].client, "--endpoints-auto-sync-interval=1s", "--health-interval=500ms")
	endpointOf := func(m *member) (state, scheme, lastReason string) {
		for _, ep := range sc.status().Endpoints {
			if ep.Endpoint == m.client {
				if ep.LastProbe != nil {
					lastReason = ep.LastProbe.Reason
				}
				return ep.State, ep.Scheme, lastReason
			}
		}
		return "", "", ""
	}
	if !eventually(defaultTestTimeout, func() bool {
		names, all := namesInStatus(sc)
		if !all || !slices.Equal(names, []string{"m0", "m1", "m2"}) {
			return false
		}
		for _, m := range c.members {
			if state, scheme, _ := endpointOf(m); state != "healthy" || scheme != c.scheme {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the member list was not followed to three healthy %s members: %+v", c.scheme, sc.status())
	}

	client := newTLSClient(t, c.clientTLS, gw.addr)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	if _, err := client.Put(ctx, "version", c.release.version); err != nil {
		t.Fatalf("put through the gateway: %v", err)
	}
	if resp, err := client.Get(ctx, "version"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get through the gateway: %v, %v", resp, err)
	}

	learner := c.add(t, "learner", true)
	waitSyncs(t, sc, 2)
	if state, _, _ := endpointOf(learner); state != "" {
		t.Errorf("the learner followed from the member list is in the endpoint set, %s", state)
	}
	_, listed := startGatewayWithStatus(t, "--endpoints="+learner.client+","+c.members[0].client, "--health-interval=500ms")
	if !eventually(defaultTestTimeout, func() bool {
		for _, ep := range listed.status().Endpoints {
			if ep.Endpoint == learner.client {
				return ep.State == "down" && ep.LastProbe != nil && strings.Contains(ep.LastProbe.Reason, "learner")
			}
		}
		return false
	}) {
		t.Errorf("a listed learner was never down as a learner: %+v", listed.status())
	}

	leader := c.leader(t)
	killed := c.members[(leader+1)%3]
	killed.proc.kill()
	if !eventually(defaultTestTimeout, func() bool { state, _, _ := endpointOf(killed); return state == "down" }) {
		t.Errorf("the member killed with kill -9 was never down: %+v", sc.status())
	}
	c.members[leader].proc.kill()
	survivor := c.members[(leader+2)%3]
	if !eventually(defaultTestTimeout, func() bool { state, _, _ := endpointOf(survivor); return state == "degraded" }) {
		t.Errorf("the survivor without quorum was never degraded: %+v", sc.status())
	}
	_, _, why := endpointOf(survivor)
	t.Logf("etcd %s over %s: the survivor without quorum is degraded: %s", c.release.version, c.scheme, why)

	lines := c.memberLog(before)
	if n := rejectedConnections(lines); n != 0 {
		t.Errorf("the members logged %d rejected connections", n)
	}
	if w := connectionWarnings(lines); len(w) != 0 {
		t.Errorf("the members logged %d warnings about connections: %q", len(w), w)
	}
	if !strings.Contains(fmt.Sprint(lines), `"level":"info"`) {
		t.Errorf("the members logged no JSON line at info: their log is not what the counts read")
	}
}
