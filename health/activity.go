package health

import (
	"sync"
	"sync/atomic"
)

// Activity counts the connections the gateway forwards. The supervisor creates it and hands it
// to the Forwarder, which counts, and to the probers, which send liveness heartbeats only while
// there are clients to protect: with none, the probes alone keep the state and an idle gateway
// costs less. The first client after none wakes the probers, so that heartbeats resume at once.
type Activity struct {
	clients atomic.Int64

	mu      sync.Mutex
	arrived chan struct{} // closed when the first client arrives; then replaced
}

// NewActivity returns an Activity with no client.
func NewActivity() *Activity { return &Activity{} }

// AddClients counts forwarded connections: +1 when one starts, -1 when it ends.
func (a *Activity) AddClients(delta int64) {
	if a.clients.Add(delta) == delta && delta > 0 {
		a.mu.Lock()
		if a.arrived != nil {
			close(a.arrived)
			a.arrived = nil
		}
		a.mu.Unlock()
	}
}

// hasClients reports whether any connection is being forwarded.
func (a *Activity) hasClients() bool { return a.clients.Load() > 0 }

// clientArrives returns a channel closed when the next first client arrives.
func (a *Activity) clientArrives() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.arrived == nil {
		a.arrived = make(chan struct{})
	}
	return a.arrived
}
