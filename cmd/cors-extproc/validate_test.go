package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func runCommand(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// Every outcome validate reports, one line each, and exit status 1 (errReported) on errors.
func TestValidateReportsEveryProblem(t *testing.T) {
	out, _, err := runCommand(t, "validate", "--policies", "testdata/policies.yaml", "testdata/routes.yaml")
	require.ErrorIs(t, err, errReported)
	assert.Equal(t, `testdata/policies.yaml: policy broken: ERROR: origins[0] "https://(x": invalid regex: missing closing )
testdata/policies.yaml: policy broken: ERROR: max_age -1: want a non-negative integer (seconds)
testdata/policies.yaml: policy loose: OK (valid)
testdata/policies.yaml: policy loose: WARNING: origins[0] "app.example.com": has no scheme, so it never matches: browsers send scheme://host[:port], e.g. "https://app.example.com"
testdata/policies.yaml: policy public: OK (valid)
testdata/policies.yaml: policy spa: OK (valid)
testdata/routes.yaml: virtual host api: ERROR: filter_metadata.cors: colour "red": unknown field
testdata/routes.yaml: route api/good: OK (policy "spa" via filter_metadata.cors.ref)
testdata/routes.yaml: route api/warned: OK (filter_metadata.cors)
testdata/routes.yaml: route api/warned: WARNING: credentials true: every site gets credentialed reads: with all origins allowed, the request's Origin is echoed in access-control-allow-origin
testdata/routes.yaml: route api/bad: ERROR: filter_metadata.cors: origins[0] "https://(bad": invalid regex: missing closing )
testdata/routes.yaml: route api/bad: ERROR: filter_metadata.cors: max_age 1.5: want a non-negative integer (seconds)
testdata/routes.yaml: route api/missing-ref: ERROR: filter_metadata.cors.ref: policy "nope" is not in the named-policy file
testdata/routes.yaml: route api/broken-ref: ERROR: policy "broken" via filter_metadata.cors.ref is unusable (see the named-policy file)
testdata/routes.yaml: route api/grpc: ERROR: x-cors-policy: policy JSON: unexpected end of JSON input
testdata/routes.yaml: route api/inherits: ERROR: the policy it inherits (virtual host api filter_metadata.cors) is unusable
`, out)
}

// The project's own deployment files are valid through every channel: Envoy routes, Envoy
// Gateway annotations and Istio's x-cors-policy.
func TestValidateDeployFiles(t *testing.T) {
	out, _, err := runCommand(t, "validate", "--policies", "../../deploy/k8s/base/policies.yaml", "../../deploy/envoy.yaml",
		"../../deploy/envoy-gateway/httproute.yaml", "../../deploy/istio/envoyfilter.yaml")
	require.NoError(t, err, out)
	assert.NotContains(t, out, "ERROR")
	assert.NotContains(t, out, "WARNING")
	assert.Contains(t, out, `../../deploy/envoy.yaml: route api/reports: OK (policy "reporting" via filter_metadata.cors.ref)`)
	assert.Contains(t, out, `../../deploy/envoy.yaml: route api/internal: OK (ext_proc disabled on the route)`)
	assert.Contains(t, out, `HTTPRoute demo/storefront: OK (policy "storefront" via annotation gateway.envoyproxy.io/cors-policy)`)
}

func TestValidateJSON(t *testing.T) {
	out, _, err := runCommand(t, "validate", "--format", "json", "--policies", "testdata/policies.yaml",
		"--default-policy", "gone", "testdata/routes.yaml")
	require.ErrorIs(t, err, errReported)
	var report struct {
		Findings []finding `json:"findings"`
		Errors   int       `json:"errors"`
		Warnings int       `json:"warnings"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &report))
	assert.Equal(t, 10, report.Errors)
	assert.Equal(t, 2, report.Warnings)
	assert.Contains(t, report.Findings, finding{File: "testdata/policies.yaml", Kind: "policy", Name: "gone",
		Status: "error", Message: "--default-policy names a policy the file lacks"})
	assert.Contains(t, report.Findings, finding{File: "testdata/routes.yaml", Kind: "route", Name: "api/good",
		Status: "ok", Message: `policy "spa" via filter_metadata.cors.ref`})
}

func TestValidateUsage(t *testing.T) {
	_, _, err := runCommand(t, "validate", "--format", "xml", "--default-policy", "x")
	require.EqualError(t, err, `--format "xml": want text or json
nothing to validate: give --policies FILE and/or Envoy configuration files
--default-policy "x": needs --policies`)

	out, _, err := runCommand(t, "validate", "testdata/missing.yaml")
	require.ErrorIs(t, err, errReported)
	assert.Equal(t, "testdata/missing.yaml: ERROR: open testdata/missing.yaml: no such file or directory\n", out)

	out, _, err = runCommand(t, "validate", "testdata/policies.yaml")
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(out, "WARNING: no route, virtual host or annotated resource found\n"), out)
}

// A directory stands for every YAML and JSON file under it.
func TestValidateDirectory(t *testing.T) {
	out, _, err := runCommand(t, "validate", "--policies", "../../deploy/k8s/base/policies.yaml", "../../deploy/envoy-gateway")
	require.NoError(t, err, out)
	assert.Contains(t, out, `../../deploy/envoy-gateway/httproute.yaml: HTTPRoute demo/storefront: OK (policy "storefront" via annotation gateway.envoyproxy.io/cors-policy)`)
	assert.NotContains(t, out, "ERROR")
}

// validate judges policies under the limits the server runs with.
func TestValidateLimits(t *testing.T) {
	out, _, err := runCommand(t, "validate", "--max-origins", "1", "--policies", "testdata/policies.yaml")
	require.ErrorIs(t, err, errReported)
	assert.Contains(t, out, `testdata/policies.yaml: policy spa: ERROR: origins […]: 2 elements, over the limit of 1`)
}

// validate checks each filter chain holding cors-extproc's filters against the server's mode:
// one-trip needs the header filters, two-phase only warns without them.
func TestValidateFilterChainAgainstMode(t *testing.T) {
	for _, mode := range []string{"two-phase", "one-trip"} {
		out, _, err := runCommand(t, "validate", "--mode", mode, "--policies", "../../deploy/k8s/base/policies.yaml", "../../deploy/envoy.yaml")
		require.NoError(t, err, out)
		assert.Contains(t, out, "../../deploy/envoy.yaml: filter chain ingress_http: OK (ext_proc and header filters fit --mode "+mode+")\n")
	}

	out, _, err := runCommand(t, "validate", "--mode", "one-trip", "testdata/chain-two-phase.yaml")
	require.ErrorIs(t, err, errReported)
	assert.Contains(t, out, "testdata/chain-two-phase.yaml: filter chain ingress: ERROR: mode one-trip: no header filter writes access-control-allow-credentials, access-control-allow-origin, access-control-expose-headers, vary from cors-extproc metadata after ext_proc, so responses lack them\n")

	out, _, err = runCommand(t, "validate", "testdata/chain-two-phase.yaml")
	require.NoError(t, err, out)
	assert.Contains(t, out, "testdata/chain-two-phase.yaml: filter chain ingress: WARNING: mode two-phase without a header filter")

	_, _, err = runCommand(t, "validate", "--mode", "one-way", "testdata/chain-two-phase.yaml")
	require.EqualError(t, err, `--mode: unknown mode "one-way": want two-phase or one-trip`)
}
