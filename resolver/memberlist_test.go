package resolver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/etcd-gateway/etcd-gateway/internal/testcert"
	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
	"github.com/etcd-gateway/etcd-gateway/member"
)

// fakeView is a ClusterView whose healthy members the test sets.
type fakeView struct {
	mu      sync.Mutex
	healthy []Endpoint
	down    []Endpoint
	changed chan struct{}
}

func (v *fakeView) Healthy() ([]Endpoint, <-chan struct{}) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.healthy), v.changed
}

func (v *fakeView) Down() []Endpoint {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.down)
}

// turnDown makes ep down and signals the change.
func (v *fakeView) turnDown(ep Endpoint) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.down = append(v.down, ep)
	close(v.changed)
	v.changed = make(chan struct{})
}

func (v *fakeView) Scheme(Endpoint) member.Scheme { return member.SchemePlain }

// jsonGateway serves POST /v3/cluster/member/list as etcd's JSON gateway does, with the
// answer the test sets, and records the bodies it was sent.
type jsonGateway struct {
	mu     sync.Mutex
	status int
	answer string
	bodies []string
	ep     Endpoint
}

func serveJSONGateway(t *testing.T) *jsonGateway {
	g := &jsonGateway{status: http.StatusOK}
	ln := testnet.LocalListener(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		g.mu.Lock()
		g.bodies = append(g.bodies, string(body))
		status, answer := g.status, g.answer
		g.mu.Unlock()
		if r.Method != http.MethodPost || r.URL.Path != "/v3/cluster/member/list" {
			status, answer = http.StatusNotFound, "404 page not found"
		}
		w.WriteHeader(status)
		io.WriteString(w, answer)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().(*net.TCPAddr)
	g.ep = Endpoint{Host: addr.IP.String(), Port: uint16(addr.Port)}
	return g
}

// sent returns the bodies of the requests so far.
func (g *jsonGateway) sent() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.bodies)
}

func (g *jsonGateway) set(status int, answer string) {
	g.mu.Lock()
	g.status, g.answer = status, answer
	g.mu.Unlock()
}

// memberJSON is one member as etcd's JSON gateway writes it: proto names, the ID as a string,
// false and empty fields left out.
func memberJSON(id uint64, name string, learner bool, urls ...string) string {
	var fields []string
	fields = append(fields, fmt.Sprintf(`"ID":"%d"`, id))
	if name != "" {
		fields = append(fields, fmt.Sprintf(`"name":%q`, name))
	}
	if len(urls) > 0 {
		fields = append(fields, fmt.Sprintf(`"clientURLs":["%s"]`, strings.Join(urls, `","`)))
	}
	if learner {
		fields = append(fields, `"isLearner":true`)
	}
	return "{" + strings.Join(fields, ",") + "}"
}

func listJSON(members ...string) string {
	return `{"header":{"cluster_id":"1","member_id":"2","raft_term":"3"},"members":[` + strings.Join(members, ",") + `]}`
}

type memberListFixture struct {
	ml    *MemberList
	seeds *Updates
	out   *Updates
	view  *fakeView
	logs  *observer.ObservedLogs
}

func startMemberList(t *testing.T, asked *jsonGateway, seeds ...Endpoint) *memberListFixture {
	return startMemberListEvery(t, 100*time.Millisecond, asked, seeds...)
}

func startMemberListEvery(t *testing.T, interval time.Duration, asked *jsonGateway, seeds ...Endpoint) *memberListFixture {
	t.Helper()
	guard, err := NewLoopGuard(context.Background(), "127.0.0.1:23790")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	f := &memberListFixture{seeds: NewUpdates(), out: NewUpdates(), logs: logs,
		view: &fakeView{healthy: []Endpoint{asked.ep}, changed: make(chan struct{})}}
	f.ml = NewMemberList(MemberListConfig{Interval: interval, Timeout: time.Second, Seeds: f.seeds, Out: f.out,
		Cluster: f.view, Trust: member.Policy{}, Guard: guard, Log: zap.New(core)})
	f.seeds.Publish(seeds)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.ml.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Serve = %v", err)
		}
	})
	return f
}

// waitSet waits until the published set is want.
func (f *memberListFixture) waitSet(t *testing.T, want []Endpoint) {
	t.Helper()
	if !testnet.Eventually(defaultTestTimeout, func() bool {
		got, _ := f.out.Latest()
		return slices.Equal(got, want)
	}) {
		got, _ := f.out.Latest()
		t.Fatalf("published %v, want %v", got, want)
	}
}

func TestMemberListPublishesStartedVotersThatAnswer(t *testing.T) {
	g := serveJSONGateway(t)
	other := testnet.LocalListener(t) // a second member's client port
	otherAddr := other.Addr().String()
	unreachable := testnet.ClosedPort(t)
	g.set(http.StatusOK, listJSON(
		memberJSON(1, "m0", false, "http://"+g.ep.Addr()),
		memberJSON(2, "m1", false, "unix:///run/etcd.sock", "http://"+unreachable, "http://"+otherAddr),
		memberJSON(3, "learner", true, "http://127.0.0.1:1"),
		memberJSON(4, "", false), // added, not started
	))
	f := startMemberList(t, g, g.ep)
	f.waitSet(t, []Endpoint{g.ep}) // the seeds first
	second, _ := ParseEndpoint(otherAddr)
	f.waitSet(t, Normalize([]Endpoint{g.ep, second}))
	if mb, ok := f.ml.Member(second.HostPort()); !ok || mb.Name != "m1" || mb.ID != 2 {
		t.Errorf("member at %s = %+v, %v; want m1, ID 2", second, mb, ok)
	}
	if sent := g.sent(); sent[0] != `{"linearizable":true}` {
		t.Errorf("the first request sent %q; want a linearizable list", sent[0])
	}
}

func TestMemberListRefusals(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status int
		answer func(g *jsonGateway) string
		want   string
	}{
		{"empty list", http.StatusOK, func(*jsonGateway) string { return listJSON() }, "empty"},
		{"no member parses", http.StatusOK, func(*jsonGateway) string { return listJSON(`{"ID":"x","name":"m0"}`) }, "could be parsed"},
		{"the gateway's own address", http.StatusOK, func(g *jsonGateway) string {
			return listJSON(memberJSON(1, "m0", false, "http://"+g.ep.Addr()), memberJSON(2, "m1", false, "http://127.0.0.1:23790"))
		}, "listen address"},
		{"new members unreachable from here", http.StatusOK, func(*jsonGateway) string {
			return listJSON(memberJSON(1, "m9", false, "http://"+testnet.ClosedPort(t)))
		}, "answers from this host"},
		{"no JSON gateway", http.StatusNotFound, func(*jsonGateway) string { return "404 page not found" }, "no JSON gateway"},
		{"auth required", http.StatusUnauthorized, func(*jsonGateway) string {
			return `{"error":"etcdserver: user name is empty","code":16}`
		}, "requires authentication"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := serveJSONGateway(t)
			g.set(tt.status, tt.answer(g))
			f := startMemberList(t, g, g.ep)
			if !testnet.Eventually(defaultTestTimeout, func() bool { _, failed := f.ml.Syncs(); return failed >= 3 }) {
				t.Fatal("the list was not asked for three times")
			}
			if got, _ := f.out.Latest(); !slices.Equal(got, []Endpoint{g.ep}) {
				t.Errorf("published %v; want the seeds kept", got)
			}
			warns := f.logs.FilterLevelExact(zap.WarnLevel).All()
			if len(warns) != 1 || !strings.Contains(fmt.Sprint(warns[0].ContextMap()["error"]), tt.want) {
				t.Errorf("warnings %v; want one about %q", warns, tt.want)
			}
		})
	}
}

// etcd 3.4 refuses the linearizable field; the list is asked for again without it.
func TestMemberListWithoutLinearizable(t *testing.T) {
	g := serveJSONGateway(t)
	ok := listJSON(memberJSON(1, "m0", false, "http://"+g.ep.Addr()))
	g.set(http.StatusBadRequest, `{"error":"unknown field \"linearizable\""}`)
	list, err := fetchMemberList(context.Background(), (&net.Dialer{}).DialContext, g.ep, member.SchemePlain, member.TLS{}, time.Second)
	if err == nil {
		t.Fatalf("a 400 to both bodies gave %+v", list)
	}
	if sent := g.sent(); len(sent) != 2 || sent[1] != `{}` {
		t.Fatalf("bodies sent: %q; want the list asked for again without linearizable", sent)
	}
	g.set(http.StatusOK, ok)
	if list, err := fetchMemberList(context.Background(), (&net.Dialer{}).DialContext, g.ep, member.SchemePlain, member.TLS{}, time.Second); err != nil || len(list.Members) != 1 {
		t.Fatalf("list = %+v, %v", list, err)
	}
}

// With no member answering for three intervals the seeds are served again, with the set.
func TestMemberListFallsBackToTheSeeds(t *testing.T) {
	g := serveJSONGateway(t)
	other := testnet.LocalListener(t)
	second, _ := ParseEndpoint(other.Addr().String())
	g.set(http.StatusOK, listJSON(memberJSON(2, "m1", false, "http://"+second.Addr())))
	f := startMemberList(t, g, g.ep)
	f.waitSet(t, []Endpoint{second}) // the list replaced the seed
	f.view.mu.Lock()
	f.view.healthy = nil // nobody to ask
	f.view.mu.Unlock()
	f.waitSet(t, Normalize([]Endpoint{g.ep, second}))
	if n := f.logs.FilterMessageSnippet("trying the seeds again").Len(); n != 1 {
		t.Errorf("%d lines say the seeds are tried again, want 1", n)
	}
}

// A member turning down makes the list be read at once, not at the next interval.
func TestMemberListReadAtOnceWhenAMemberTurnsDown(t *testing.T) {
	g := serveJSONGateway(t)
	other := testnet.LocalListener(t)
	second, _ := ParseEndpoint(other.Addr().String())
	g.set(http.StatusOK, listJSON(memberJSON(1, "m0", false, "http://"+g.ep.Addr())))
	f := startMemberListEvery(t, time.Hour, g, g.ep)
	if !testnet.Eventually(defaultTestTimeout, func() bool { total, _ := f.ml.Syncs(); return total == 1 }) {
		t.Fatal("the first list was never read")
	}
	g.set(http.StatusOK, listJSON(memberJSON(1, "m0", false, "http://"+g.ep.Addr()), memberJSON(2, "m1", false, "http://"+second.Addr())))
	f.view.turnDown(second) // any member: a change of the cluster is likely
	f.waitSet(t, Normalize([]Endpoint{g.ep, second}))
}

// A member listed with an https client URL is greeted in TLS when the list is checked for
// members that answer from this host: a connection closed before any handshake makes etcd 3.4
// log "rejected connection" at WARN.
func TestMemberListGreetsTLSMembersInTLS(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	cert := ca.Issue(t, nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	ln := testnet.LocalListener(t)
	var bare, greeted atomic.Int64
	var wg sync.WaitGroup
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(defaultTestTimeout))
				tc := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{cert}})
				if err := tc.Handshake(); errors.Is(err, io.EOF) {
					bare.Add(1)
					return
				}
				greeted.Add(1)
				io.Copy(io.Discard, tc)
			}()
		}
	}()
	t.Cleanup(wg.Wait)

	g := serveJSONGateway(t)
	g.set(http.StatusOK, listJSON(
		memberJSON(1, "m0", false, "http://"+g.ep.Addr()),
		memberJSON(2, "m1", false, "https://"+ln.Addr().String()),
	))
	f := startMemberList(t, g, g.ep)
	second, _ := ParseEndpoint(ln.Addr().String())
	f.waitSet(t, Normalize([]Endpoint{g.ep, second}))
	// The member's side of the handshake may end a moment after the gateway's.
	testnet.Eventually(defaultTestTimeout, func() bool { return greeted.Load() > 0 })
	if bare.Load() != 0 || greeted.Load() == 0 {
		t.Errorf("the TLS member got %d connections closed before a handshake and %d greeted in TLS; want 0 and at least 1", bare.Load(), greeted.Load())
	}
}
