package health

import "github.com/etcd-gateway/etcd-gateway/resolver"

// Report tells the Manager what a dial or a probe found out about one endpoint.
type Report struct {
	Endpoint resolver.Endpoint
	State    State
	Reason   string // why it is not healthy; empty when healthy
	FromDial bool   // a client's dial failed, as opposed to a probe's verdict
}

// Reports carries Reports to the Manager. It is created once by the supervisor and outlives
// restarts of the Manager; give it room for a burst of failed dials.
type Reports chan Report

// NewReports returns a Reports channel with the given buffer.
func NewReports(buffer int) Reports { return make(Reports, buffer) }

// Offer sends r without blocking; when the Manager is behind, r is dropped. The data path uses
// it, so that a client connection never waits on the control path. A dropped failure costs at
// most one more failed dial, which reports again.
func (r Reports) Offer(rep Report) {
	select {
	case r <- rep:
	default:
	}
}

// Reprobe asks the Manager to probe every endpoint at once; the dialer uses it when no
// endpoint is healthy. Its capacity of one coalesces requests.
type Reprobe chan struct{}

// NewReprobe returns a Reprobe channel.
func NewReprobe() Reprobe { return make(Reprobe, 1) }

// Offer asks for a re-probe without blocking.
func (r Reprobe) Offer() {
	select {
	case r <- struct{}{}:
	default:
	}
}
