// Package envoyfilter is what Envoy's ext_proc HTTP filter does to the data it exchanges with a
// processor, apart from the stream itself: the text it prints route and virtual-host metadata
// as (the xds.*_metadata attributes), and how it applies a reply's header mutation. Each
// follows the project's contract page, docs/envoy-extproc.md ("contract §N").
//
// internal/envoytest plays the stream with it in tests; `cors-extproc explain` applies the
// server's replies with it, and cmd/cors-extproc-bench prints route metadata with it. It has no
// test dependencies, so that those binaries link neither testing nor an in-memory gRPC
// transport.
package envoyfilter
