// Command etcd is etcd's own entry point, built from its Go module so the test
// environment needs no prebuilt binary download.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
