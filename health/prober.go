package health

import (
	"context"
	"time"

	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// ProbeConfig is how every endpoint is probed.
type ProbeConfig struct {
	Mode       CheckMode     // --health-check
	Interval   time.Duration // --health-interval: between probes of a healthy or degraded endpoint
	Timeout    time.Duration // --health-timeout: bound of each probe
	RetryDelay time.Duration // --retry-delay: between probes of a down endpoint while others are healthy
	Rise       int           // consecutive better results before the state improves
	Fall       int           // consecutive worse results before the state worsens
	TLS        TLSConfig     // for members found through _etcd-client-ssl
	// Heartbeat is the period of the liveness heartbeat between two probes of a member that is
	// not down (GET /version, which costs etcd no storage access), sent while the gateway
	// forwards any connection; 0 turns it off. Two
	// heartbeats in a row without an answer within HeartbeatTimeout make the member down, so
	// that a frozen member leaves rotation well within the probe interval.
	Heartbeat        time.Duration
	HeartbeatTimeout time.Duration
}

// heartbeatMisses is how many heartbeats in a row must go unanswered.
const heartbeatMisses = 2

// Prober probes one endpoint and reports changes of its state to the Manager. A down endpoint
// is probed every retry delay while others are healthy, and every interval while none is, so
// the gateway serves again as soon as any member is back. It is a suture service, restarted
// with the state the Manager holds.
type Prober struct {
	ep         resolver.Endpoint
	cfg        ProbeConfig
	state      State           // the state the Manager holds when the prober starts
	table      *Table          // read to know whether other endpoints are healthy
	markedDown <-chan struct{} // the Manager marked the endpoint down after a failed dial
	now        <-chan struct{} // probe at once
	out        Reports
	log        *zap.Logger
}

var _ suture.Service = (*Prober)(nil)

// String names the service in supervisor events.
func (p *Prober) String() string { return "prober/" + p.ep.String() }

// Serve probes until ctx ends.
func (p *Prober) Serve(ctx context.Context) error {
	chk := newChecker(p.ep, p.cfg.Mode, p.cfg.Timeout, p.cfg.TLS)
	defer chk.close()
	hb := newHeartbeater(p.ep.Addr(), chk.tls)
	defer hb.close()
	state := p.state
	var pending State // the result being counted toward a change
	streak := 0
	for {
		began := time.Now()
		got, reason := chk.check(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.table.recordProbe(p.ep, Probe{At: began, Result: got, Reason: reason})
		if ce := p.log.Check(zap.DebugLevel, "probed"); ce != nil {
			ce.Write(zap.Stringer("state", got), zap.String("reason", reason))
		}
		switch got {
		case noVerdict: // the gateway could not ask; the accept loop logs its shortage
		case state:
			streak = 0
		default:
			if got != pending || streak == 0 {
				pending, streak = got, 0
			}
			streak++
			need := p.cfg.Rise
			if got < state {
				need = p.cfg.Fall
			}
			if streak >= need {
				state, streak = got, 0
				select {
				case p.out <- Report{Endpoint: p.ep, State: got, Reason: reason}:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		next, reason, err := p.wait(ctx, chk, hb, began, state)
		if err != nil {
			return err
		}
		if next == Down && state != Down && reason != "" {
			select {
			case p.out <- Report{Endpoint: p.ep, State: Down, Reason: reason}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		state = next
		if state == Down {
			streak = 0
		}
	}
}

// wait sleeps until the next probe is due, sending heartbeats meanwhile. It returns early when
// asked to probe at once, when the Manager marks the endpoint down, or when heartbeats go
// unanswered; then it returns Down, with the reason when the heartbeats found it.
func (p *Prober) wait(ctx context.Context, chk *checker, hb *heartbeater, began time.Time, state State) (State, string, error) {
	misses := 0
	for {
		snap := p.table.Load()
		every := p.cfg.Interval
		if state == Down && snap.HealthyCount() > 0 {
			every = p.cfg.RetryDelay
		}
		left := time.Until(began.Add(every))
		if left <= 0 {
			return state, "", nil
		}
		canBeat := p.cfg.Heartbeat > 0 && state != Down && chk.mode != CheckTCP
		var arrives <-chan struct{} // the first client after none: heartbeats resume at once
		if canBeat {
			arrives = p.table.clientArrives() // taken before the count, so no arrival slips between
		}
		beat := canBeat && p.table.hasClients()
		if beat {
			arrives = nil
		}
		sleep := left
		if beat {
			sleep = min(left, p.cfg.Heartbeat)
			if misses > 0 {
				sleep = 0 // confirm a missed heartbeat at once
			}
		}
		t := time.NewTimer(sleep)
		select {
		case <-t.C:
			if !beat || sleep == left {
				return state, "", nil
			}
			if err := hb.beat(ctx, p.cfg.HeartbeatTimeout); err == nil {
				misses = 0
			} else if LocalShortage(err) {
				continue // the gateway could not ask: no news of the member
			} else if misses++; misses >= heartbeatMisses {
				return Down, err.Error(), nil
			}
		case <-p.now:
			t.Stop()
			return state, "", nil
		case <-p.markedDown:
			t.Stop()
			state = Down
		case <-snap.Changed():
			t.Stop()
		case <-arrives:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			return state, "", ctx.Err()
		}
	}
}

// ProbeOnce probes ep once as a Prober would, and returns its state and, when it is not
// healthy, why.
func ProbeOnce(ctx context.Context, ep resolver.Endpoint, cfg ProbeConfig) (State, string) {
	chk := newChecker(ep, cfg.Mode, cfg.Timeout, cfg.TLS)
	defer chk.close()
	return chk.check(ctx)
}
