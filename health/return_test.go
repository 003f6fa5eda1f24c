package health

import (
	"sync"
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/internal/testnet"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

func TestDownProbeGapBacksOffTowardTheRetryDelay(t *testing.T) {
	tests := []struct {
		downFor, retryDelay, want time.Duration
	}{
		{0, time.Minute, time.Second},
		{30 * time.Second, time.Minute, time.Second},
		{time.Minute, time.Minute, time.Second},
		{61 * time.Second, time.Minute, time.Second},
		{62 * time.Second, time.Minute, 2 * time.Second},
		{68 * time.Second, time.Minute, 8 * time.Second},
		{2 * time.Minute, time.Minute, time.Minute},
		{time.Hour, time.Minute, time.Minute},
		{6 * time.Minute, 5 * time.Minute, 5 * time.Minute},
		{time.Minute, 500 * time.Millisecond, 500 * time.Millisecond}, // the retry delay caps it
	}
	for _, tt := range tests {
		if got := downProbeGap(tt.downFor, time.Second, tt.retryDelay); got != tt.want {
			t.Errorf("down for %s, retry delay %s: gap %s, want %s", tt.downFor, tt.retryDelay, got, tt.want)
		}
	}
	// A member gone for good: from its third minute down, one probe per retry delay.
	probes, at := 0, time.Duration(0)
	for {
		at += downProbeGap(at, time.Second, time.Minute)
		if at > 10*time.Minute {
			break
		}
		if at > 3*time.Minute {
			probes++
		}
	}
	if probes > 7 {
		t.Errorf("%d probes in the 7 minutes after the third, want at most one a minute", probes)
	}
}

// fakeClock is a clock that tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	at time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at = c.at.Add(d)
}

// probedNow sends a probe's verdict begun at the fixture's clock and waits until it is
// recorded.
func (f *managerFixture) probedNow(t *testing.T, clock *fakeClock, ep resolver.Endpoint, st State) {
	t.Helper()
	at := clock.now()
	f.reports <- Report{Endpoint: ep, Evidence: Probed, State: st, At: at}
	f.waitRecorded(t, ep, at)
}

func (f *managerFixture) refused(t *testing.T, ep resolver.Endpoint) {
	t.Helper()
	f.reports <- Report{Endpoint: ep, Evidence: DialRefused, State: Down, Reason: "connection refused"}
	if !testnet.Eventually(defaultTestTimeout, func() bool { return f.state(ep) == Down }) {
		t.Fatalf("%s did not turn down on a refused dial", ep)
	}
}

// A member that keeps coming back is held out of rotation longer each time; a member's first
// return in a while is taken at once and slow-starts; with nothing else healthy no hold
// applies.
func TestManagerHoldsBackAMemberThatKeepsReturning(t *testing.T) {
	flappy := endpointOf(t, testnet.Echo(t).Addr())
	steady := endpointOf(t, testnet.Echo(t).Addr())
	f := newManagerFixture(time.Hour)
	clock := &fakeClock{at: time.Now().Add(time.Hour)}
	f.m.now = clock.now
	f.updates.Publish(resolver.Normalize([]resolver.Endpoint{flappy, steady}))
	f.run(t)
	f.waitFirstProbe(t, flappy)
	f.waitFirstProbe(t, steady)
	clock.advance(time.Second)

	f.refused(t, flappy)
	clock.advance(time.Second)
	f.probedNow(t, clock, flappy, Healthy)
	if got := f.state(flappy); got != Healthy {
		t.Fatalf("a member's first return in a while left it %s, want healthy at once", got)
	}
	if !f.table.Load().LoadOf(flappy).slowUntil().After(clock.now()) {
		t.Fatal("a member back while another serves does not slow-start")
	}

	for _, hold := range []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second} {
		clock.advance(time.Second)
		f.refused(t, flappy)
		clock.advance(time.Second)
		f.probedNow(t, clock, flappy, Down) // still down: no return yet
		clock.advance(time.Second)
		f.probedNow(t, clock, flappy, Healthy) // a return: held
		if got := f.state(flappy); got != Down {
			t.Fatalf("a repeated return left it %s, want held down for %s", got, hold)
		}
		clock.advance(hold - time.Millisecond)
		f.probedNow(t, clock, flappy, Healthy)
		if got := f.state(flappy); got != Down {
			t.Fatalf("just before its hold of %s ended it was %s", hold, got)
		}
		clock.advance(time.Millisecond)
		f.probedNow(t, clock, flappy, Healthy)
		if got := f.state(flappy); got != Healthy {
			t.Fatalf("after its hold of %s it was %s, want healthy", hold, got)
		}
	}
	if n := f.logs.FilterMessage("endpoint answers again but keeps failing; held out of rotation").Len(); n != 3 {
		t.Errorf("%d log lines about holds, want one per held return (3)", n)
	}

	// Returns older than the window are forgotten: the next is taken at once.
	clock.advance(returnWindow + time.Second)
	f.refused(t, flappy)
	clock.advance(time.Second)
	f.probedNow(t, clock, flappy, Healthy)
	if got := f.state(flappy); got != Healthy {
		t.Fatalf("the first return after a quiet window left it %s, want healthy at once", got)
	}

	// With nothing else healthy, any member is welcome back at once.
	clock.advance(time.Second)
	f.refused(t, flappy)
	clock.advance(time.Second)
	f.probedNow(t, clock, flappy, Healthy) // held: it came back twice within the window
	f.refused(t, steady)
	clock.advance(time.Second)
	f.probedNow(t, clock, flappy, Down)
	clock.advance(time.Second)
	f.probedNow(t, clock, flappy, Healthy)
	if got := f.state(flappy); got != Healthy {
		t.Fatalf("with every member down, a return left it %s, want healthy at once", got)
	}
}
