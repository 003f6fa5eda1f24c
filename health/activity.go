package health

import "sync/atomic"

// Activity counts the connections the gateway forwards. The supervisor creates it and hands it
// to the Forwarder, which counts, and to the probers, which send liveness heartbeats only while
// there are clients to protect: with none, the probes alone keep the state and an idle gateway
// costs less. The first client after none wakes the probers, so that heartbeats resume at once.
type Activity struct {
	clients atomic.Int64
	arrived wakeup // fired when the first client after none arrives
}

// NewActivity returns an Activity with no client.
func NewActivity() *Activity { return &Activity{} }

// AddClients counts forwarded connections: +1 when one starts, -1 when it ends.
func (a *Activity) AddClients(delta int64) {
	if a.clients.Add(delta) == delta && delta > 0 {
		a.arrived.fire()
	}
}

// hasClients reports whether any connection is being forwarded.
func (a *Activity) hasClients() bool { return a.clients.Load() > 0 }

// clientArrives returns a channel closed when the next first client arrives.
func (a *Activity) clientArrives() <-chan struct{} { return a.arrived.wait() }
