// Package soak is the load, soak and drain-under-load suite of cors-extproc (issue #8): the real
// binary, built as it ships, started on loopback with a named-policy file,
// and driven by internal/envoytest, which plays Envoy's ext_proc filter over real TCP gRPC
// connections.
//
// The package holds test code only:
//
//   - TestSoak (soak_test.go) offers a fixed rate of HTTP requests in the realistic mix (70%
//     actual requests with an allowed Origin, 20% without Origin, 10% preflights) on routes that
//     carry their policy through different channels, checks every answer, and samples the
//     server's resident memory (/proc/PID/status) and goroutine count (go_goroutines on its
//     /metrics) over time. Memory and goroutines must stay flat, no request may fail, and no
//     time slice's p99 may come near Envoy's 200 ms per-message timeout.
//   - TestDrainUnderLoad (drain_test.go) sends SIGTERM in the middle of such a load: every
//     request that was in flight at the signal must complete, health must turn NOT_SERVING at
//     once, and the process must exit before its grace deadline.
//
// # Running
//
// `make soak` runs the suite (CORS_SOAK=1, a few minutes); SOAK_DURATION sets the soak's length
// (CI runs `SOAK_DURATION=30s make soak`) and SOAK_RATE its offered rate in HTTP requests per
// second. Without CORS_SOAK=1 the tests skip, so that `make test` builds, vets and lints this
// package without spending minutes on it. Every loop is bounded in time and count, and nothing
// leaves the loopback interface.
package soak
