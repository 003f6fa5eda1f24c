package supervisor

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"time"

	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/internal/clock"
)

// restAfter is the window in which clients must send no request through the gateway for it
// to rest: it rests between one and two windows after the last request, so that a client
// that asks now and then does not switch it back and forth (each switch stops the world for
// a moment).
const restAfter = 30 * time.Second

// restGCPercent is the garbage collector's target at rest: the heap may grow by a quarter over
// what is live before a collection, instead of doubling, and the runtime's 4 MB minimum heap
// goal shrinks with it to 1 MB. At rest the gateway probes and copies keepalives; its live
// heap is under 1 MB and it allocates a few hundred kilobytes a second, so this costs a
// collection every few seconds at most and keeps about 3 MB less resident.
const restGCPercent = 25

// rest is the service that makes a gateway cheap while its clients send no request: none is
// connected, or those connected wait (an idle watch, keepalive PINGs). Then the collector runs
// at restGCPercent, and the scheduler on one processor: the probes of an idle gateway,
// a few small requests a second, gain nothing from a second processor but the wakeups of a
// second thread. The first request gives back what rest found, before the next one: a busy
// gateway (thousands of connections) collects and schedules as Go's defaults make it. A knob
// the user set in the environment is left alone: GOGC or GOMEMLIMIT, GOMAXPROCS.
type rest struct {
	traffic *health.Traffic
	clock   clock.Clock
	log     *zap.Logger
	// tuneGC and tuneProcs say which knobs are the gateway's to turn.
	tuneGC, tuneProcs bool
	// The runtime's, but in tests.
	setGCPercent    func(int) int
	freeOSMemory    func()
	setMaxProcs     func(int) int
	defaultMaxProcs func()
}

// restKnobs reports which of the collector's target and the scheduler's processors the
// environment leaves to the gateway.
func restKnobs() (gc, procs bool) {
	_, gogc := os.LookupEnv("GOGC")
	_, limit := os.LookupEnv("GOMEMLIMIT")
	_, maxProcs := os.LookupEnv("GOMAXPROCS")
	return !gogc && !limit, !maxProcs
}

func newRest(traffic *health.Traffic, tuneGC, tuneProcs bool, log *zap.Logger) *rest {
	return &rest{traffic: traffic, clock: clock.Real{}, log: log.Named("rest"), tuneGC: tuneGC, tuneProcs: tuneProcs,
		setGCPercent: debug.SetGCPercent, freeOSMemory: debug.FreeOSMemory,
		setMaxProcs: runtime.GOMAXPROCS, defaultMaxProcs: runtime.SetDefaultGOMAXPROCS}
}

// String names the service in supervisor events.
func (r *rest) String() string { return "rest" }

// Serve rests after each window without a request, and wakes at the next request, until ctx
// ends; then it gives back what it found.
func (r *rest) Serve(ctx context.Context) error {
	r.traffic.Rest() // the first window starts
	for {
		window, stop := r.clock.After(restAfter)
		select {
		case <-window:
		case <-ctx.Done():
			stop()
			return ctx.Err()
		}
		request, sent := r.traffic.Rest()
		if sent {
			continue
		}
		wake := r.enter()
		select {
		case <-request:
			wake()
		case <-ctx.Done():
			wake()
			return ctx.Err()
		}
	}
}

// enter turns the knobs to rest and returns what turns them back.
func (r *rest) enter() (wake func()) {
	if r.tuneProcs {
		r.setMaxProcs(1) // first: the caches of the processors it drops are freed below
	}
	gcPercent := 0
	if r.tuneGC {
		gcPercent = r.setGCPercent(restGCPercent)
		r.freeOSMemory() // what the busy time left unused goes back at once
	}
	r.log.Debug("no request for a while: resting", zap.Duration("quiet_for", restAfter),
		zap.Bool("gc_tuned", r.tuneGC), zap.Bool("one_processor", r.tuneProcs))
	return func() {
		if r.tuneGC {
			r.setGCPercent(gcPercent)
		}
		if r.tuneProcs {
			r.defaultMaxProcs()
		}
		r.log.Debug("a request came: Go's defaults again")
	}
}
