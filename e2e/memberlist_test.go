package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// reconfigure runs a membership change. It is tried again while etcd refuses it for a reason
// that passes (a member connected for less than a few seconds, an election after the leader
// left, a request that timed out on a loaded machine), for up to 30 s; done reports whether an
// error says an earlier try went through after all.
func reconfigure(t *testing.T, what string, change func(ctx context.Context) error, done func(error) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := change(ctx)
		cancel()
		if err == nil || done(err) {
			return
		}
		passing := false
		for _, reason := range []string{"unhealthy cluster", "leader changed", "deadline exceeded", "timed out", "no leader"} {
			passing = passing || strings.Contains(err.Error(), reason)
		}
		if !passing || time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// add adds a member named name to c, a learner when learner, and starts it. A voting member
// joins c.members once it serves.
func (c *cluster) add(t *testing.T, name string, learner bool) *member {
	t.Helper()
	admin := newTLSClient(t, c.clientTLS, endpointsOfList(c.members)...)
	m := &member{name: name, peer: fmt.Sprintf("http://127.0.0.1:%d", freePort(t))}
	reconfigure(t, "add "+name, func(ctx context.Context) error {
		var err error
		if learner {
			_, err = admin.MemberAddAsLearner(ctx, []string{m.peer})
		} else {
			_, err = admin.MemberAdd(ctx, []string{m.peer})
		}
		return err
	}, func(err error) bool { return strings.Contains(err.Error(), "Peer URLs already exists") })
	var peers []string
	for _, mm := range append(slices.Clone(c.members), m) {
		peers = append(peers, mm.name+"="+mm.peer)
	}
	c.run(t, m, strings.Join(peers, ","), "existing")
	if !learner {
		c.members = append(c.members, m)
		c.waitReady(t, []*member{m})
	}
	return m
}

// remove removes m from c's membership and stops it.
func (c *cluster) remove(t *testing.T, m *member) {
	t.Helper()
	rest := slices.DeleteFunc(slices.Clone(c.members), func(mm *member) bool { return mm == m })
	admin := newTLSClient(t, c.clientTLS, endpointsOfList(rest)...)
	id := memberID(t, c, m)
	reconfigure(t, "remove "+m.name, func(ctx context.Context) error {
		_, err := admin.MemberRemove(ctx, id)
		return err
	}, func(err error) bool { return strings.Contains(err.Error(), "member not found") })
	m.proc.kill()
	c.members = rest
	c.waitReady(t, rest) // the next change waits for the election a leader's leaving starts
}

// namesInStatus returns the member names /status gives, and whether every endpoint came from
// the member list.
func namesInStatus(sc statusClient) ([]string, bool) {
	var names []string
	all := true
	for _, ep := range sc.status().Endpoints {
		names = append(names, ep.MemberName)
		all = all && ep.Source == "member-list"
	}
	slices.Sort(names)
	return names, all
}

// Started knowing one member of three, the gateway follows the member list: connections reach
// all three within 3 s; a member added and started gets connections within the interval and
// 2 s; a learner never does; a removed member leaves the set. On plain members, and on TLS
// members, whose list is read over HTTPS.
func TestMemberListIsFollowed(t *testing.T) {
	t.Parallel()
	t.Run("plain", func(t *testing.T) {
		t.Parallel()
		testMemberListIsFollowed(t, launchCluster(t, 3, &cluster{scheme: "http", flags: func(string) []string { return nil }}))
	})
	t.Run("tls", func(t *testing.T) {
		t.Parallel()
		tc := launchLoggingTLSCluster(t, 3, false)
		testMemberListIsFollowed(t, tc.cluster)
		if w := connectionWarnings(tc.memberLog(nil)); len(w) != 0 {
			t.Errorf("the members logged %d warnings about connections: %q", len(w), w)
		}
	})
}

func testMemberListIsFollowed(t *testing.T, c *cluster) {
	gw, sc := startGatewayWithStatus(t, "--endpoints="+c.members[0].client, "--endpoints-auto-sync-interval=1s")
	began := time.Now()
	if !eventually(defaultTestTimeout, func() bool { return len(membersThroughGateway(t, gw.addr, c.clientTLS, 9)) == 3 }) {
		t.Fatalf("connections never reached all three members: %+v", sc.status())
	}
	took := time.Since(began)
	t.Logf("connections reached all three members %s after the start", took)
	if took > 3*time.Second {
		t.Errorf("connections reached all three members only after %s; want within 3 s", took)
	}
	if names, all := namesInStatus(sc); !all || !slices.Equal(names, []string{"m0", "m1", "m2"}) {
		t.Errorf("/status gives members %v (all from the member list: %v); want m0, m1, m2 from the member list", names, all)
	}
	if syncs, _ := sum(sc.metrics(), "etcd_gateway_member_list_syncs_total", nil); syncs < 1 {
		t.Errorf("member_list_syncs_total = %v", syncs)
	}

	added := c.add(t, "m3", false)
	addedID := memberID(t, c, added)
	start := time.Now()
	if !eventually(defaultTestTimeout, func() bool { return membersThroughGateway(t, gw.addr, c.clientTLS, 8)[addedID] > 0 }) {
		t.Fatalf("the added member never got a connection: %+v", sc.status())
	}
	t.Logf("the added member got connections %s after it served", time.Since(start))
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the added member got connections only after %s; want within the interval and 2 s", took)
	}
	if !strings.Contains(gw.proc.out.String(), `"added":["`+added.client+`"]`) {
		t.Errorf("no log line names the added member:\n%s", gw.proc.out)
	}

	learner := c.add(t, "learner", true)
	waitSyncs(t, sc, 3)
	for _, ep := range sc.status().Endpoints {
		if ep.Endpoint == learner.client {
			t.Errorf("the learner is in the endpoint set: %+v", ep)
		}
	}

	c.remove(t, added)
	if !eventually(defaultTestTimeout, func() bool {
		names, _ := namesInStatus(sc)
		return slices.Equal(names, []string{"m0", "m1", "m2"})
	}) {
		t.Fatalf("the removed member stayed in the set: %+v", sc.status())
	}
	if seen := membersThroughGateway(t, gw.addr, c.clientTLS, 12); seen[addedID] > 0 {
		t.Errorf("the removed member got connections: %v", seen)
	}

	out, code := runCheck(t, "--endpoints="+c.members[0].client, "--endpoints-auto-sync-interval=1s", "--log-level=error")
	for _, name := range []string{"m0", "m1", "m2", "learner (not followed)"} {
		if code != 0 || !strings.Contains(out, name) {
			t.Errorf("check --endpoints-auto-sync-interval does not print %q of the member list (exit %d):\n%s", name, code, out)
		}
	}
}

// waitSyncs waits until the gateway has read the member list n more times.
func waitSyncs(t *testing.T, sc statusClient, n float64) {
	t.Helper()
	from, _ := sum(sc.metrics(), "etcd_gateway_member_list_syncs_total", nil)
	if !eventually(defaultTestTimeout, func() bool {
		now, _ := sum(sc.metrics(), "etcd_gateway_member_list_syncs_total", nil)
		return now >= from+n
	}) {
		t.Fatalf("the member list was not read %v more times", n)
	}
}

// All three original members are replaced one at a time (the new one added, then the old one
// removed) while 8 clients run, and the gateway knows only the original three: afterwards it
// serves from the three new members, and every request succeeded within 3 tries, 1 s apart.
func TestMemberListRollingReplacement(t *testing.T) {
	t.Parallel()
	c := launchCluster(t, 3, &cluster{scheme: "http", flags: func(string) []string { return nil }})
	originals := slices.Clone(c.members)
	gw, sc := startGatewayWithStatus(t, "--endpoints="+endpointsOf(c.members), "--endpoints-auto-sync-interval=1s")
	waitSyncs(t, sc, 1)

	var requests, failures atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 8 {
		cl, err := clientv3.New(clientv3.Config{Endpoints: []string{gw.addr}, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				requests.Add(1)
				var err error
				for try := range 3 {
					if try > 0 {
						time.Sleep(time.Second)
					}
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					_, err = cl.Put(ctx, fmt.Sprintf("rolling-%d", i), fmt.Sprint(n))
					cancel()
					if err == nil {
						break
					}
				}
				if err != nil {
					failures.Add(1)
					t.Logf("client %d: a request failed 3 tries: %v", i, err)
				}
			}
		}()
	}

	var fresh []string
	for i, old := range originals {
		m := c.add(t, fmt.Sprintf("n%d", i), false)
		fresh = append(fresh, m.name)
		c.remove(t, old)
	}
	if !eventually(defaultTestTimeout, func() bool {
		names, all := namesInStatus(sc)
		return all && slices.Equal(names, fresh)
	}) {
		t.Fatalf("after the replacement the gateway serves %+v; want the new members %v", sc.status(), fresh)
	}
	seen := membersThroughGateway(t, gw.addr, nil, 15)
	for _, m := range c.members {
		delete(seen, memberID(t, c, m))
	}
	if len(seen) > 0 {
		t.Errorf("connections reached members that are not the new three: %v", seen)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d requests during the rolling replacement, %d failed 3 tries", requests.Load(), failures.Load())
	if failures.Load() > 0 {
		t.Errorf("%d of %d requests failed 3 tries, 1 s apart", failures.Load(), requests.Load())
	}
}

// A member list that holds the gateway's own listen address is refused, with one log line,
// and the gateway keeps serving the set it has.
func TestMemberListHoldingTheGatewayIsRefused(t *testing.T) {
	t.Parallel()
	gwAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	m1Client := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c := launchCluster(t, 3, &cluster{scheme: "http", clientAddrs: map[string]string{"m1": m1Client},
		flags: func(name string) []string {
			if name != "m1" {
				return nil
			}
			return []string{"--advertise-client-urls", "http://" + m1Client + ",http://" + gwAddr}
		}})
	gw, sc := startGatewayOnWithStatus(t, gwAddr, "--endpoints="+endpointsOf(c.members), "--endpoints-auto-sync-interval=1s")
	if !waitLog(gw, "member list refused", defaultTestTimeout) {
		t.Fatalf("a list holding the gateway's address was not refused:\n%s", gw.proc.out)
	}
	waitSyncs(t, sc, 2)
	if n := strings.Count(gw.proc.out.String(), "member list refused"); n != 1 {
		t.Errorf("the refusal was logged %d times, want once", n)
	}
	if !strings.Contains(gw.proc.out.String(), "listen address") {
		t.Errorf("the refusal does not say why:\n%s", gw.proc.out)
	}
	for _, ep := range sc.status().Endpoints {
		if ep.Source != "endpoints" {
			t.Errorf("endpoint %s comes from %s; want the starting endpoints kept", ep.Endpoint, ep.Source)
		}
	}
	if err := oneRequest(gw.addr, "refused-list"); err != nil {
		t.Errorf("a request through the gateway: %v", err)
	}
}
