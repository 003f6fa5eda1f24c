package health

// State is what the gateway knows of one endpoint.
type State int8

// The states, from worst to best.
const (
	// Down: no answer in time, refused, a learner, or a failed dial. Used only as the last
	// resort, when every known endpoint is down.
	Down State = iota
	// Degraded: answers, but is not ready (no leader, an alarm, a failed linearizable read).
	// Used only while no endpoint is healthy.
	Degraded
	// Healthy: ready to serve clients.
	Healthy
)

// Results of a probe that say nothing about the member, whose state stays.
const (
	// noVerdict: the gateway could not ask; it was out of descriptors, ports, buffers or memory.
	noVerdict State = -1
	// tooLate: the probe timed out, but the gateway saw it only long after its deadline: the
	// gateway itself was not scheduled (paused, starved of CPU). It is retried at once.
	tooLate State = -2
)

func (s State) String() string {
	switch s {
	case Down:
		return "down"
	case Degraded:
		return "degraded"
	case Healthy:
		return "healthy"
	case noVerdict:
		return "no verdict"
	case tooLate:
		return "too late"
	default:
		return "unknown"
	}
}
