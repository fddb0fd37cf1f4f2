package envoyconfig

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// goodChain is the filter chain of the documented snippet (deploy/envoy.yaml's), in short.
const goodChain = `
stat_prefix: ingress
http_filters:
- name: envoy.filters.http.ext_proc
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
    allow_mode_override: true
    metadata_options: {receiving_namespaces: {untyped: [cors-extproc]}}
- name: cors-extproc.vary
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher
    extension_config:
      name: envoy.filters.http.header_mutation
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
        mutations:
          response_mutations:
          - append: {header: {key: vary, value: "%DYNAMIC_METADATA(cors-extproc:vary)%"}, append_action: APPEND_IF_EXISTS_OR_ADD}
- name: cors-extproc.headers
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
    mutations:
      response_mutations:
      - append: {header: {key: access-control-allow-origin, value: "%DYNAMIC_METADATA(cors-extproc:access-control-allow-origin)%"}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
      - append: {header: {key: access-control-allow-credentials, value: "%DYNAMIC_METADATA(cors-extproc:access-control-allow-credentials)%"}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
      - append: {header: {key: access-control-expose-headers, value: "%DYNAMIC_METADATA(cors-extproc:access-control-expose-headers)%"}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
- name: envoy.filters.http.router
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
`

// without drops the lines holding any of parts from goodChain.
func without(parts ...string) string {
	var out []string
	for _, l := range strings.Split(goodChain, "\n") {
		keep := true
		for _, p := range parts {
			keep = keep && !strings.Contains(l, p)
		}
		if keep {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestChainCheck(t *testing.T) {
	// The Vary write in a plain header_mutation filter, without the matcher.
	plainVary := strings.Replace(goodChain, `    "@type": type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher
    extension_config:
      name: envoy.filters.http.header_mutation
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
        mutations:
          response_mutations:
          - append: {header: {key: vary`, `    "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
    mutations:
      response_mutations:
      - append: {header: {key: vary`, 1)
	for _, tc := range []struct {
		name           string
		yaml           string
		oneTrip        bool
		errs, warnings []string // substrings, one per finding
	}{
		{name: "snippet, one-trip", yaml: goodChain, oneTrip: true},
		{name: "snippet, two-phase", yaml: goodChain},
		{name: "no header filters, one-trip", yaml: without("append:"), oneTrip: true,
			errs: []string{"mode one-trip: no header filter writes access-control-allow-credentials, access-control-allow-origin, access-control-expose-headers, vary"}},
		{name: "no header filters, two-phase", yaml: without("append:"),
			warnings: []string{"Envoy 1.34 to 1.36 send their own replies"}},
		{name: "namespace not received, one-trip", yaml: strings.Replace(goodChain, "untyped: [cors-extproc]", "untyped: [other]", 1), oneTrip: true,
			errs: []string{`receiving_namespaces.untyped lacks "cors-extproc"`}},
		{name: "namespace not received, two-phase", yaml: strings.Replace(goodChain, "untyped: [cors-extproc]", "untyped: [other]", 1),
			warnings: []string{`receiving_namespaces.untyped lacks "cors-extproc"`}},
		{name: "mode override not allowed", yaml: without("allow_mode_override"), oneTrip: true,
			warnings: []string{"allow_mode_override is not true"}},
		{name: "vary without the matcher", yaml: plainVary, oneTrip: true,
			errs: []string{"cors-extproc.vary adds Vary: Origin even when the upstream's Vary lists it"}},
		{name: "ACAO appended", yaml: strings.Replace(goodChain, "cors-extproc:access-control-allow-origin)%\"}, append_action: OVERWRITE_IF_EXISTS_OR_ADD", "cors-extproc:access-control-allow-origin)%\"}", 1), oneTrip: true,
			errs: []string{`writes access-control-allow-origin with append_action ""`}},
		{name: "other namespace", yaml: strings.ReplaceAll(goodChain, "%DYNAMIC_METADATA(cors-extproc:", "%DYNAMIC_METADATA(x:"), oneTrip: true,
			errs: []string{"from x:access-control-allow-credentials", "from x:access-control-allow-origin", "from x:access-control-expose-headers", "from x:vary"}},
		{name: "header filters after the router", yaml: strings.Replace(strings.Replace(goodChain,
			"- name: envoy.filters.http.router\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n", "", 1),
			"- name: cors-extproc.vary", "- name: envoy.filters.http.router\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n- name: cors-extproc.vary", 1), oneTrip: true,
			errs: []string{"cors-extproc.headers comes after the router", "cors-extproc.headers comes after the router", "cors-extproc.headers comes after the router", "cors-extproc.vary comes after the router"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chains, err := ReadChains("f.yaml", []byte(tc.yaml))
			require.NoError(t, err)
			require.Len(t, chains, 1)
			assert.Equal(t, "ingress", chains[0].Name)
			errs, warnings := chains[0].Check(tc.oneTrip, "cors-extproc")
			assertFindings(t, tc.errs, errs)
			assertFindings(t, tc.warnings, warnings)
		})
	}
}

// assertFindings checks that each finding holds its wanted substring, in order.
func assertFindings(t *testing.T, want, got []string) {
	t.Helper()
	if !assert.Len(t, got, len(want), "%q", got) {
		return
	}
	for i := range want {
		assert.Contains(t, got[i], want[i])
	}
}

// A header filter in front of ext_proc runs after it on the response path, and misses the
// replies of filters between them.
func TestChainCheckOrder(t *testing.T) {
	y := strings.Replace(goodChain, "- name: cors-extproc.headers", "- name: cors-extproc.headers-moved", 1)
	lines := strings.Split(y, "\n")
	// Move the ext_proc filter (its four lines after "http_filters:") to just before the router.
	start := 2
	ext := append([]string(nil), lines[start+1:start+6]...)
	rest := append(append([]string(nil), lines[:start+1]...), lines[start+6:]...)
	var out []string
	for _, l := range rest {
		if l == "- name: envoy.filters.http.router" {
			out = append(out, ext...)
		}
		out = append(out, l)
	}
	chains, err := ReadChains("f.yaml", []byte(strings.Join(out, "\n")))
	require.NoError(t, err)
	require.Len(t, chains, 1)
	errs, _ := chains[0].Check(true, "cors-extproc")
	require.NotEmpty(t, errs)
	for _, e := range errs {
		assert.Contains(t, e, "comes before ext_proc")
	}
}

// A chain without cors-extproc's filters is not reported.
func TestChainsIgnoresOtherChains(t *testing.T) {
	chains, err := ReadChains("f.yaml", []byte(`http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`))
	require.NoError(t, err)
	assert.Empty(t, chains)
}
