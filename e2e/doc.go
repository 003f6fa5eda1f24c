// Package e2e holds the end-to-end tests: a real 3-member etcd v3.6 cluster in separate
// processes, the etcd-gateway binary in front of it, and real clients (clientv3 and etcdctl)
// through it. It is its own Go module so that etcd's server stays out of the gateway's go.mod.
package e2e
