// Command cors-extproc is an Envoy external-processing server that gives every route Kong's CORS
// plugin, with the policy carried in the route's metadata. See the README for how to wire it to
// Envoy.
//
// The steps `cors-extproc explain` prints cite docs/cors-semantics.md as "section N"; comments
// cite docs/envoy-extproc.md as "contract section N".
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped in at build time: `make build` and the Dockerfile pass
// -ldflags "-X main.version=$(git describe --tags --always --dirty)". buildVersion falls back to
// the module's build information when it is empty.
var version string

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errReported) {
			fmt.Fprintln(os.Stderr, "cors-extproc:", err)
		}
		os.Exit(1)
	}
}

// errReported is returned by a command that has already written its failure to its output
// (validate finding errors, say): main exits 1 without printing more.
var errReported = errors.New("failure already reported")
