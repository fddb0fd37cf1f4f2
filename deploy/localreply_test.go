package deploy_test

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// Replies Envoy makes itself after the request phase (docs/cors-semantics.md section 8): the
// header filters of envoy.yaml decorate them in both modes. The routes below are added to the
// table by withCheckRoutes, with an RBAC and a local rate limit filter placed after the header
// filters, before the router, as an operator would place them.

// Kinds of reply Envoy makes itself (routeCase.local).
const (
	localNoUpstream = "no healthy upstream" // router 503: a cluster without endpoints
	localTimeout    = "upstream timeout"    // router 504: the route's timeout passes
	localDirect     = "direct_response"     // a route answered by Envoy
	localRBAC       = "rbac"                // 403 from the RBAC filter
	localRateLimit  = "local rate limit"    // 429 from the local_ratelimit filter
)

// localPolicy is the policy of the local-reply routes: a list with credentials and exposed
// headers, so that every header the decoration writes is there.
var localPolicy = map[string]any{
	"origins": []any{"https://app.example.com", "https://other.example.com"}, "credentials": true,
	"exposed_headers": []any{"x-total"},
}

// granted is what localPolicy gives https://app.example.com on any response.
var granted = h(acao, "https://app.example.com", acac, "true", aceh, "x-total", vary, "Origin")

var localReplyCases = []routeCase{
	{name: "503 no healthy upstream decorated", route: "local-503", local: localNoUpstream,
		headers: [][2]string{origin("https://app.example.com")}, status: 503, cors: granted},
	{name: "504 upstream timeout decorated", route: "local-504", local: localTimeout, upstream: "slow",
		headers: [][2]string{origin("https://app.example.com")}, status: 504, cors: granted},
	{name: "direct_response decorated", route: "local-direct", local: localDirect,
		headers: [][2]string{origin("https://app.example.com")}, status: 200, cors: granted},
	{name: "RBAC 403 after ext_proc decorated", route: "local-403", local: localRBAC,
		headers: [][2]string{origin("https://app.example.com")}, status: 403, cors: granted},
	{name: "local rate limit 429 decorated", route: "local-429", local: localRateLimit,
		headers: [][2]string{origin("https://app.example.com")}, status: 429, cors: granted},
	{name: "503 for a rejected origin: no ACAO", route: "local-503", local: localNoUpstream,
		headers: [][2]string{origin("https://evil.test")}, status: 503, cors: h(acac, "true", aceh, "x-total", vary, "Origin")},
	{name: "403 for a rejected origin: no ACAO", route: "local-403", local: localRBAC,
		headers: [][2]string{origin("https://evil.test")}, status: 403, cors: h(acac, "true", aceh, "x-total", vary, "Origin")},
	{name: "503 without a policy: nothing", route: "local-503-no-policy", local: localNoUpstream,
		headers: [][2]string{origin("https://app.example.com")}, status: 503, cors: h()},
}

// localRoutes are the routes of localReplyCases.
func localRoutes(t *testing.T) []*routev3.Route {
	t.Helper()
	var routes []*routev3.Route
	for _, y := range []string{
		`{name: local-503, match: {prefix: /local-503/}, route: {cluster: no-endpoints}}`,
		`{name: local-503-no-policy, match: {prefix: /local-503-no-policy/}, route: {cluster: no-endpoints}}`,
		`{name: local-504, match: {prefix: /local-504/}, route: {cluster: demo-upstream, timeout: 0.3s}}`,
		`{name: local-direct, match: {prefix: /local-direct/}, direct_response: {status: 200, body: {inline_string: direct}}}`,
		`{name: local-403, match: {prefix: /local-403/}, route: {cluster: demo-upstream},
		  typed_per_filter_config: {envoy.filters.http.rbac: {
		    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute,
		    rbac: {rules: {action: DENY, policies: {all: {permissions: [{any: true}], principals: [{any: true}]}}}}}}}`,
		`{name: local-429, match: {prefix: /local-429/}, route: {cluster: demo-upstream},
		  typed_per_filter_config: {envoy.filters.http.local_ratelimit: {
		    "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit,
		    stat_prefix: local_429,
		    token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 3600s},
		    filter_enabled: {default_value: {numerator: 100, denominator: HUNDRED}, runtime_key: local_429_enabled},
		    filter_enforced: {default_value: {numerator: 100, denominator: HUNDRED}, runtime_key: local_429_enforced}}}}`,
	} {
		r := &routev3.Route{}
		decodeProto(t, "local route", []byte(y), r)
		validate(t, r.GetName(), r)
		if r.GetName() != "local-503-no-policy" {
			r.Metadata = policyMetadata(t, localPolicy)
		}
		routes = append(routes, r)
	}
	return routes
}

// withLocalReplyFilters places an RBAC filter (allowing all but where a route denies) and a
// local rate limit filter (limiting only where a route says) before the router, and adds the
// cluster without endpoints that local-503 routes to.
func withLocalReplyFilters(t *testing.T, c envoyConfig) {
	t.Helper()
	var filters []*hcmv3.HttpFilter
	for _, y := range []string{
		`{name: envoy.filters.http.rbac, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC}}`,
		`{name: envoy.filters.http.local_ratelimit, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: local}}`,
	} {
		f := &hcmv3.HttpFilter{}
		decodeProto(t, "local reply filter", []byte(y), f)
		filters = append(filters, f)
	}
	hf := c.hcm.GetHttpFilters()
	router := len(hf) - 1
	c.hcm.HttpFilters = append(append(hf[:router:router], filters...), hf[router])
	cl := &clusterv3.Cluster{}
	decodeProto(t, "cluster", []byte(`{name: no-endpoints, type: STATIC, connect_timeout: 1s, load_assignment: {cluster_name: no-endpoints}}`), cl)
	sr := c.bootstrap.GetStaticResources()
	sr.Clusters = append(sr.Clusters, cl)
}
