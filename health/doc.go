// Package health owns endpoint health. The Manager service is the single writer of the Table,
// which holds an immutable Snapshot that the data path reads without locks. The Manager folds
// together the latest endpoint set from the resolver, failed dials reported by the dialer, and
// the verdicts of one Prober per endpoint, which probes etcd's /readyz (falling back to /health
// and TCP), sends liveness heartbeats between probes, and sorts the endpoint into healthy,
// degraded or down.
package health
