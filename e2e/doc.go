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
//     file are proved too (service_test.go).
//   - A test-only HTTP front (front_test.go) that plays Envoy: it picks the route by Host, turns
//     each browser request into an internal/envoytest request and hands it, and the upstream's
//     response, to the service through envoytest, the same ext_proc exchange Envoy's filter makes.
//     It is not a proxy and must not be used as one; it serves an in-process upstream API
//     (upstream_test.go).
//   - Chromium, driven over the DevTools protocol with chromedp (browser_test.go). Every *.test
//     host name is mapped to the front with --host-resolver-rules, so origins carry no port and
//     the browser reaches nothing else.
//   - The cases (cases_test.go) and the results page (results_test.go): e2e-results/results.html
//     and a screenshot of it taken by Chromium, e2e-results/results.png, at the repository root
//     (git-ignored), showing each case, what the page's JavaScript got, what the front saw, and
//     the verdict.
//
// # Running
//
// `make e2e` runs the suite (CORS_E2E=1 go test -race -count=1 -v ./e2e/...). The test runs only
// when CORS_E2E=1, so that `make test` (go test -race ./...) builds, vets and lints this package
// but does not start a browser. Chromium is /usr/bin/chromium from Debian's chromium package,
// found on PATH as chromium or chromium-browser, or named by CHROMIUM. Without it the suite
// skips with a one-line reason, except under CI (CI=true): .ci/run installs Chromium, so a
// missing browser there is a broken pipeline, and the suite fails.
package e2e
