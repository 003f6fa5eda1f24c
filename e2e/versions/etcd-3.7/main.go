// Command etcd is the etcd v3.7.3 server built from its published module, a member of the
// end-to-end tests' version matrix. It is a Go module of its own so that its etcd version does not
// change the one the rest of the tests use.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
