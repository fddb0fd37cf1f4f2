// Package e2e is the browser end-to-end suite of cors-extproc (issue #5). Browsers enforce CORS,
// so a browser is the final judge of the headers the service produces: the suite has headless
// Chromium load a page from one origin and call APIs on other origins, and asserts what the
// page's JavaScript could do (fetch resolves and the body and headers are readable) or could not
// do (fetch rejects with TypeError), together with what reached the wire.
//
// The package holds test code only. The parts:
//
//   - The real service: ./cmd/cors-extproc is built into a temporary folder and started on
//     loopback with free ports and a named-policy file, so that its flags and the --policies
//     file are proved too (e2e_test.go).
//   - Two fronts stand where Envoy stands, and every case runs through each (front_test.go):
//     the envoytest front, a test-only HTTP server that plays Envoy with internal/envoytest
//     (the same ext_proc exchange Envoy's filter makes, fast and without Envoy); and a real
//     Envoy (envoyfront_test.go), the newest pinned release (ENVOY_BIN picks another), running
//     deploy/envoy.yaml's listener, HTTP filter chain and clusters with the suite's route table,
//     the service behind an internal/realenvoy Recorder and in the --mode that
//     deploy/docker-compose.yaml gives it beside envoy.yaml (one-trip: the header filters write
//     the CORS headers), where the envoytest front runs it in its default mode (two-phase). Both
//     serve the in-process upstream API (upstream_test.go). The real Envoy also makes its own
//     replies after the request phase on five routes (ownReply in routes_test.go: a cluster
//     without endpoints, a route timeout shorter than a slow upstream, direct_response, and an
//     RBAC and a local_ratelimit filter the test places after the shipped filters); envoytest
//     makes none, so those cases are real-Envoy only and its results page lists them as not
//     played.
//   - Chromium, driven over the DevTools protocol with chromedp (browser_test.go). Every *.test
//     host name is mapped to the front with --host-resolver-rules, so origins carry no port and
//     the browser reaches nothing else. What the browser sent and received is Chromium's own
//     account (the Network domain's ExtraInfo events, wire_test.go); what the service and the
//     upstream did is the front's record (for the real Envoy: the Recorder's streams and the
//     upstream's log). The two are joined request by request.
//   - The cases (cases_test.go) and the results pages (results_test.go): for each front,
//     e2e-results/results-FRONT.html and a screenshot of it taken by Chromium,
//     e2e-results/results-FRONT.png, at the repository root (git-ignored; FRONT is envoytest or
//     envoy-VERSION), naming the front and the Envoy release, and showing each case, what the
//     page's JavaScript got, what went over the wire, and the verdict.
//
// # Running
//
// `make e2e` runs the suite (CORS_E2E=1 go test -race -count=1 -v ./e2e/...); the two fronts
// run side by side. The test runs only when CORS_E2E=1, so that `make test` (go test -race
// ./...) builds, vets and lints this package but does not start a browser. Chromium is
// /usr/bin/chromium from Debian's chromium package, found on PATH as chromium or
// chromium-browser, or named by CHROMIUM. Envoy comes from `make envoy` (internal/realenvoy).
// Without Chromium the suite skips, and without Envoy the real-Envoy front skips, each with a
// one-line reason, except under CI (CI=true): .ci/run installs both, so a missing one there is
// a broken pipeline, and the suite fails.
package e2e
