package health

import (
	"context"
	"math/rand/v2"
	"net"
	"time"

	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// ProbeConfig is how every endpoint is probed.
type ProbeConfig struct {
	Mode     CheckMode     // --health-check
	Interval time.Duration // --health-interval: between probes of a healthy or degraded endpoint
	Timeout  time.Duration // --health-timeout: bound of each probe
	// RetryDelay (--retry-delay) caps the backoff between probes of a down endpoint while others
	// are healthy (see downProbeGap).
	RetryDelay time.Duration
	Rise       int           // consecutive better results before the state improves
	Fall       int           // consecutive worse results before the state worsens
	TLS        member.Policy // for members that serve TLS
	// Heartbeat is the period of the liveness heartbeat between two probes of a member that is
	// not down (GET /version, which costs etcd no storage access), sent while the member's
	// clients send it requests and for heartbeatLinger after; 0 turns it off. Two heartbeats in a row without an
	// answer within HeartbeatTimeout (or, pulsed, within the period) make the member down, so
	// that a frozen member leaves rotation, and its clients are moved, well within the probe
	// interval. A member without clients is left to its probes.
	Heartbeat        time.Duration
	HeartbeatTimeout time.Duration
}

// heartbeatMisses is how many heartbeats in a row must go unanswered.
const heartbeatMisses = 2

// heartbeatLinger is how long heartbeats go on after a client last sent the member a request:
// they protect clients that wait on the member. A member whose clients are all silent (idle
// watches) is left to its probes, and the next request a client sends resumes its heartbeats.
const heartbeatLinger = time.Second

// lateRetries bounds the probes retried at once because the gateway saw their timeout late;
// after that many in a row the prober waits its interval as usual.
const lateRetries = 3

// fastReturnWindow is how long a down member is still probed every interval while others
// serve: a member restarted within it is back in rotation within an interval of answering.
const fastReturnWindow = time.Minute

// downProbeGap is the time between two probes of a member that has been down for downFor
// while others are healthy: the interval during the first minute, so that a restarted member
// is back within seconds, then the time it has been down beyond that minute, so that the gap
// doubles from probe to probe; always capped by the retry delay: a member gone for good costs
// one probe per retry delay within a few minutes.
func downProbeGap(downFor, interval, retryDelay time.Duration) time.Duration {
	return min(max(interval, downFor-fastReturnWindow), retryDelay)
}

// Prober probes one endpoint and reports every verdict to the Manager, which alone decides the
// endpoint's state. A down endpoint is probed again soon while others are healthy, backing off
// toward the retry delay (downProbeGap), and every interval while none is healthy, so the
// gateway serves again as soon as any member is back. It
// is a suture service and keeps no state across restarts: it reads the endpoint's state from
// the Table, which the Manager writes.
type Prober struct {
	ep       resolver.Endpoint
	gen      uint64 // the Manager's generation of this prober, sent with every report
	cfg      ProbeConfig
	table    *Table
	probeNow <-chan struct{} // probe at once
	grid     grid            // the instants at which every prober of the gateway probes and beats
	out      Reports
	log      *zap.Logger
	now      func() time.Time
	lastSent time.Time // when a client last sent the member bytes, as the prober saw
	// dialHeartbeat replaces the heartbeats' dial when not nil; tests inject faults with it.
	dialHeartbeat func(ctx context.Context, network, addr string) (net.Conn, error)
}

var _ suture.Service = (*Prober)(nil)

// String names the service in supervisor events.
func (p *Prober) String() string { return "prober/" + p.ep.String() }

// Serve probes until ctx ends.
func (p *Prober) Serve(ctx context.Context) error {
	chk := newChecker(p.ep, p.cfg.Mode, p.cfg.Timeout, p.cfg.TLS)
	chk.now = p.now
	defer chk.close()
	chk.scheme = p.table.Scheme(p.ep) // found before this prober's restart, if it was
	hb := newHeartbeater(&member.Client{Addr: p.ep.Addr(), TLS: chk.tls, Dial: p.dialHeartbeat, Drains: &chk.drains}, p.now)
	defer hb.close()
	late := 0
	for {
		began := p.now()
		v := chk.check(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if ce := p.log.Check(zap.DebugLevel, "probed"); ce != nil {
			ce.Write(zap.String("state", Outcome(v.state, v.noNews)), zap.String("reason", v.reason))
		}
		rep := Report{Endpoint: p.ep, Evidence: Probed, State: v.state, NoNews: v.noNews, Reason: v.reason, At: began,
			Scheme: chk.scheme, Note: chk.note}
		if err := p.send(ctx, rep); err != nil {
			return err
		}
		if v.noNews == member.SeenLate && late < lateRetries {
			late++
			continue
		}
		late = 0
		hb.speak(chk.scheme)
		if err := p.wait(ctx, hb, chk.canHeartbeat(), began); err != nil {
			return err
		}
	}
}

// send hands rep to the Manager.
func (p *Prober) send(ctx context.Context, rep Report) error {
	rep.Gen = p.gen
	select {
	case p.out <- rep:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wait sleeps until the next probe is due, sending heartbeats meanwhile while the member is not
// down and the gateway forwards connections to it. It returns early when asked to probe at once, or after
// reporting heartbeats lost, so that a probe follows at once.
func (p *Prober) wait(ctx context.Context, hb *heartbeater, reachable bool, began time.Time) error {
	misses := 0
	confirm := false // the last heartbeat was missed or seen too late, or a client woke the heartbeats: beat at once
	for {
		snap := p.table.Load()
		state, _ := snap.State(p.ep)
		every := p.cfg.Interval
		if state == Down && snap.HealthyCount() > 0 {
			downFor := fastReturnWindow + p.cfg.RetryDelay // since before this gateway knew
			if since := snap.Since(p.ep); !since.IsZero() {
				downFor = p.now().Sub(since)
			}
			every = downProbeGap(downFor, p.cfg.Interval, p.cfg.RetryDelay)
		}
		canBeat := p.cfg.Heartbeat > 0 && state != Down && p.cfg.Mode != CheckTCP && reachable
		var arrives <-chan struct{} // a client's first request after a rest: heartbeats resume at once
		beat := false
		if load := snap.LoadOf(p.ep); canBeat && load != nil {
			ch, sent := load.watch(hb.scheme())
			if sent {
				p.lastSent = p.now()
			}
			beat = load.Active() > 0 && p.now().Sub(p.lastSent) < heartbeatLinger
			if !beat {
				arrives = ch
			}
		}
		// The probe is due at left. A heartbeat in flight is read first: a member that froze
		// since must be found by its heartbeats, not by a probe that waits out its timeout
		// while no heartbeat runs.
		left := p.grid.next(began.Add(every/2), every).Sub(p.now()) // began+every once on the grid
		if left <= 0 && !confirm && !(beat && hb.inFlight()) {
			return nil
		}
		sleep := max(left, 0)
		if beat {
			sleep = min(sleep, p.grid.next(p.now(), p.cfg.Heartbeat).Sub(p.now()))
			if confirm {
				sleep = 0
			}
		}
		t := time.NewTimer(sleep)
		select {
		case <-t.C:
			probeDue := sleep >= left
			if !beat {
				return nil
			}
			var err error
			switch {
			case confirm:
				err = hb.beat(ctx, p.cfg.HeartbeatTimeout)
			case probeDue:
				err = hb.collect(ctx, p.cfg.HeartbeatTimeout) // the probe follows
			default:
				err = hb.pulse(ctx, p.cfg.HeartbeatTimeout)
			}
			wasConfirm := confirm
			confirm = false
			switch {
			case err == nil:
				misses = 0
				if probeDue && !wasConfirm {
					return nil
				}
			case ctx.Err() != nil:
				return ctx.Err()
			case member.IsLocalShortage(err):
				// The gateway could not ask: no news of the member. Wait a whole period.
			case isLate(err):
				confirm = true // not counted: ask again at once
			default:
				if misses++; misses >= heartbeatMisses {
					return p.send(ctx, Report{Endpoint: p.ep, Evidence: HeartbeatsLost, State: Down, Reason: err.Error()})
				}
				confirm = true
			}
		case <-p.probeNow:
			t.Stop()
			return nil
		case <-snap.Changed():
			t.Stop()
		case <-arrives:
			t.Stop()
			// A client talks to the member again after a rest, perhaps waiting on a member
			// that froze meanwhile: beat at once and wait for the answer, as a confirmation
			// does, rather than pulse at the next instant of the grid.
			confirm = true
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// grid is the instants at which the probers of one gateway probe and send heartbeats: the
// multiples of a period, shifted by the gateway's phase. Probers that wake at the same
// instant cost the host one wakeup rather than one each; the phase, drawn at random for each
// gateway, keeps the gateways of a fleet from probing a member all at once.
type grid struct{ phase time.Duration }

// newGrid returns a grid with a random phase.
func newGrid() grid { return grid{phase: time.Duration(rand.Int64N(int64(time.Hour)))} }

// next returns the first instant of the grid of period after t.
func (g grid) next(t time.Time, period time.Duration) time.Time {
	if period <= 0 {
		return t
	}
	into := time.Duration((t.UnixNano() - int64(g.phase)) % int64(period))
	if into < 0 {
		into += period
	}
	return t.Add(period - into)
}

// ProbeResult is the outcome of ProbeOnce.
type ProbeResult struct {
	State  State
	NoNews member.Fault  // set when every try said nothing of the member; State is then not read
	Reason string        // why it is not healthy
	Scheme member.Scheme // what the member serves
	Note   string        // what the probe found worth saying, though no fault
}

// ProbeOnce probes ep once as a Prober would.
func ProbeOnce(ctx context.Context, ep resolver.Endpoint, cfg ProbeConfig) ProbeResult {
	chk := newChecker(ep, cfg.Mode, cfg.Timeout, cfg.TLS)
	defer chk.close()
	var v verdict
	for range lateRetries + 1 {
		if v = chk.check(ctx); v.noNews != member.SeenLate {
			break
		}
	}
	return ProbeResult{State: v.state, NoNews: v.noNews, Reason: v.reason, Scheme: chk.scheme, Note: chk.note}
}
