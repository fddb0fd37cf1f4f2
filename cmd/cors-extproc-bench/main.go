// Command cors-extproc-bench drives a running cors-extproc (or any ext_proc server) the way
// Envoy does, one stream per HTTP request, and prints requests/s and latency percentiles.
//
//	go run ./cmd/cors-extproc-bench -addr localhost:9002 -concurrency 64 -duration 10s
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "cors-extproc-bench:", err)
		os.Exit(2)
	}
}
