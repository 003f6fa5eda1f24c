// Command etcdctl is etcd's command-line client, built from the published module for the end-to-end tests.
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() { ctlv3.MustStart() }
