package health

import (
	"time"

	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// Evidence is what a Report found out, and so how much it weighs.
type Evidence int8

// The kinds of evidence about a member.
const (
	// Probed: a probe's verdict; it counts toward --health-rise or --health-fall.
	Probed Evidence = iota
	// HeartbeatsLost: the member's process stopped answering heartbeats; it is down at once.
	HeartbeatsLost
	// DialRefused: a client's connection was refused or reset; the process is gone or
	// refusing, and the member is down at once.
	DialRefused
	// DialFailed: a client's connection timed out or found no route; it counts toward
	// --health-fall and asks for a probe at once, which says more.
	DialFailed
)

func (e Evidence) String() string {
	switch e {
	case Probed:
		return "probe"
	case HeartbeatsLost:
		return "heartbeats"
	case DialRefused:
		return "dial refused"
	case DialFailed:
		return "dial failed"
	default:
		return "unknown"
	}
}

// Report tells the Manager what a dial or a probe found out about one endpoint.
type Report struct {
	Endpoint resolver.Endpoint
	Evidence Evidence
	State    State         // what the evidence says; Down for every kind but Probed
	Reason   string        // why it is not healthy; empty when healthy
	At       time.Time     // when the probe began; Probed only
	Scheme   member.Scheme // what the member serves, as the probe found; Probed only
	Note     string        // what the probe found worth saying, though no fault; Probed only
	// NoNews is set when the probe said nothing of the member (member.SeenLate or
	// member.LocalShortage): its state stays, and State is not read. Probed only.
	NoNews member.Fault
	// Gen is the generation of the prober that sent it; the Manager drops a report of a
	// prober it has since replaced. 0 for the dialer's reports, which any generation takes.
	Gen uint64
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
// endpoint is healthy. Its capacity of one coalesces requests, and the Manager asks each
// member's prober at most once every reprobeGap (250 ms) however often it is asked.
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
