package health

import (
	"testing"
	"time"

	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// A probe makes a new View around the same Snapshot: those waiting for probes wake, those
// waiting for a change do not, and one View gives the states and the last probes together.
func TestTableViewOfProbes(t *testing.T) {
	table := NewTable()
	ep := resolver.Endpoint{Host: "127.0.0.1", Port: 2379}
	table.store(newSnapshot([]resolver.Endpoint{ep}, []State{Healthy}, []string{""}, []time.Time{{}}, []*Load{{}}))
	before := table.View()
	probed := table.Probed()
	table.recordProbe(ep.HostPort(), Probe{At: time.Unix(1, 0), Result: Degraded, Scheme: member.SchemeTLS})
	select {
	case <-probed:
	default:
		t.Error("recording a probe did not wake those waiting for probes")
	}
	select {
	case <-before.Snapshot().Changed():
		t.Error("recording a probe woke those waiting for a change of state")
	default:
	}
	after := table.View()
	if after.Snapshot() != before.Snapshot() {
		t.Error("recording a probe replaced the Snapshot")
	}
	if _, ok := before.LastProbe(ep); ok {
		t.Error("a View taken before the probe sees it")
	}
	if p, ok := after.LastProbe(ep); !ok || p.Result != Degraded || after.Scheme(ep) != member.SchemeTLS {
		t.Errorf("the View after the probe reads %+v, %v, scheme %s", p, ok, after.Scheme(ep))
	}
	table.forgetProbes(ep.HostPort())
	if _, ok := table.LastProbe(ep); ok {
		t.Error("a forgotten probe is still read")
	}
	if _, ok := after.LastProbe(ep); !ok {
		t.Error("forgetting a probe changed a View already taken")
	}
}
