package resolver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"
)

// seedRetryIntervals is how many intervals without an answer from any known member pass
// before the seeds are tried again.
const seedRetryIntervals = 3

// ClusterView is what following the member list reads of the members' health.
type ClusterView interface {
	// Healthy returns the members healthy now, and a channel closed when a member's state
	// changes.
	Healthy() ([]Endpoint, <-chan struct{})
	// Down returns the members down now.
	Down() []Endpoint
	// Scheme returns what the member serves, as the probes found.
	Scheme(ep Endpoint) member.Scheme
}

// MemberListConfig configures following the member list.
type MemberListConfig struct {
	Interval time.Duration // --endpoints-auto-sync-interval
	Timeout  time.Duration // bound of each request and each reachability check
	Seeds    *Updates      // the starting endpoints, from --endpoints, a file or SRV
	Out      *Updates      // the set the gateway serves
	Cluster  ClusterView   // which members are healthy, and what they speak
	Trust    member.Policy // how members that serve TLS are trusted
	Guard    *LoopGuard    // refuses a list that holds the gateway itself
	Log      *zap.Logger
}

// Member is one member of the list the gateway follows.
type Member struct {
	Name string
	ID   uint64
}

// MemberList is the resolver service that follows the cluster's own member list: it reads
// it from a healthy member every interval, and at once when a member turns down, and
// publishes the client URLs of its started voting members. The seeds (the starting endpoints)
// are served until the first list, and again when no known member has answered for
// seedRetryIntervals intervals.
type MemberList struct {
	cfg             MemberListConfig
	dial            func(ctx context.Context, network, addr string) (net.Conn, error)
	syncs, failures atomic.Uint64
	members         atomic.Pointer[map[HostPort]Member] // the members of the set published from a list
}

var _ suture.Service = (*MemberList)(nil)

// NewMemberList returns the service.
func NewMemberList(cfg MemberListConfig) *MemberList {
	cfg.Log = cfg.Log.Named("member-list")
	d := &net.Dialer{Timeout: cfg.Timeout}
	return &MemberList{cfg: cfg, dial: d.DialContext}
}

// String names the service in supervisor events.
func (m *MemberList) String() string { return "resolver/member-list" }

// Syncs returns how many member lists were asked for, and how many of them failed.
func (m *MemberList) Syncs() (total, failed uint64) { return m.syncs.Load(), m.failures.Load() }

// Member returns the member at hp of the set published from a list, and false for an address
// that came from the seeds.
func (m *MemberList) Member(hp HostPort) (Member, bool) {
	p := m.members.Load()
	if p == nil {
		return Member{}, false
	}
	mb, ok := (*p)[hp]
	return mb, ok
}

// memberListRun is the state of one run of the service.
type memberListRun struct {
	m         *MemberList
	seeds     []Endpoint
	following bool      // the set in use came from a list
	answered  time.Time // when a list last came
	refusal   string    // the last refusal logged, so that it is logged once
	downSeen  map[HostPort]bool
}

// Serve follows the member list until ctx ends.
func (m *MemberList) Serve(ctx context.Context) error {
	run := &memberListRun{m: m, answered: time.Now(), downSeen: map[HostPort]bool{}}
	if set, ok := m.cfg.Out.Latest(); ok && m.members.Load() != nil {
		run.following = len(set) > 0
	}
	next := time.NewTimer(run.wait())
	defer next.Stop()
	for {
		_, changed := m.cfg.Cluster.Healthy()
		select {
		case <-m.cfg.Seeds.Kicked():
			run.seedsChanged()
			continue
		case <-next.C:
			next.Reset(run.wait())
		case <-changed:
			if !run.memberTurnedDown() {
				continue
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		run.sync(ctx)
	}
}

// firstListRetry is how often the list is asked for until the first one is taken, so that a
// gateway started knowing one member serves the others within about a second.
const firstListRetry = 250 * time.Millisecond

// wait is the time until the next read of the list.
func (run *memberListRun) wait() time.Duration {
	if run.following {
		return run.m.cfg.Interval
	}
	return min(run.m.cfg.Interval, firstListRetry)
}

// seedsChanged takes new seeds; they are served while no list is followed.
func (run *memberListRun) seedsChanged() {
	seeds, ok := run.m.cfg.Seeds.Latest()
	if !ok {
		return
	}
	run.seeds = slices.Clone(seeds)
	if !run.following {
		run.m.cfg.Out.Publish(run.seeds)
	}
}

// memberTurnedDown reports whether a member turned down since the last look.
func (run *memberListRun) memberTurnedDown() bool {
	now := map[HostPort]bool{}
	turned := false
	for _, ep := range run.m.cfg.Cluster.Down() {
		now[ep.HostPort()] = true
		turned = turned || !run.downSeen[ep.HostPort()]
	}
	run.downSeen = now
	return turned
}

// sync asks a healthy member for the list and publishes the set it gives, when it is safe.
func (run *memberListRun) sync(ctx context.Context) {
	m := run.m
	if run.seeds == nil {
		run.seedsChanged()
	}
	healthy, _ := m.cfg.Cluster.Healthy()
	list, from, err := run.fetchAny(ctx, healthy)
	if ctx.Err() != nil {
		return
	}
	m.syncs.Add(1)
	if err != nil {
		m.failures.Add(1)
		run.refuse("the member list could not be read; keeping the current endpoint set", err)
		run.maybeRetrySeeds()
		return
	}
	run.answered = time.Now()
	set, members, err := run.admit(ctx, list)
	if err != nil {
		m.failures.Add(1)
		run.refuse("member list refused; keeping the current endpoint set", err, zap.Stringer("from", from))
		return
	}
	run.refusal = ""
	current, _ := m.cfg.Out.Latest()
	m.members.Store(&members)
	if !run.following {
		m.cfg.Log.Info("following the member list", zap.Stringer("from", from), zap.Stringers("endpoints", set))
	}
	run.following = true
	if slices.Equal(current, set) {
		return
	}
	added, removed := diff(current, set)
	m.cfg.Log.Info("endpoint set follows the member list",
		zap.Stringer("from", from), zap.Stringers("added", added), zap.Stringers("removed", removed),
		zap.Stringers("endpoints", set))
	m.cfg.Out.Publish(set) // after the line, so that whoever sees the set finds the line
}

// maybeRetrySeeds serves the seeds with the current set once no list came for
// seedRetryIntervals intervals.
func (run *memberListRun) maybeRetrySeeds() {
	m := run.m
	if !run.following || time.Since(run.answered) < seedRetryIntervals*m.cfg.Interval {
		return
	}
	current, _ := m.cfg.Out.Latest()
	set := Normalize(append(slices.Clone(current), run.seeds...))
	run.following = false
	if !slices.Equal(set, current) {
		m.cfg.Log.Warn("no member has given the member list for a while; trying the seeds again",
			zap.Stringers("seeds", run.seeds), zap.Duration("since", time.Since(run.answered)))
		m.cfg.Out.Publish(set)
	}
}

// refuse logs why a sync gave nothing, once per reason.
func (run *memberListRun) refuse(msg string, err error, fields ...zap.Field) {
	if why := msg + err.Error(); why != run.refusal {
		run.refusal = why
		run.m.cfg.Log.Warn(msg, append(fields, zap.Error(err))...)
	}
}

// errNoHealthyMember: nobody to ask.
var errNoHealthyMember = errors.New("no member is healthy to give the member list")

// fetchAny asks the healthy members in turn until one gives the list.
func (run *memberListRun) fetchAny(ctx context.Context, healthy []Endpoint) (memberList, Endpoint, error) {
	if len(healthy) == 0 {
		return memberList{}, Endpoint{}, errNoHealthyMember
	}
	var errs []error
	for _, ep := range healthy {
		list, err := run.m.fetch(ctx, ep)
		if err == nil {
			return list, ep, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", ep, err))
	}
	return memberList{}, Endpoint{}, errors.Join(errs...)
}

// listedMember is one member of a member list as etcd's JSON gateway gives it.
type listedMember struct {
	ID         json.RawMessage `json:"ID"` // a uint64, as a string
	Name       string          `json:"name"`
	ClientURLs []string        `json:"clientURLs"`
	IsLearner  bool            `json:"isLearner"`
}

// id parses the member's ID: a uint64 the JSON gateway writes as a string.
func (lm listedMember) id() (uint64, error) {
	return strconv.ParseUint(strings.Trim(string(lm.ID), `"`), 10, 64)
}

// memberList is the answer of POST /v3/cluster/member/list.
type memberList struct {
	Members []listedMember `json:"members"`
}

// errNoJSONGateway is a member whose client port has no JSON gateway.
var errNoJSONGateway = errors.New("the member serves no JSON gateway on its client port (--enable-grpc-gateway=false or --listen-client-http-urls); the member list cannot be read from it")

// errAuth is a member list refused for want of authentication.
var errAuth = errors.New("the cluster requires authentication to list members (etcd 3.6.16 and later with auth enabled): give a client certificate whose CN is a user with --health-cert-file; passwords are not supported")

// fetch asks ep for the member list over the scheme the probes found.
func (m *MemberList) fetch(ctx context.Context, ep Endpoint) (memberList, error) {
	scheme := m.cfg.Cluster.Scheme(ep)
	if scheme == member.SchemeUnknown {
		return memberList{}, fmt.Errorf("the scheme of %s is not known yet", ep)
	}
	return fetchMemberList(ctx, m.dial, ep, scheme, ep.MemberTLS(m.cfg.Trust), m.cfg.Timeout)
}

// ListMembers asks ep for the cluster's member list as the gateway does when it follows it,
// and returns the members: the check command prints them.
func ListMembers(ctx context.Context, ep Endpoint, scheme member.Scheme, tlsCfg member.TLS, timeout time.Duration) ([]ListedMember, error) {
	d := &net.Dialer{Timeout: timeout}
	list, err := fetchMemberList(ctx, d.DialContext, ep, scheme, tlsCfg, timeout)
	if err != nil {
		return nil, err
	}
	var out []ListedMember
	for _, lm := range list.Members {
		id, _ := lm.id()
		out = append(out, ListedMember{Name: lm.Name, ID: id, ClientURLs: lm.ClientURLs, Learner: lm.IsLearner})
	}
	return out, nil
}

// ListedMember is one member of a cluster's member list.
type ListedMember struct {
	Name       string // empty until the member has started
	ID         uint64
	ClientURLs []string
	Learner    bool
}

// memberListLimit bounds what is read of a member list: thousands of members.
const memberListLimit = 1 << 20

// fetchMemberList does POST /v3/cluster/member/list on ep: the JSON gateway every etcd since
// 3.4 serves on its client port.
func fetchMemberList(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), ep Endpoint, scheme member.Scheme, tlsCfg member.TLS, timeout time.Duration) (memberList, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &member.Client{Addr: ep.Addr(), TLS: tlsCfg, Dial: dial}
	for _, body := range []string{`{"linearizable":true}`, `{}`} { // etcd 3.4 knows no linearizable
		resp, err := client.Do(ctx, scheme, http.MethodPost, "/v3/cluster/member/list", []byte(body), memberListLimit)
		if err != nil {
			return memberList{}, err
		}
		text := resp.Body
		switch {
		case resp.Status == http.StatusOK:
			var list memberList
			if err := json.Unmarshal(text, &list); err != nil {
				return memberList{}, fmt.Errorf("the member list is not JSON: %v", err)
			}
			return list, nil
		case resp.Status == http.StatusNotFound:
			return memberList{}, errNoJSONGateway
		case resp.Status == http.StatusUnauthorized || resp.Status == http.StatusForbidden ||
			bytes.Contains(text, []byte("user name is empty")) || bytes.Contains(text, []byte("permission denied")):
			return memberList{}, errAuth
		case resp.Status == http.StatusBadRequest && body != `{}`:
			continue
		}
		return memberList{}, fmt.Errorf("POST /v3/cluster/member/list answered %d: %s", resp.Status, bytes.TrimSpace(text))
	}
	return memberList{}, errors.New("unreachable")
}

// admit turns a list into the set to publish: the client URL of each started voting member
// that answers from this host. It refuses an empty list, one with no member it can parse, one
// that holds the gateway's own listen address, and one whose new members all fail to answer.
func (run *memberListRun) admit(ctx context.Context, list memberList) ([]Endpoint, map[HostPort]Member, error) {
	m := run.m
	if len(list.Members) == 0 {
		return nil, nil, errors.New("the member list is empty")
	}
	type candidate struct {
		member Member
		urls   []clientAddr
	}
	var candidates []candidate
	parsed := 0
	for _, lm := range list.Members {
		id, err := lm.id()
		if err != nil {
			continue
		}
		parsed++
		var urls []clientAddr
		for _, raw := range lm.ClientURLs {
			addr, ok := clientURL(raw)
			if !ok {
				continue
			}
			if err := m.cfg.Guard.Check(ctx, addr.ep); err != nil {
				return nil, nil, fmt.Errorf("member %q lists %s: %w", lm.Name, raw, err)
			}
			urls = append(urls, addr)
		}
		if lm.Name == "" || lm.IsLearner || len(urls) == 0 {
			continue // not started, a learner, or no client URL this host can use
		}
		candidates = append(candidates, candidate{Member{Name: lm.Name, ID: id}, urls})
	}
	if parsed == 0 {
		return nil, nil, errors.New("no member of the list could be parsed")
	}
	current, _ := m.cfg.Out.Latest()
	chosen := make([]Endpoint, len(candidates))
	var wg sync.WaitGroup
	for i, c := range candidates {
		wg.Add(1)
		go func() {
			defer wg.Done()
			chosen[i] = m.firstAnswering(ctx, c.urls, current)
		}()
	}
	wg.Wait()
	members := map[HostPort]Member{}
	var set []Endpoint
	newOnes, newAnswering := 0, 0
	for i, c := range candidates {
		isNew := !slices.ContainsFunc(c.urls, func(a clientAddr) bool { return containsAddr(current, a.ep) })
		if isNew {
			newOnes++
		}
		if chosen[i] == (Endpoint{}) {
			m.cfg.Log.Debug("member does not answer from this host; left out", zap.String("member", c.member.Name))
			continue
		}
		if isNew {
			newAnswering++
		}
		set = append(set, chosen[i])
		members[chosen[i].HostPort()] = c.member
	}
	if len(set) == 0 {
		return nil, nil, errors.New("no member of the list answers from this host")
	}
	if newOnes > 0 && newAnswering == 0 {
		return nil, nil, errors.New("none of the list's new members answers from this host (advertised client URLs unreachable from here?)")
	}
	return Normalize(set), members, nil
}

// firstAnswering returns the first of urls that answers from this host, an address of the
// current set first; the zero Endpoint when none does.
func (m *MemberList) firstAnswering(ctx context.Context, urls []clientAddr, current []Endpoint) Endpoint {
	for _, a := range urls {
		if containsAddr(current, a.ep) {
			return a.ep
		}
	}
	for _, a := range urls {
		if m.answers(ctx, a) {
			return a.ep
		}
	}
	return Endpoint{}
}

// answers reports whether a accepts a connection from this host and, for an https URL, answers
// a TLS handshake. A connection closed before any handshake would make etcd 3.4 log a warning
// ("rejected connection"), so a TLS member is always greeted in TLS.
func (m *MemberList) answers(ctx context.Context, a clientAddr) bool {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	conn, err := m.dial(ctx, "tcp", a.ep.Addr())
	if err != nil {
		return false
	}
	if !a.tls {
		conn.Close()
		return true
	}
	h := member.HandshakeTLS(ctx, conn, a.ep.MemberTLS(m.cfg.Trust), nil)
	if h.Conn != nil {
		h.Conn.Close()
	}
	return h.Scheme == member.SchemeTLS
}

// clientAddr is one of a member's client URLs: its address, and whether it serves TLS.
type clientAddr struct {
	ep  Endpoint
	tls bool
}

// clientURL parses one of a member's client URLs; unix:// ones and those without a usable
// host:port are skipped.
func clientURL(raw string) (clientAddr, bool) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Port() == "" {
		return clientAddr{}, false
	}
	ep, err := ParseEndpoint(u.Host)
	return clientAddr{ep: ep, tls: u.Scheme == "https"}, err == nil
}

func containsAddr(set []Endpoint, ep Endpoint) bool {
	return slices.ContainsFunc(set, func(e Endpoint) bool { return e.HostPort() == ep.HostPort() })
}

// diff returns what next adds to prev, and what it removes.
func diff(prev, next []Endpoint) (added, removed []Endpoint) {
	for _, ep := range next {
		if !containsAddr(prev, ep) {
			added = append(added, ep)
		}
	}
	for _, ep := range prev {
		if !containsAddr(next, ep) {
			removed = append(removed, ep)
		}
	}
	return added, removed
}
