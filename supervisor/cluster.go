package supervisor

import (
	"github.com/etcd-gateway/etcd-gateway/health"
	"github.com/etcd-gateway/etcd-gateway/member"
	"github.com/etcd-gateway/etcd-gateway/resolver"
)

// clusterView shows the member-list follower the members' health, as the health table has it.
type clusterView struct{ table *health.Table }

var _ resolver.ClusterView = clusterView{}

// Healthy returns the healthy members, and a channel closed at the next change of state.
func (v clusterView) Healthy() ([]resolver.Endpoint, <-chan struct{}) {
	snap := v.table.Load()
	return v.inState(snap, health.Healthy), snap.Changed()
}

// Down returns the members down now.
func (v clusterView) Down() []resolver.Endpoint { return v.inState(v.table.Load(), health.Down) }

func (v clusterView) inState(snap *health.Snapshot, want health.State) []resolver.Endpoint {
	var out []resolver.Endpoint
	for _, ep := range snap.Known() {
		if st, _ := snap.State(ep); st == want {
			out = append(out, ep)
		}
	}
	return out
}

// Scheme returns what the member serves, as the Table knows it.
func (v clusterView) Scheme(ep resolver.Endpoint) member.Scheme { return v.table.Scheme(ep) }
