package deploy_test

import (
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cors-extproc/cors-extproc/internal/envoyconfig"
	"github.com/cors-extproc/cors-extproc/internal/envoytest"
	"github.com/cors-extproc/cors-extproc/internal/processor"
)

// The behaviour table of deploy/envoy.yaml: one HTTP request on one route each, and everything
// the client must get back. The same table runs through the simulated Envoy
// (TestEnvoyRoutesBehave) and through every pinned real Envoy (TestRealEnvoyRoutesBehave), so
// the two cannot drift apart.

// routeCase is one HTTP request and its outcome.
type routeCase struct {
	name     string
	route    string      // a route name of envoy.yaml (or of checkRoutes)
	method   string      // "" is GET
	headers  [][2]string // request headers, in order
	upstream string      // how the upstream answers: "" (upstreamApp) or "cors" (upstreamWithCORS)
	// answered: cors-extproc answered the request itself; the upstream never saw it.
	answered bool
	status   int
	// cors is every CORS header of the response (access-control-* and vary), each name with
	// its values in order; nothing else of that kind may be there.
	cors map[string][]string
	// local: Envoy makes the reply itself after the request phase (localNoUpstream, ...).
	local string
	// corsLocalSkipped, when set, replaces cors on releases that send Envoy's own replies to
	// no ext_proc server (envoytest.Config.SkipLocalReplies: 1.36).
	corsLocalSkipped map[string][]string
}

// wantCORS is the case's cors on the Envoy release version.
func (tc routeCase) wantCORS(version string) map[string][]string {
	if tc.corsLocalSkipped != nil && skipsLocalReplies(version) {
		return tc.corsLocalSkipped
	}
	return tc.cors
}

// skipsLocalReplies says whether the release sends Envoy's own replies to no ext_proc server,
// as envoytest knows it from the recordings.
func skipsLocalReplies(version string) bool {
	cfg, err := envoytest.Config{}.ForRelease(version)
	return err == nil && cfg.SkipLocalReplies
}

// upstreamFields is the upstream's answer as it reaches Envoy, in order: Go's HTTP server
// writes the handler's headers sorted by name, then date and content-length (no body). The
// date is a placeholder in recordings.
func upstreamFields(kind string) [][2]string {
	answer := upstreamAnswers[kind]
	var fields [][2]string
	for _, k := range slices.Sorted(maps.Keys(answer)) {
		for _, v := range answer[k] {
			fields = append(fields, [2]string{strings.ToLower(k), v})
		}
	}
	return append(fields, [2]string{"date", "Thu, 01 Jan 2026 00:00:00 GMT"}, [2]string{"content-length", "0"})
}

const (
	acao = "access-control-allow-origin"
	acac = "access-control-allow-credentials"
	acam = "access-control-allow-methods"
	acah = "access-control-allow-headers"
	aceh = "access-control-expose-headers"
	acma = "access-control-max-age"
	acpn = "access-control-allow-private-network"
	vary = "vary"

	acrm = "access-control-request-method"
	acrh = "access-control-request-headers"
)

// defaultMethods is the ACAM of a policy without `methods` (docs/cors-semantics.md section 1).
const defaultMethods = "GET,HEAD,PUT,PATCH,POST,DELETE"

func origin(o string) [2]string { return [2]string{"origin", o} }

// h builds a cors map from name, value pairs; a name given twice gets both values, in order.
func h(kv ...string) map[string][]string {
	m := map[string][]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = append(m[kv[i]], kv[i+1])
	}
	return m
}

// The upstream's answers. upstreamApp sends a Vary of its own (cors-extproc must add Origin
// beside it); upstreamWithCORS sends CORS headers of its own.
var upstreamAnswers = map[string]http.Header{
	"":     {"Vary": {"Accept-Encoding"}},
	"cors": {"Access-Control-Allow-Origin": {"https://upstream.example"}, "Access-Control-Allow-Methods": {"GET"}},
}

// corsHeaders keeps the CORS headers of a response: access-control-* and vary.
func corsHeaders(hdr http.Header) map[string][]string {
	m := map[string][]string{}
	for k, v := range hdr {
		k = strings.ToLower(k)
		if strings.HasPrefix(k, "access-control-") || k == vary {
			m[k] = v
		}
	}
	return m
}

func sameHeaders(got, want map[string][]string) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			return false
		}
	}
	return true
}

// routeCases is the whole table: the example routes and Envoy's own replies.
var routeCases = slices.Concat(envoyRouteCases, localReplyCases, contractCases)

// serverModes are the server's modes the table runs through: envoy.yaml serves both.
var serverModes = []processor.Mode{processor.ModeTwoPhase, processor.ModeOneTrip}

// headerChain is envoy.yaml's filter chain as validate reads it.
func headerChain(t *testing.T) *envoyconfig.Chain {
	t.Helper()
	chains, err := envoyconfig.ReadChains("envoy.yaml", readFile(t, "envoy.yaml"))
	if err != nil || len(chains) != 1 {
		t.Fatalf("envoy.yaml: want one filter chain with cors-extproc's filters: %v", err)
	}
	return chains[0]
}

// headersNamespace is the namespace envoy.yaml's header filters read.
func headersNamespace(t *testing.T) string {
	t.Helper()
	w := headerChain(t).Writes[acao]
	if len(w) != 1 {
		t.Fatalf("envoy.yaml: want one write of %s from metadata, got %v", acao, w)
	}
	return w[0].Namespace
}

// envoyRouteCases are the example routes of envoy.yaml as their comments describe them, plus
// the channels and failure cases of checkRoutes.
var envoyRouteCases = []routeCase{
	{name: "public-api preflight", route: "public-api", method: "OPTIONS",
		headers:  [][2]string{origin("https://anyone.test"), {acrm, "POST"}},
		answered: true, status: 204,
		cors: h(acao, "*", acam, "GET,HEAD,POST", acma, "86400")},
	{name: "public-api actual", route: "public-api", headers: [][2]string{origin("https://anyone.test")},
		status: 200, cors: h(acao, "*", vary, "Accept-Encoding")},

	{name: "spa-api preflight", route: "spa-api", method: "OPTIONS",
		headers:  [][2]string{origin("https://app.example.com"), {acrm, "PUT"}, {acrh, "content-type"}},
		answered: true, status: 204,
		cors: h(acao, "https://app.example.com", vary, "Origin", acac, "true", acam, "GET,POST,PUT,DELETE",
			acah, "content-type,authorization,x-csrf-token", acma, "600")},
	{name: "spa-api preflight from a foreign origin", route: "spa-api", method: "OPTIONS",
		headers:  [][2]string{origin("https://evil.test"), {acrm, "PUT"}},
		answered: true, status: 204,
		cors: h(vary, "Origin", acac, "true", acam, "GET,POST,PUT,DELETE",
			acah, "content-type,authorization,x-csrf-token", acma, "600")},
	{name: "spa-api actual keeps the upstream's Vary", route: "spa-api", headers: [][2]string{origin("https://admin.example.com")},
		status: 200,
		cors: h(acao, "https://admin.example.com", acac, "true", aceh, "x-request-id,x-ratelimit-remaining",
			vary, "Accept-Encoding,Origin")},
	{name: "spa-api without Origin", route: "spa-api", status: 200,
		cors: h(acac, "true", aceh, "x-request-id,x-ratelimit-remaining", vary, "Accept-Encoding,Origin")},

	{name: "tenants subdomain", route: "tenants", method: "OPTIONS",
		headers:  [][2]string{origin("https://a.b.example.com"), {acrm, "GET"}},
		answered: true, status: 204,
		cors: h(acao, "https://a.b.example.com", vary, "Origin", acac, "true", acam, defaultMethods)},
	{name: "tenants apex refused", route: "tenants", method: "OPTIONS",
		headers:  [][2]string{origin("https://example.com"), {acrm, "GET"}},
		answered: true, status: 204, cors: h(vary, "Origin", acac, "true", acam, defaultMethods)},
	{name: "tenants look-alike refused, the upstream's ACAO removed", route: "tenants",
		headers: [][2]string{origin("https://evilexample.com")}, upstream: "cors",
		status: 200, cors: h(acam, "GET", vary, "Origin", acac, "true")},

	{name: "partners regex", route: "partners", method: "OPTIONS",
		headers:  [][2]string{origin("https://partner-acme-2.example.net"), {acrm, "GET"}},
		answered: true, status: 204, cors: h(acao, "https://partner-acme-2.example.net", vary, "Origin", acam, "GET")},
	{name: "partners regex anchored", route: "partners", method: "OPTIONS",
		headers:  [][2]string{origin("https://partner-acme.example.net.evil.test"), {acrm, "GET"}},
		answered: true, status: 204, cors: h(vary, "Origin", acam, "GET")},

	{name: "legacy preflight goes upstream untouched", route: "legacy-preflight", method: "OPTIONS",
		headers:  [][2]string{origin("https://legacy.example.com"), {acrm, "GET"}},
		upstream: "cors", status: 200, cors: h(acao, "https://upstream.example", acam, "GET")},
	{name: "legacy actual decorated", route: "legacy", headers: [][2]string{origin("https://legacy.example.com")},
		upstream: "cors", status: 200, cors: h(acao, "https://legacy.example.com", acam, "GET", vary, "Origin")},

	{name: "reports named policy preflight", route: "reports", method: "OPTIONS",
		headers:  [][2]string{origin("https://bi.example.org"), {acrm, "GET"}},
		answered: true, status: 204,
		cors: h(acao, "https://bi.example.org", vary, "Origin", acac, "true", acam, "GET,HEAD", acma, "3600")},
	{name: "reports named policy actual", route: "reports", headers: [][2]string{origin("https://reports.example.com")},
		status: 200,
		cors: h(acao, "https://reports.example.com", acac, "true", aceh, "content-disposition",
			vary, "Accept-Encoding,Origin")},

	{name: "internal has ext_proc disabled", route: "internal", method: "OPTIONS",
		headers:  [][2]string{origin("https://app.example.com"), {acrm, "GET"}},
		upstream: "cors", status: 200, cors: h(acao, "https://upstream.example", acam, "GET")},

	{name: "www-fonts overrides the virtual host", route: "www-fonts", headers: [][2]string{origin("https://elsewhere.test")},
		status: 200, cors: h(acao, "*", vary, "Accept-Encoding")},
	{name: "www-default uses the virtual host's policy", route: "www-default", method: "OPTIONS",
		headers:  [][2]string{origin("https://beta.example.com"), {acrm, "DELETE"}},
		answered: true, status: 204,
		cors: h(acao, "https://beta.example.com", vary, "Origin", acac, "true", acam, defaultMethods)},
	{name: "www-default refuses others and strips the upstream's ACAO", route: "www-default",
		headers: [][2]string{origin("https://elsewhere.test")}, upstream: "cors",
		status: 200, cors: h(acam, "GET", vary, "Origin", acac, "true")},

	// checkRoutes: the channels and failure cases the example routes do not show.
	{name: "x-cors-policy through grpc_initial_metadata", route: "json-policy", method: "OPTIONS",
		headers:  [][2]string{origin("https://json.example.com"), {acrm, "PATCH"}},
		answered: true, status: 200,
		cors: h(acao, "https://json.example.com", vary, "Origin", acam, "PATCH")},
	{name: "x-cors-policy actual", route: "json-policy", headers: [][2]string{origin("https://json.example.com")},
		status: 200, cors: h(acao, "https://json.example.com", vary, "Accept-Encoding,Origin")},
	{name: "broken policy: preflight refused", route: "broken", method: "OPTIONS",
		headers:  [][2]string{origin("https://app.example.com"), {acrm, "GET"}},
		answered: true, status: 403, cors: h()},
	{name: "broken policy: the upstream's ACAO removed", route: "broken",
		headers: [][2]string{origin("https://app.example.com")}, upstream: "cors",
		status: 200, cors: h(acam, "GET")},
	{name: "broken policy: same-origin traffic untouched", route: "broken", upstream: "cors",
		status: 200, cors: h(acao, "https://upstream.example", acam, "GET")},
	{name: "broken policy stays on its route", route: "beside-broken", method: "OPTIONS",
		headers:  [][2]string{origin("https://app.example.com"), {acrm, "GET"}},
		answered: true, status: 204, cors: h(acao, "https://app.example.com", vary, "Origin", acam, defaultMethods)},
	{name: "report_only changes nothing on a preflight", route: "report-only", method: "OPTIONS",
		headers:  [][2]string{origin("https://evil.test"), {acrm, "GET"}},
		upstream: "cors", status: 200, cors: h(acao, "https://upstream.example", acam, "GET")},
	{name: "report_only changes nothing on an actual request", route: "report-only",
		headers: [][2]string{origin("https://evil.test")}, upstream: "cors",
		status: 200, cors: h(acao, "https://upstream.example", acam, "GET")},
	{name: "no policy anywhere: untouched", route: "no-policy", method: "OPTIONS",
		headers:  [][2]string{origin("https://app.example.com"), {acrm, "GET"}},
		upstream: "cors", status: 200, cors: h(acao, "https://upstream.example", acam, "GET")},
	{name: "no policy anywhere: an actual response untouched", route: "no-policy",
		headers: [][2]string{origin("https://app.example.com")}, upstream: "cors",
		status: 200, cors: h(acao, "https://upstream.example", acam, "GET")},
}

// checkHost is the virtual host of checkRoutes.
const checkHost = "checks.test"

// checkRoutes is a virtual host the tests add to envoy.yaml's route table (nothing of the
// shipped file changes): the x-cors-policy channel, a broken policy beside a good one,
// report_only, and a route with no policy anywhere.
func checkRoutes(t *testing.T) *routev3.VirtualHost {
	t.Helper()
	route := func(name, prefix string, policy map[string]any) *routev3.Route {
		r := &routev3.Route{
			Name:   name,
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "demo-upstream"}}},
		}
		if policy != nil {
			r.Metadata = policyMetadata(t, policy)
		}
		return r
	}
	jsonPolicy := route("json-policy", "/json/", nil)
	per, err := anypb.New(&extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{
		Overrides: &extprocv3.ExtProcOverrides{GrpcInitialMetadata: []*corev3.HeaderValue{{
			Key: "x-cors-policy", Value: `{"origins": ["https://json.example.com"], "methods": "PATCH", "preflight_status": 200}`,
		}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	jsonPolicy.TypedPerFilterConfig = map[string]*anypb.Any{extProcFilter: per}
	return &routev3.VirtualHost{
		Name:    "checks",
		Domains: []string{checkHost},
		Routes: append(append(localRoutes(t), contractRoutes(t)...),
			jsonPolicy,
			route("broken", "/broken/", map[string]any{"origins": []any{"https://(bad"}}),
			route("beside-broken", "/beside-broken/", map[string]any{"origins": []any{"https://app.example.com", "https://other.example.com"}}),
			route("report-only", "/report-only/", map[string]any{"origins": []any{"https://app.example.com"}, "credentials": true, "report_only": true}),
			route("no-policy", "/", nil),
		),
	}
}

// policyMetadata is route metadata holding policy in the cors namespace.
func policyMetadata(t *testing.T, policy map[string]any) *corev3.Metadata {
	t.Helper()
	s, err := structpb.NewStruct(policy)
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{corsNamespace: s}}
}

// withCheckRoutes adds checkRoutes to the route table of c, and the filters and cluster of the
// local-reply routes (withLocalReplyFilters), in c.hcm and in the listener of c.bootstrap alike.
func withCheckRoutes(t *testing.T, c envoyConfig) {
	t.Helper()
	c.hcm.GetRouteConfig().VirtualHosts = append(c.hcm.GetRouteConfig().GetVirtualHosts(), checkRoutes(t))
	withLocalReplyFilters(t, c)
	withFilterAhead(t, c)
	a, err := anypb.New(c.hcm)
	if err != nil {
		t.Fatal(err)
	}
	filters := c.bootstrap.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()
	filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
}

// requestTarget is where a case's request goes: the Host (a domain of the route's virtual host)
// and a path under the route's prefix.
func requestTarget(t *testing.T, hcm *hcmv3.HttpConnectionManager, route string) (host, path string) {
	t.Helper()
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if r.GetName() != route {
				continue
			}
			host = vh.GetDomains()[0]
			if host == "*" {
				host = "api.example.com"
			}
			return host, r.GetMatch().GetPrefix() + "case"
		}
	}
	t.Fatalf("no route %s", route)
	return "", ""
}
