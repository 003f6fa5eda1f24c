package supervisor

import (
	"context"
	"os"
	"runtime/debug"
	"time"

	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/internal/clock"
)

// idleGCPercent is the garbage collector's target while the gateway forwards no connection:
// the heap may grow by a quarter over what is live before a collection, instead of doubling,
// and the runtime's 4 MB minimum heap goal shrinks with it to 1 MB. Idle, the gateway only
// probes; its live heap is under 1 MB and it allocates a few hundred kilobytes a second,
// so this costs a collection every few seconds and nothing measurable in CPU, and it keeps
// about 3 MB less resident.
const idleGCPercent = 25

// idleAfter is how long the gateway must have forwarded no connection before the collector
// runs at idleGCPercent: a client that reconnects now and then does not switch it back and
// forth (each switch stops the world for a moment).
const idleAfter = 30 * time.Second

// idleMemory is the service that lowers the garbage collector's target while the gateway has
// no connection, and gives the target it found back at the first connection, so that a busy
// gateway (thousands of connections) collects as Go's default makes it, and an idle one,
// which is most of its life, stays small. It is not started when the user set GOGC or
// GOMEMLIMIT: then the runtime does what they asked.
type idleMemory struct {
	active    func() int      // the forwarder's live connections
	occupancy <-chan struct{} // a word when the first connection comes or the last goes
	clock     clock.Clock
	log       *zap.Logger
	// setGCPercent and freeOSMemory are runtime/debug's, but in tests.
	setGCPercent func(int) int
	freeOSMemory func()
}

// userTunesMemory reports whether the environment sets the collector's target or a memory
// limit, which the gateway then leaves alone.
func userTunesMemory() bool {
	_, gogc := os.LookupEnv("GOGC")
	_, limit := os.LookupEnv("GOMEMLIMIT")
	return gogc || limit
}

func newIdleMemory(active func() int, occupancy <-chan struct{}, log *zap.Logger) *idleMemory {
	return &idleMemory{active: active, occupancy: occupancy, clock: clock.Real{}, log: log.Named("memory"),
		setGCPercent: debug.SetGCPercent, freeOSMemory: debug.FreeOSMemory}
}

// String names the service in supervisor events.
func (m *idleMemory) String() string { return "idle-memory" }

// Serve switches the collector's target as connections come and go until ctx ends, and then
// gives back the target it found.
func (m *idleMemory) Serve(ctx context.Context) error {
	busyPercent := -1 // the target found when going idle; -1 while not idle
	defer func() {
		if busyPercent >= 0 {
			m.setGCPercent(busyPercent)
		}
	}()
	var quietFor <-chan time.Time // fires once no connection has been forwarded for idleAfter
	stop := func() {}
	defer func() { stop() }()
	for {
		switch busy := m.active() > 0; {
		case busy && busyPercent >= 0:
			m.setGCPercent(busyPercent)
			m.log.Debug("a connection came: the collector runs at its usual target", zap.Int("gc_percent", busyPercent))
			busyPercent = -1
		case busy:
			stop()
			quietFor = nil
		case busyPercent < 0 && quietFor == nil:
			quietFor, stop = m.clock.After(idleAfter)
		}
		select {
		case <-m.occupancy:
		case <-quietFor:
			quietFor = nil
			if m.active() > 0 {
				continue
			}
			busyPercent = m.setGCPercent(idleGCPercent)
			m.freeOSMemory() // what the busy time left unused goes back at once
			m.log.Debug("no connection for a while: the collector keeps the heap small", zap.Duration("idle_for", idleAfter),
				zap.Int("gc_percent", idleGCPercent))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
