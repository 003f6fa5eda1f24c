// Package health owns endpoint health. The Manager service is the single writer of the Table,
// which holds an immutable View: the Snapshot that the data path reads without locks, and the
// last probe of every endpoint, consistent with it. The Manager folds together the latest endpoint set from the resolver
// (one entry per address), the evidence of failed dials reported by the dialer, and the
// verdicts of one Prober per endpoint, which probes etcd's /readyz over a new connection
// (falling back to /health and TCP) and sends liveness heartbeats between probes while the
// gateway forwards connections to that member (its Load). The Manager alone applies rise and fall, sorts each
// endpoint into healthy, degraded or down, and holds back a member that keeps coming back. The
// Table also keeps a Load per address: the connections to it, counted with atomics by the
// dialer and the forwarder, from which a Tier picks the least loaded member.
package health
