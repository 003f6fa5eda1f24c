// Package status serves the operator's view of a running gateway on --metrics-addr: Prometheus
// metrics on /metrics, /healthz (the process is alive), /readyz (at least one endpoint is
// healthy, and not draining) and /status (every endpoint, as JSON). It reads the gateway's
// state when asked (the health Table's View, the Forwarder's counters, the source's lookups,
// the member list, the rebalancer) and owns only the dial metrics (DialMetrics), which the
// dialer writes, and their retention.
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"

	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/internal/version"
	"github.com/etcd-gateway/etcd-gateway/listener"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// Sources is the gateway state the status server reads.
type Sources struct {
	Table     *health.Table
	Forwarder *listener.Forwarder
	// Discovery counts SRV lookups; nil without --discovery-srv.
	Discovery interface{ Lookups() (total, failed uint64) }
	// StaticSource names where endpoints not found through SRV come from: "endpoints" or
	// "endpoints-file".
	StaticSource string
	// Rebalancer says whether a rebalancing round runs and how uneven the loads are; nil with
	// --rebalance=false.
	Rebalancer interface {
		Balancing() bool
		Spread() float64
	}
	// MemberList follows the cluster's member list; nil without --endpoints-auto-sync-interval.
	MemberList interface {
		Syncs() (total, failed uint64)
		Member(resolver.HostPort) (resolver.Member, bool)
	}
}

// Server is the status HTTP server, a suture service. Its socket is bound by Listen before the
// tree starts, so a restart keeps the port.
type Server struct {
	ln      *net.TCPListener
	src     Sources
	dials   *DialMetrics
	gateway *gatewayCollector
	log     *zap.Logger
	// draining is set when the gateway stops accepting: /readyz answers 503 from then on.
	draining atomic.Bool
}

// Drain makes /readyz answer 503 "draining", for a gateway that no longer accepts clients.
func (s *Server) Drain() { s.draining.Store(true) }

var _ suture.Service = (*Server)(nil)

// Listen binds addr for the status server.
func Listen(ctx context.Context, addr string) (*net.TCPListener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// New returns the status server of src on ln, which exports dials too. It never closes ln;
// whoever bound it does.
func New(ln *net.TCPListener, src Sources, dials *DialMetrics, log *zap.Logger) *Server {
	s := &Server{ln: ln, src: src, dials: dials, log: log.Named("status")}
	s.gateway = newGatewayCollector(src, s.dials)
	return s
}

// String names the service in supervisor events.
func (s *Server) String() string { return "status/" + s.ln.Addr().String() }

// routes are the server's paths and their answers.
func (s *Server) routes() map[string]route {
	return map[string]route{
		"/metrics": s.metrics,
		"/healthz": func(r *reply) { fmt.Fprintln(r, "ok") },
		"/readyz":  s.readyz,
		"/status":  s.status,
	}
}

// Serve answers until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.ln.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("reset accept deadline: %w", err)
	}
	return s.serveHTTP(ctx, s.routes())
}

// metrics answers with every family in Prometheus' text format: the gateway's, then the Go
// runtime's and the process's. A process family whose source cannot be read is left out and
// the scrape of everything else still answers 200.
func (s *Server) metrics(r *reply) {
	var e exposition
	s.gateway.addTo(&e)
	addGoFamilies(&e)
	addProcessFamilies(&e)
	r.contentType = contentType
	r.Write(e.bytes())
}

// readyz answers 200 when at least one endpoint is healthy, 503 with the reason otherwise.
func (s *Server) readyz(w *reply) {
	if s.draining.Load() {
		w.status = http.StatusServiceUnavailable
		fmt.Fprintln(w, "not ready: draining")
		return
	}
	snap := s.src.Table.Load()
	if snap.HealthyCount() > 0 {
		fmt.Fprintf(w, "ok: %d of %d endpoints healthy\n", snap.HealthyCount(), len(snap.Known()))
		return
	}
	w.status = http.StatusServiceUnavailable
	if len(snap.Known()) == 0 {
		fmt.Fprintln(w, "not ready: no endpoint known yet")
		return
	}
	var parts []string
	for _, ep := range snap.Known() {
		state, _ := snap.State(ep)
		part := ep.String() + " " + state.String()
		if r := snap.Reason(ep); r != "" {
			part += " (" + r + ")"
		}
		parts = append(parts, part)
	}
	fmt.Fprintf(w, "not ready: no endpoint healthy: %s\n", strings.Join(parts, "; "))
}

// Report is the /status document.
type Report struct {
	Version  string `json:"version"`
	Ready    bool   `json:"ready"`
	Draining bool   `json:"draining"`
	// Rebalancing: a rebalancing round runs, the healthy members' loads being uneven.
	Rebalancing bool `json:"rebalancing"`
	// Rotation is what new connections go to: "healthy", "degraded", "last-resort" (no endpoint
	// healthy or degraded: the gateway serves from whatever answers and evicts nothing) or
	// "none" (no endpoint known yet).
	Rotation  string           `json:"rotation"`
	Endpoints []EndpointReport `json:"endpoints"`
}

// EndpointReport is one endpoint in the /status document.
type EndpointReport struct {
	Endpoint string `json:"endpoint"`
	Source   string `json:"source"` // "srv", "endpoints", "endpoints-file" or "member-list"
	// MemberName and MemberID (hexadecimal, as etcdctl prints it) name the member of an
	// endpoint from the member list.
	MemberName string  `json:"member_name,omitempty"`
	MemberID   string  `json:"member_id,omitempty"`
	Target     string  `json:"srv_target,omitempty"`
	Priority   *uint16 `json:"srv_priority,omitempty"` // only for SRV members
	Weight     *uint16 `json:"srv_weight,omitempty"`
	// Scheme is what the member serves clients, as the probes found: "http", "https" or
	// "unknown".
	Scheme string `json:"scheme"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Note is what the last probe found worth saying though no fault: a certificate for other
	// names than the member's, a member judged alive by its TLS key alone.
	Note              string     `json:"note,omitempty"`
	InRotation        bool       `json:"in_rotation"`
	LastProbe         *ProbeJSON `json:"last_probe,omitempty"`
	ActiveConnections int        `json:"active_connections"`
}

// ProbeJSON is the last probe of an endpoint.
type ProbeJSON struct {
	At     time.Time `json:"at"`
	Result string    `json:"result"`
	Reason string    `json:"reason,omitempty"`
}

func (s *Server) status(w *reply) {
	view := s.src.Table.View()
	snap := view.Snapshot()
	counters := s.src.Forwarder.Counters()
	draining := s.draining.Load()
	rep := Report{Version: version.Version(), Ready: snap.HealthyCount() > 0 && !draining, Draining: draining,
		Rotation: string(snap.Rotation()), Endpoints: []EndpointReport{}}
	if s.src.Rebalancer != nil {
		rep.Rebalancing = s.src.Rebalancer.Balancing()
	}
	for _, ep := range snap.Known() {
		state, _ := snap.State(ep)
		er := EndpointReport{
			Endpoint:          ep.String(),
			Source:            s.src.StaticSource,
			Target:            ep.Target,
			State:             state.String(),
			Reason:            snap.Reason(ep),
			InRotation:        slices.Contains(snap.Available(), ep),
			ActiveConnections: counters[ep.HostPort()].Active,
		}
		if ep.Target != "" {
			er.Source = "srv"
			er.Priority, er.Weight = &ep.Priority, &ep.Weight
		}
		if ml := s.src.MemberList; ml != nil {
			if mb, ok := ml.Member(ep.HostPort()); ok {
				er.Source, er.MemberName, er.MemberID = "member-list", mb.Name, fmt.Sprintf("%x", mb.ID)
			}
		}
		er.Scheme = view.Scheme(ep).String()
		if p, ok := view.LastProbe(ep); ok {
			er.LastProbe = &ProbeJSON{At: p.At.UTC(), Result: p.Outcome(), Reason: p.Reason}
			er.Note = p.Note
		}
		rep.Endpoints = append(rep.Endpoints, er)
	}
	w.contentType = "application/json"
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		s.log.Error("encoding /status failed", zap.Error(err)) // a bug: the document is ours
	}
}
