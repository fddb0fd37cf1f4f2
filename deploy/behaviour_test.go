package deploy_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
	"github.com/cors-extproc/cors-extproc/internal/envoytest"
	"github.com/cors-extproc/cors-extproc/internal/policy"
	"github.com/cors-extproc/cors-extproc/internal/processor"
	"github.com/cors-extproc/cors-extproc/internal/realenvoy"
)

// The second phase: the example routes' policies go through the real processor, loaded with
// the deploy's named-policy file, driven by a client that plays Envoy's ext_proc filter as
// each deployment configures it.

// testMessageTimeout replaces Envoy's per-message timeout in these tests.
const testMessageTimeout = 5 * time.Second

// newEnvoy starts the processor as the deployments run it (newProcessor) in the given mode, and
// plays an Envoy whose ext_proc filter is configured like p, followed by the header filters hf
// (nil for none).
func newEnvoy(t *testing.T, p *extprocv3.ExternalProcessor, format envoyfilter.MetadataFormat, mode processor.Mode, hf *envoytest.HeaderFilter) *envoytest.Envoy {
	t.Helper()
	cfg := envoytestConfig(p, hf)
	cfg.MetadataFormat = format
	return envoytest.New(envoytest.Serve(t, newProcessor(t, mode)), cfg)
}

// newProcessor is the processor as the deployments run it: the named-policy file, no default
// policy, decisions as dynamic metadata, in the given mode.
func newProcessor(t *testing.T, mode processor.Mode) *processor.Server {
	t.Helper()
	named, warnings, err := policy.ParseNamed(readFile(t, namedPoliciesFile))
	if err != nil || len(warnings) > 0 {
		t.Fatalf("%s: %v %v", namedPoliciesFile, err, warnings)
	}
	srv, err := processor.New(processor.Options{Policies: named, DynamicMetadataNamespace: "cors-extproc",
		Mode: mode, HeadersNamespace: "cors-extproc"})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// envoytestConfig plays an ext_proc filter configured like p, followed by the header filters
// hf (nil for none).
func envoytestConfig(p *extprocv3.ExternalProcessor, hf *envoytest.HeaderFilter) envoytest.Config {
	return envoytest.Config{
		AllowModeOverride: p.GetAllowModeOverride(),
		ProcessingMode:    p.GetProcessingMode(),
		// Not the deploy's 200 ms: under the race detector on a shared 2-core machine one
		// exchange can take longer, which says nothing about how the route behaves.
		MessageTimeout:      testMessageTimeout,
		RequestAttributes:   p.GetRequestAttributes(),
		ReceivingNamespaces: p.GetMetadataOptions().GetReceivingNamespaces().GetUntyped(),
		HeaderFilter:        hf,
	}
}

// checkPolicy compiles one example policy (a generic map) with the real parser: it must be
// valid and raise no warning, or be a ref to a policy of the named-policy file.
func checkPolicy(t *testing.T, where string, m map[string]any) {
	t.Helper()
	name, isRef, err := policy.RefName(m)
	switch {
	case err != nil:
		t.Errorf("%s: %v", where, err)
	case isRef:
		if _, ok := loadNamedPolicies(t)[name]; !ok {
			t.Errorf("%s: ref %q is not in %s", where, name, namedPoliciesFile)
		}
	default:
		if _, warnings, err := policy.Compile(m); err != nil || len(warnings) > 0 {
			t.Errorf("%s: %v %v", where, err, warnings)
		}
	}
}

func TestExamplePoliciesCompile(t *testing.T) {
	for name, r := range envoyRoutes(t, loadEnvoy(t)) {
		for what, m := range map[string]*corev3.Metadata{"route": r.Metadata, "virtual host": r.VirtualHostMetadata} {
			if s, ok := m.GetFilterMetadata()[corsNamespace]; ok {
				checkPolicy(t, "envoy.yaml "+what+" of "+name, s.AsMap())
			}
		}
	}
	for route, value := range istioPolicies(t, loadIstio(t)) {
		m, err := policy.ParseJSON([]byte(value))
		if err != nil {
			t.Fatalf("istio route %s: %v", route, err)
		}
		checkPolicy(t, "istio route "+route, m)
	}
}

// exchange is one HTTP request on an example route and what the browser must get.
type exchange struct {
	name     string
	route    envoytest.Route
	req      envoytest.Request
	upstream envoytest.Upstream
	answered bool              // the preflight is answered by cors-extproc, not the upstream
	status   int               // the status the client gets
	want     map[string]string // headers the client gets, each with (among its values) this one
	absent   []string          // headers the client does not get
}

func preflight(origin, method string, extra ...envoytest.Header) envoytest.Request {
	h := envoytest.Headers{{Key: "origin", Value: origin}, {Key: "access-control-request-method", Value: method}}
	return envoytest.Request{Method: "OPTIONS", Headers: append(h, extra...)}
}

func actual(origin string) envoytest.Request {
	var h envoytest.Headers
	if origin != "" {
		h = envoytest.Headers{{Key: "origin", Value: origin}}
	}
	return envoytest.Request{Method: "GET", Headers: h}
}

// upstreamApp answers 200 with a Vary of its own (cors-extproc must add Origin beside it).
func upstreamApp(envoytest.Request) envoytest.Response {
	return envoytest.Response{Status: 200, Headers: envoytest.Headers{{Key: "vary", Value: "Accept-Encoding"}}}
}

// upstreamWithCORS answers everything itself, CORS headers included.
func upstreamWithCORS(envoytest.Request) envoytest.Response {
	return envoytest.Response{Status: 200, Headers: envoytest.Headers{
		{Key: "access-control-allow-origin", Value: "https://upstream.example"},
		{Key: "access-control-allow-methods", Value: "GET"},
	}}
}

func play(t *testing.T, envoy *envoytest.Envoy, cases []exchange) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			upstream := c.upstream
			if upstream == nil {
				upstream = upstreamApp
			}
			res, err := envoy.Do(context.Background(), c.route, c.req, upstream)
			if err != nil {
				t.Fatal(err)
			}
			if res.Answered != c.answered || res.UpstreamCalled == c.answered {
				t.Errorf("answered by cors-extproc %v, upstream called %v; want answered %v", res.Answered, res.UpstreamCalled, c.answered)
			}
			if res.Response.Status != c.status {
				t.Errorf("status %d, want %d", res.Response.Status, c.status)
			}
			for k, v := range c.want {
				if got := res.Response.Values(k); !slices.Contains(got, v) {
					t.Errorf("%s: %q, want %q (headers %v)", k, got, v, res.Response.Headers)
				}
			}
			for _, k := range c.absent {
				if got, ok := res.Response.Get(k); ok {
					t.Errorf("%s: %q, want none", k, got)
				}
			}
		})
	}
}

// TestEnvoyRoutesBehave plays routeCases through the simulated Envoy set up as each pinned
// release (envoytest.Config.ForRelease), in both server modes, with envoy.yaml's header filters
// and the recorder of TestRealEnvoyRoutesBehave in front of the processor: the outcome must be
// the table's, and the ext_proc messages those the real release exchanged
// (testdata/envoy-recordings), apart from per-request values.
func TestEnvoyRoutesBehave(t *testing.T) {
	c := loadEnvoy(t)
	withCheckRoutes(t, c)
	routes := envoyRoutes(t, c)
	hf := &envoytest.HeaderFilter{Namespace: headersNamespace(t)}
	root, err := realenvoy.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	versions, err := realenvoy.PinnedVersions(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, version := range versions {
		t.Run(version, func(t *testing.T) {
			cfg, err := envoytestConfig(c.extProc, hf).ForRelease(version)
			if err != nil {
				t.Fatal(err)
			}
			var recording []recordedCase
			for _, mode := range serverModes {
				rec := realenvoy.NewRecorderFor(envoytest.Serve(t, newProcessor(t, mode)))
				rec.Alter = alterReply
				envoy := envoytest.New(envoytest.Serve(t, rec), cfg)
				for i, tc := range routeCases {
					t.Run(mode.String()+"/"+tc.name, func(t *testing.T) {
						r, ok := routes[tc.route]
						if !ok {
							t.Fatalf("no route %s", tc.route)
						}
						rec.Reset()
						res := playCase(t, envoy, c, r, tc, fmt.Sprintf("envoytest-%d", i))
						recording = append(recording, record(t, mode, tc, res.Response.Status, rec.Streams()))
						checkSimulated(t, tc, version, res)
					})
				}
			}
			checkRecording(t, version, recording, false)
		})
	}
}

// TestEnvoyModeOverrideDefault plays filterSkipCases through the simulated Envoy.
func TestEnvoyModeOverrideDefault(t *testing.T) {
	c := loadEnvoy(t)
	withFilterResponseSkip(t, c)
	withCheckRoutes(t, c)
	routes := envoyRoutes(t, c)
	rec := realenvoy.NewRecorderFor(envoytest.Serve(t, newProcessor(t, processor.ModeTwoPhase)))
	rec.Alter = alterReply
	envoy := envoytest.New(envoytest.Serve(t, rec), envoytestConfig(c.extProc, nil))
	for _, tc := range filterSkipCases {
		t.Run(tc.name, func(t *testing.T) {
			res := playCase(t, envoy, c, routes[filterSkipRoute], routeCase{route: filterSkipRoute, headers: tc.headers}, "mode")
			if res.ResponsePhaseSent != tc.responsePhase {
				t.Errorf("response phase %v, want %v", res.ResponsePhaseSent, tc.responsePhase)
			}
		})
	}
}

// playCase sends one case's request, as TestRealEnvoyRoutesBehave writes it, through the
// simulated Envoy, with the router, or a filter, answering as Envoy's would for the case.
func playCase(t *testing.T, envoy *envoytest.Envoy, c envoyConfig, r exampleRoute, tc routeCase, tag string) envoytest.Result {
	t.Helper()
	method, path, host, headers := requestOf(t, c, tc, tag)
	req := envoytest.Request{Method: method, Scheme: "http", Authority: host, Path: path}
	for _, kv := range headers {
		req.Headers = append(req.Headers, envoytest.Header{Key: kv[0], Value: kv[1]})
	}
	route := envoytest.Route{Name: tc.route, Metadata: r.Metadata, VirtualHostMetadata: r.VirtualHostMetadata,
		GRPCMetadata: r.GRPCMetadata, ProcessingMode: r.ProcessingMode}
	upstream := routerRemoves(simulatedUpstream(tc), r.ResponseHeadersToRemove)
	var (
		res envoytest.Result
		err error
	)
	switch {
	case tc.local == localAhead:
		res, err = envoy.LocalReply(context.Background(), route, upstream(req))
	case r.ExtProcDisabled:
		// Envoy skips the disabled filter: no stream, the upstream's answer as it is.
		res = envoytest.Result{Response: upstream(req), UpstreamCalled: true}
	default:
		res, err = envoy.Do(context.Background(), route, req, upstream)
	}
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// localReplyBodies are the bodies of Envoy's own replies, by routeCase.local.
var localReplyBodies = map[string]string{
	localNoUpstream: "no healthy upstream",
	localTimeout:    "upstream request timeout",
	localDirect:     "direct",
	localRBAC:       "RBAC: access denied",
	localRateLimit:  "local_rate_limited",
	localAhead:      "RBAC: access denied",
}

// The access log of envoy.yaml reads the decision that the server (run with --dynamic-metadata
// by the Deployment and compose files) returns in the namespace the filter receives.
func TestEnvoyAccessLogGetsDecisions(t *testing.T) {
	c := loadEnvoy(t)
	for _, file := range []string{"k8s/base/deployment.yaml", "docker-compose.yaml"} {
		if !strings.Contains(string(readFile(t, file)), "- --dynamic-metadata\n") {
			t.Errorf("%s: the server does not run with --dynamic-metadata", file)
		}
	}
	routes := envoyRoutes(t, c)
	envoy := newEnvoy(t, c.extProc, envoyfilter.OneLine, processor.ModeTwoPhase, nil)
	r := routes["reports"]
	res, err := envoy.Do(context.Background(), envoytest.Route{Name: "reports", Metadata: r.Metadata, VirtualHostMetadata: r.VirtualHostMetadata},
		actual("https://reports.example.com"), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := res.DynamicMetadata["cors-extproc"].AsMap()
	want := map[string]any{"decision": "actual", "origin": "allowed", "matched": "https://reports.example.com",
		"policy": "reporting", "report_only": false}
	// Beside the decision, the same namespace carries the response headers for the header
	// filters (docs/envoy-extproc.md section 7).
	headers := map[string]any{"access-control-allow-origin": "https://reports.example.com",
		"access-control-allow-credentials": "true", "access-control-expose-headers": "content-disposition", "vary": "Origin"}
	all := maps.Clone(want)
	maps.Copy(all, headers)
	if !reflect.DeepEqual(got, all) {
		t.Errorf("dynamic metadata %v, want %v", got, all)
	}
	format := string(readFile(t, "envoy.yaml"))
	for key := range want {
		if !strings.Contains(format, "%DYNAMIC_METADATA(cors-extproc:"+key+")%") {
			t.Errorf("envoy.yaml: the access log does not show %s", key)
		}
	}
}

// TestIstioRoutesBehave plays the Istio routes with the x-cors-policy metadata their
// ExtProcPerRoute sends, through the ext_proc filter the EnvoyFilter inserts.
func TestIstioRoutesBehave(t *testing.T) {
	f := loadIstio(t)
	policies := istioPolicies(t, f)
	envoy := newEnvoy(t, f.extProc, envoyfilter.OneLineTrailingSpace, processor.ModeTwoPhase, nil)
	route := func(name string) envoytest.Route {
		r := envoytest.Route{Name: name}
		if p, ok := policies[name]; ok {
			r.GRPCMetadata = map[string]string{"x-cors-policy": p}
		}
		return r
	}
	play(t, envoy, []exchange{
		{name: "widgets preflight", route: route("widgets"), req: preflight("https://x.example.com", "GET"),
			answered: true, status: 204, want: map[string]string{acao: "https://x.example.com", acac: "true", acma: "600"}},
		{name: "widgets actual", route: route("widgets"), req: actual("https://x.example.com"),
			status: 200, want: map[string]string{acao: "https://x.example.com", aceh: "x-request-id"}},
		{name: "tools private network preflight", route: route("tools"),
			req:      preflight("http://localhost:3000", "POST", envoytest.Header{Key: "access-control-request-private-network", Value: "true"}),
			answered: true, status: 200,
			want: map[string]string{acao: "http://localhost:3000", acpn: "true", acam: "GET,POST"}},
		{name: "web has no policy: untouched", route: route("web"), req: preflight("https://x.example.com", "GET"),
			upstream: upstreamWithCORS, status: 200,
			want:   map[string]string{acao: "https://upstream.example"},
			absent: []string{"vary", acac}},
	})
}

// simulatedUpstream answers a case's request as upstreamAnswers[tc.upstream] says (the fields
// in the order Go's server writes them, upstreamFields), or as Envoy itself would (tc.local:
// Envoy's own reply, with the body and headers Envoy gives it).
func simulatedUpstream(tc routeCase) envoytest.Upstream {
	return func(envoytest.Request) envoytest.Response {
		if body, ok := localReplyBodies[tc.local]; ok {
			return envoytest.Response{Status: tc.status, Local: true, Body: true, Headers: envoytest.Headers{
				{Key: "content-length", Value: fmt.Sprint(len(body))}, {Key: "content-type", Value: "text/plain"}}}
		}
		var hs envoytest.Headers
		for _, kv := range upstreamFields(tc.upstream) {
			hs = append(hs, envoytest.Header{Key: kv[0], Value: kv[1]})
		}
		return envoytest.Response{Status: 200, Headers: hs}
	}
}

// routerRemoves plays the router's response_headers_to_remove on the upstream's answers (not
// on Envoy's own replies): the filters, ext_proc first, never see those headers.
func routerRemoves(up envoytest.Upstream, names []string) envoytest.Upstream {
	return func(req envoytest.Request) envoytest.Response {
		res := up(req)
		if !res.Local {
			res.Headers = slices.DeleteFunc(slices.Clone(res.Headers), func(h envoytest.Header) bool {
				return slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, h.Key) })
			})
		}
		return res
	}
}

// checkSimulated judges one case's result from the simulated Envoy, playing Envoy release
// version.
func checkSimulated(t *testing.T, tc routeCase, version string, res envoytest.Result) {
	t.Helper()
	if want := !tc.answered && tc.local == ""; res.UpstreamCalled != want {
		t.Errorf("upstream called %v, want %v", res.UpstreamCalled, want)
	}
	if res.Response.Status != tc.status {
		t.Errorf("status %d, want %d", res.Response.Status, tc.status)
	}
	got := http.Header{}
	for _, hv := range res.Response.Headers {
		got.Add(hv.Key, hv.Value)
	}
	if cors, want := corsHeaders(got), tc.wantCORS(version); !sameHeaders(cors, want) {
		t.Errorf("CORS headers\n got %v\nwant %v", cors, want)
	}
}
