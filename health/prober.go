package health

import (
	"context"
	"net"
	"time"

	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// Prober tries one unavailable endpoint again, every retry delay, until a TCP connect to it
// succeeds, and then reports it available. It idles while the endpoint is available. Client
// traffic never does this job, so one dead member costs clients nothing while others serve.
type Prober struct {
	ep         resolver.Endpoint
	retryDelay time.Duration
	dialer     net.Dialer
	down       <-chan struct{}
	out        Reports
	log        *zap.Logger
}

var _ suture.Service = (*Prober)(nil)

func newProber(ep resolver.Endpoint, retryDelay, timeout time.Duration, down <-chan struct{}, out Reports, log *zap.Logger) *Prober {
	return &Prober{
		ep:         ep,
		retryDelay: retryDelay,
		dialer:     net.Dialer{Timeout: timeout},
		down:       down,
		out:        out,
		log:        log.With(zap.Stringer("endpoint", ep)),
	}
}

// String names the service in supervisor events.
func (p *Prober) String() string { return "prober/" + p.ep.String() }

// Serve waits for the endpoint to go down, then probes it until it is back, forever.
func (p *Prober) Serve(ctx context.Context) error {
	for {
		select {
		case <-p.down:
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := p.untilUp(ctx); err != nil {
			return err
		}
	}
}

// untilUp probes every retry delay until a probe succeeds, then reports the endpoint available.
func (p *Prober) untilUp(ctx context.Context) error {
	t := time.NewTimer(p.retryDelay)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		err := p.probe(ctx)
		if err == nil {
			select {
			case p.out <- Report{Endpoint: p.ep, Available: true}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if ce := p.log.Check(zap.DebugLevel, "probe failed"); ce != nil {
			ce.Write(zap.Error(err))
		}
		t.Reset(p.retryDelay)
	}
}

func (p *Prober) probe(ctx context.Context) error {
	c, err := p.dialer.DialContext(ctx, "tcp", p.ep.Addr())
	if err != nil {
		return err
	}
	return c.Close()
}
