// Command etcd is the etcd v3.6 server built from the published module, so that the end-to-end tests and
// the benchmarks run real members and etcd's own `etcd gateway start` from one build.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
