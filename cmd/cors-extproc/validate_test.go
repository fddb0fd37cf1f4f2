package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
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
	require.EqualError(t, err, `--mode "one-way": unknown mode "one-way": want two-phase or one-trip`)
}

// withStdin runs f with standard input reading content.
func withStdin(t *testing.T, content []byte, f func()) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "stdin")
	require.NoError(t, os.WriteFile(file, content, 0o600))
	in, err := os.Open(file)
	require.NoError(t, err)
	defer in.Close()
	defer func(old *os.File) { os.Stdin = old }(os.Stdin)
	os.Stdin = in
	f()
}

// `kubectl kustomize deploy/k8s/base | cors-extproc validate -`: the manifests come on standard
// input, and the named-policy file is the ConfigMap key the Deployment's --policies names.
func TestValidateRenderedManifestsOnStdin(t *testing.T) {
	rendered := renderedBase(t)
	var out string
	var err error
	withStdin(t, rendered, func() { out, _, err = runCommand(t, "validate", "-") })
	require.NoError(t, err, out)
	assert.Regexp(t, `(?m)^-: ConfigMap cors-extproc/cors-extproc-policies-\w+: policies.yaml: policy reporting: OK \(valid\)$`, out)
	assert.NotContains(t, out, "no route, virtual host or annotated resource found")

	// A broken policy in the ConfigMap fails validate, and refs resolve in it.
	broken := strings.Replace(string(rendered), "    reporting:\n", "    reporting:\n      colour: red\n", 1)
	require.NotEqual(t, string(rendered), broken)
	routes := "\n---\n" + `virtual_hosts: [{name: v, routes: [{name: r, metadata: {filter_metadata: {cors: {ref: storefront}}}}]}]`
	withStdin(t, []byte(broken+routes), func() { out, _, err = runCommand(t, "validate", "-") })
	require.ErrorIs(t, err, errReported)
	assert.Regexp(t, `(?m)^-: ConfigMap cors-extproc/cors-extproc-policies-\w+: policies.yaml: policy reporting: ERROR: colour "red": unknown field$`, out)
	assert.Contains(t, out, `-: route v/r: OK (policy "storefront" via filter_metadata.cors.ref)`)
}

// renderedBase is deploy/k8s/base as kustomize renders it, the ConfigMap's name hashed: with
// kubectl where it is installed, else a rendering of the same shape.
func renderedBase(t *testing.T) []byte {
	t.Helper()
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		out, err := exec.Command(kubectl, "kustomize", "../../deploy/k8s/base").Output()
		require.NoError(t, err)
		return out
	}
	policies, err := os.ReadFile("../../deploy/k8s/base/policies.yaml")
	require.NoError(t, err)
	cm, err := yaml.Marshal(map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "cors-extproc-policies-abc123", "namespace": "cors-extproc"},
		"data":     map[string]any{"policies.yaml": string(policies)}})
	require.NoError(t, err)
	return append(cm, []byte(`---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cors-extproc, namespace: cors-extproc}
spec:
  template:
    spec:
      containers:
      - name: cors-extproc
        args: [--policies=/etc/cors-extproc/policies.yaml]
        volumeMounts: [{name: policies, mountPath: /etc/cors-extproc}]
      volumes: [{name: policies, configMap: {name: cors-extproc-policies-abc123}}]
`)...)
}

// --strict fails on warnings; without it they pass.
func TestValidateStrict(t *testing.T) {
	policies := writeFile(t, "policies.yaml", "loose: {origins: [app.example.com]}\n")
	out, _, err := runCommand(t, "validate", "--policies", policies)
	require.NoError(t, err)
	assert.Contains(t, out, `policy loose: WARNING: origins[0] "app.example.com": has no scheme, so it never matches`)
	out2, _, err := runCommand(t, "validate", "--strict", "--policies", policies)
	require.ErrorIs(t, err, errReported)
	assert.Equal(t, out, out2)
}

// A ref that cannot resolve because no named-policy file was given says so.
func TestValidateRefWithoutPolicies(t *testing.T) {
	out, _, err := runCommand(t, "validate", "testdata/routes.yaml")
	require.ErrorIs(t, err, errReported)
	assert.Contains(t, out, `testdata/routes.yaml: route api/good: ERROR: policy "spa" via filter_metadata.cors.ref cannot be checked: no named-policy file was given (--policies FILE)`)
	assert.NotContains(t, out, "is not in the named-policy file")
}

// A route whose policy source is over --max-policy-bytes fails validate as it fails in the
// server; the size is the metadata's as Envoy sends it.
func TestValidateMaxPolicyBytes(t *testing.T) {
	routes := writeFile(t, "routes.yaml", `virtual_hosts:
- name: v
  routes:
  - name: meta
    metadata: {filter_metadata: {cors: {origins: ["https://app.example.com"]}}}
  - name: grpc
    typed_per_filter_config:
      envoy.filters.http.ext_proc:
        overrides: {grpc_initial_metadata: [{key: x-cors-policy, value: '{"origins": ["https://app.example.com"]}'}]}
`)
	// 143 bytes: filter_metadata { key: "cors" value { fields { key: "origins" value { list_value {
	// values { string_value: "https://app.example.com" } } } } } }
	out, _, err := runCommand(t, "validate", "--max-policy-bytes", "143", routes)
	require.NoError(t, err, out)
	out, _, err = runCommand(t, "validate", "--max-policy-bytes", "142", routes)
	require.ErrorIs(t, err, errReported)
	assert.Contains(t, out, "route v/meta: ERROR: metadata: policy source of 143 bytes, over the limit of 142")
	assert.Contains(t, out, "route v/grpc: OK (ExtProcPerRoute grpc_initial_metadata x-cors-policy)")
	out, _, err = runCommand(t, "validate", "--max-policy-bytes", "39", routes)
	require.ErrorIs(t, err, errReported)
	assert.Contains(t, out, "route v/grpc: ERROR: x-cors-policy: policy source of 40 bytes, over the limit of 39")
}

// The ext_proc filter's per-route configuration is looked for under --filter-name.
func TestValidateFilterName(t *testing.T) {
	routes := writeFile(t, "routes.yaml", `virtual_hosts:
- name: v
  routes:
  - name: r
    typed_per_filter_config:
      cors-ext: {disabled: true}
`)
	out, _, err := runCommand(t, "validate", routes)
	require.NoError(t, err)
	assert.Contains(t, out, "route v/r: OK (no CORS policy)")
	out, _, err = runCommand(t, "validate", "--filter-name", "cors-ext", routes)
	require.NoError(t, err)
	assert.Contains(t, out, "route v/r: OK (ext_proc disabled on the route)")
}
