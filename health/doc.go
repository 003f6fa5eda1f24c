// Package health owns endpoint availability. The Manager service is the single writer of the
// Table, which holds an immutable Snapshot that the data path reads without locks. The Manager
// folds together the latest endpoint set from the resolver, failed dials reported by the dialer,
// and the verdicts of one Prober per endpoint, which tries a failed endpoint again after the
// retry delay.
package health
