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

func (s State) String() string {
	switch s {
	case Down:
		return "down"
	case Degraded:
		return "degraded"
	case Healthy:
		return "healthy"
	default:
		return "unknown"
	}
}
