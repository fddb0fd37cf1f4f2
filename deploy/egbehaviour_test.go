package deploy_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
	"github.com/cors-extproc/cors-extproc/internal/envoytest"
	"github.com/cors-extproc/cors-extproc/internal/processor"
	"github.com/cors-extproc/cors-extproc/internal/realenvoy"
	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

// The behaviour table of deploy/envoy-gateway/, played on the routes of Envoy Gateway's own
// translation (testdata/envoygateway-xds.json): through the simulated Envoy
// (TestEnvoyGatewayRoutesBehave) and through Envoy 1.39, the release Envoy Gateway 1.9 ships
// (TestRealEnvoyGatewayRoutesBehave).

// The translated routes, named as Envoy Gateway names them.
const (
	// storefront names its policy with an HTTPRoute annotation; the translation input puts
	// basic authentication on it (egAuthProbe).
	egStorefront = "httproute/demo/storefront/rule/0/match/0/api_shop_example_com"
	// reports names none: it gets the Gateway's annotation, from its virtual host.
	egReports = "httproute/demo/reports/rule/0/match/0/api_reports_example_com"
)

// egProbeCredentials pass the storefront's basic authentication (user and password "probe").
// Envoy Gateway v1.9 ships Envoy 1.39: its tests run on the pinned 1.39 release.
const (
	egEnvoyMinor   = "1.39"
	egEnvoyRelease = "1.39.3"
)

var egProbeCredentials = [2]string{"authorization", "Basic cHJvYmU6cHJvYmU="}

var egRouteCases = []routeCase{
	// The HTTPRoute's annotation (storefront) beats the Gateway's (reporting, which would
	// refuse this origin).
	{name: "storefront: market subdomain preflight, before basic auth", route: egStorefront, method: "OPTIONS",
		headers:  [][2]string{origin("https://de.shop.example.com"), {acrm, "POST"}},
		answered: true, status: 204,
		cors: h(acao, "https://de.shop.example.com", vary, "Origin", acac, "true", acam, "GET,POST,PUT,DELETE",
			acah, "content-type,authorization", acma, "600")},
	{name: "storefront: look-alike preflight refused", route: egStorefront, method: "OPTIONS",
		headers:  [][2]string{origin("https://shop.example.com.evil.test"), {acrm, "POST"}},
		answered: true, status: 204,
		cors: h(vary, "Origin", acac, "true", acam, "GET,POST,PUT,DELETE", acah, "content-type,authorization", acma, "600")},
	{name: "storefront: actual decorated", route: egStorefront,
		headers: [][2]string{origin("https://shop.example.com"), egProbeCredentials},
		status:  200,
		cors:    h(acao, "https://shop.example.com", acac, "true", aceh, "x-cart-id", vary, "Accept-Encoding,Origin")},
	// cors-extproc leaves a request without an Origin alone (allow_origin_absent false), but the
	// route's ResponseHeaderModifier has removed the upstream's ACAO before: the price of
	// fail-open granting nothing (docs/failure-modes.md). The rest of the upstream's CORS stays.
	{name: "storefront: no Origin, untouched but for the upstream's ACAO (allow_origin_absent false)", route: egStorefront,
		headers: [][2]string{egProbeCredentials}, upstream: "cors",
		status: 200, cors: h(acam, "GET")},

	// The Gateway's annotation, through the virtual host's metadata.
	{name: "reports: Gateway default preflight", route: egReports, method: "OPTIONS",
		headers:  [][2]string{origin("https://bi.example.org"), {acrm, "GET"}},
		answered: true, status: 204,
		cors: h(acao, "https://bi.example.org", vary, "Origin", acac, "true", acam, "GET,HEAD", acma, "3600")},
	{name: "reports: Gateway default actual", route: egReports, headers: [][2]string{origin("https://reports.example.com")},
		status: 200,
		cors:   h(acao, "https://reports.example.com", acac, "true", aceh, "content-disposition", vary, "Accept-Encoding,Origin")},
	// ACEH goes on every actual response of a policy with exposed_headers (semantics section 1).
	{name: "reports: foreign origin, the upstream's ACAO removed", route: egReports,
		headers: [][2]string{origin("https://evil.test")}, upstream: "cors",
		status: 200, cors: h(acam, "GET", vary, "Origin", acac, "true", aceh, "content-disposition")},
}

// egAuthCase is what only a real Envoy shows: basic authentication refuses a request without
// credentials, and cors-extproc, ahead of it in the chain, still decorates the 401 so the
// page can read it.
var egAuthCase = routeCase{name: "storefront: actual without credentials, 401 decorated", route: egStorefront,
	headers: [][2]string{origin("https://shop.example.com")}, answered: true, status: 401,
	cors: h(acao, "https://shop.example.com", acac, "true", aceh, "x-cart-id", vary, "Origin")}

// TestEnvoyGatewayRoutesBehave plays egRouteCases through the simulated Envoy configured as
// the translation's ext_proc filter and header filters, with the translation's route and
// virtual-host metadata printed on several lines as Envoy 1.39 prints it, in both server modes.
func TestEnvoyGatewayRoutesBehave(t *testing.T) {
	tr := loadEGTranslation(t)
	hf := &envoytest.HeaderFilter{Namespace: tr.headersNamespace(t)}
	for _, mode := range serverModes {
		envoy := newEnvoy(t, tr.extProc, envoyfilter.MultiLine, mode, hf)
		for _, tc := range egRouteCases {
			t.Run(mode.String()+"/"+tc.name, func(t *testing.T) {
				r := tr.route(t, tc.route)
				if !slices.Contains(r.filters, tr.extProcName) {
					t.Fatalf("route %s does not turn on %s", tc.route, tr.extProcName)
				}
				req := envoytest.Request{Method: tc.method}
				for _, kv := range tc.headers {
					req.Headers = append(req.Headers, envoytest.Header{Key: kv[0], Value: kv[1]})
				}
				res, err := envoy.Do(context.Background(), envoytest.Route{Name: tc.route, Metadata: r.metadata, VirtualHostMetadata: r.vhostMetadata},
					req, routerRemoves(simulatedUpstream(tc), r.responseHeadersToRemove))
				if err != nil {
					t.Fatal(err)
				}
				checkSimulated(t, tc, egEnvoyRelease, res)
			})
		}
	}
}

// egStack is the translation served by a real Envoy 1.39: the static bootstrap with its
// addresses on loopback, the ext_proc cluster pointing at extProc and the routes' clusters at
// a recording Go upstream. The ext_proc filter's message timeout is testMessageTimeout, not the
// translation's 200 ms (TestEnvoyGatewayTranslatedExtProc checks that): under the race detector
// on a loaded machine one exchange can take longer, and Envoy would then fail open.
type egStack struct {
	envoy    *realenvoy.Envoy
	upstream *realenvoy.Upstream
	tr       egTranslation
}

func startEGStack(t *testing.T, extProc string) *egStack {
	t.Helper()
	bin := realenvoy.Pinned(t, egEnvoyMinor)
	s := &egStack{tr: loadEGTranslation(t), upstream: newCaseUpstream(t)}
	endpoints := map[string]string{}
	for _, c := range s.tr.bootstrap.GetStaticResources().GetClusters() {
		endpoints[c.GetName()] = s.upstream.Addr
		if strings.HasPrefix(c.GetName(), "envoyextensionpolicy/") {
			endpoints[c.GetName()] = extProc
		}
	}
	realenvoy.Loopback(t, s.tr.bootstrap, endpoints)
	s.tr.withMessageTimeout(t, testMessageTimeout)
	// Envoy Gateway's access log is a file logger (/dev/stdout), which Envoy flushes every
	// 10 s by default; the tests read it sooner.
	s.envoy = realenvoy.Start(t, bin, s.tr.bootstrap, realenvoy.Options{Args: []string{"--file-flush-interval-msec", "100"}})
	return s
}

// do sends one case's request through Envoy, tagged so the upstream's record of it can be found.
func (s *egStack) do(t *testing.T, tc routeCase, tag string) *http.Response {
	t.Helper()
	r := s.tr.route(t, tc.route)
	return sendCase(t, s.envoy.URL(t, ""), r.host, r.prefix+"case", tc, tag)
}

// TestRealEnvoyGatewayRoutesBehave plays egRouteCases, and what only a real Envoy can show,
// through the translation on Envoy 1.39 in front of the real cors-extproc, run as the
// Deployment runs it, in each mode. A recorder between the two shows what Envoy sends.
func TestRealEnvoyGatewayRoutesBehave(t *testing.T) {
	realenvoy.Pinned(t, egEnvoyMinor)
	build := servicetest.Build(t)
	for _, mode := range serverModes {
		t.Run(mode.String(), func(t *testing.T) {
			service := servicetest.Start(t, build, append(slices.Clone(deploymentArgs), "--mode", mode.String())...)
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("cors-extproc log:\n%s", service.Log())
				}
			})
			rec := realenvoy.NewRecorder(t, service.GRPCAddr)
			s := startEGStack(t, rec.Addr)
			for i, tc := range append(slices.Clone(egRouteCases), egAuthCase) {
				t.Run(tc.name, func(t *testing.T) {
					tag := fmt.Sprintf("eg-%s-%d", mode, i)
					checkResponse(t, tc, egEnvoyRelease, s.do(t, tc, tag))
					checkUpstream(t, tc, s.upstream.Tagged(tag))
				})
			}

			// allowModeOverride, as Envoy Gateway sets it: a request cors-extproc leaves alone
			// is one message on the stream; Envoy skips the response phase the server turned off.
			t.Run("allowModeOverride: no response phase for an untouched request", func(t *testing.T) {
				rec.Reset()
				tc := egRouteCases[3]
				checkResponse(t, tc, egEnvoyRelease, s.do(t, tc, "eg-mode-override"))
				streams := rec.Streams()
				if len(streams) != 1 {
					t.Fatalf("%d ext_proc streams, want 1", len(streams))
				}
				st := streams[0]
				if len(st.Requests) != 1 || st.Requests[0].GetRequestHeaders() == nil {
					t.Fatalf("Envoy sent %d messages (%v), want only the request headers", len(st.Requests), st.Requests)
				}
				if st.Responses[0].GetModeOverride().GetResponseHeaderMode() != extprocv3.ProcessingMode_SKIP {
					t.Errorf("the server did not turn the response phase off: %v", st.Responses[0])
				}
				// What the translation asks for reaches the server: the route's name and both
				// metadata.
				attrs := st.Requests[0].GetAttributes()[extProcFilter].GetFields()
				for _, a := range s.tr.extProc.GetRequestAttributes() {
					if _, ok := attrs[a]; !ok {
						t.Errorf("attribute %s was not sent (got %v)", a, attrs)
					}
				}
				if got := attrs["xds.route_name"].GetStringValue(); got != tc.route {
					t.Errorf("xds.route_name %q, want %q", got, tc.route)
				}
			})
			// A decorated actual request costs two round trips in two-phase mode, one in
			// one-trip mode (the header filters write the headers).
			t.Run("round trips of a decorated request", func(t *testing.T) {
				rec.Reset()
				tc := egRouteCases[2]
				checkResponse(t, tc, egEnvoyRelease, s.do(t, tc, "eg-round-trips"))
				want := 2
				if mode == processor.ModeOneTrip {
					want = 1
				}
				if st := rec.Streams(); len(st) != 1 || len(st[0].Requests) != want {
					t.Errorf("want one stream of %d messages, got %v", want, st)
				}
			})
			// The decision cors-extproc returns as dynamic metadata reaches the access log line
			// of the EnvoyProxy's telemetry, as with envoy.yaml.
			t.Run("the access log gets the decision", func(t *testing.T) {
				s.do(t, routeCase{route: egReports, headers: [][2]string{origin("https://reports.example.com")}}, "eg-access-log")
				awaitAccessLog(t, s.envoy, `"GET /case" 200 origin="https://reports.example.com" cors=actual origin_result=allowed matched="https://reports.example.com" policy=reporting report_only=false`)
			})
		})
	}
}

// TestRealEnvoyGatewayFailsOpen: with cors-extproc unreachable, the translation's failOpen
// lets requests through without CORS headers (browsers then refuse cross-origin reads) instead
// of failing them, and grants nothing the policy would not: an upstream that sets its own
// Access-Control-Allow-Origin loses it on every route with a policy, whether the HTTPRoute
// names it or the Gateway's default applies (the rules' ResponseHeaderModifier,
// docs/failure-modes.md).
func TestRealEnvoyGatewayFailsOpen(t *testing.T) {
	realenvoy.Pinned(t, egEnvoyMinor)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	s := startEGStack(t, closed)
	for i, tc := range []routeCase{
		{name: "preflight goes to the upstream", route: egReports, method: "OPTIONS",
			headers: [][2]string{origin("https://bi.example.org"), {acrm, "GET"}}, status: 200, cors: h(vary, "Accept-Encoding")},
		{name: "actual goes through undecorated", route: egReports, headers: [][2]string{origin("https://reports.example.com")},
			status: 200, cors: h(vary, "Accept-Encoding")},
		{name: "Gateway default: the upstream's ACAO removed from a foreign origin's actual", route: egReports,
			headers: [][2]string{origin("https://evil.test")}, upstream: "cors", status: 200, cors: h(acam, "GET")},
		{name: "Gateway default: the upstream's ACAO removed from a preflight", route: egReports, method: "OPTIONS",
			headers: [][2]string{origin("https://evil.test"), {acrm, "GET"}}, upstream: "cors", status: 200, cors: h(acam, "GET")},
		{name: "HTTPRoute's policy: the upstream's ACAO removed from an allowed origin's actual", route: egStorefront,
			headers: [][2]string{origin("https://shop.example.com"), egProbeCredentials}, upstream: "cors", status: 200, cors: h(acam, "GET")},
		{name: "HTTPRoute's policy: the upstream's ACAO removed from a foreign origin's actual", route: egStorefront,
			headers: [][2]string{origin("https://evil.test"), egProbeCredentials}, upstream: "cors", status: 200, cors: h(acam, "GET")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag := fmt.Sprintf("eg-open-%d", i)
			checkResponse(t, tc, egEnvoyRelease, s.do(t, tc, tag))
			checkUpstream(t, tc, s.upstream.Tagged(tag))
		})
	}
}

// TestEnvoyGatewayTranslation* check what Envoy Gateway made of the manifests against what
// deploy/README.md says of them.

func TestEnvoyGatewayTranslatedExtProc(t *testing.T) {
	tr := loadEGTranslation(t)
	p := tr.extProc
	want := &extprocv3.ExternalProcessor{
		FailureModeAllow:  true,
		AllowModeOverride: true,
		MessageTimeout:    durationpb.New(500 * time.Millisecond),
		ProcessingMode: &extprocv3.ProcessingMode{
			RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
			RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
			ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		},
		// The EnvoyExtensionPolicy's two, and the one envoypatchpolicy.yaml adds.
		RequestAttributes: []string{"xds.route_metadata", "xds.route_name", "xds.virtual_host_metadata"},
		// The decision's namespace (the server's --dynamic-metadata), for the access log.
		MetadataOptions: &extprocv3.MetadataOptions{ReceivingNamespaces: &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: []string{"cors-extproc"}}},
	}
	got := proto.Clone(p).(*extprocv3.ExternalProcessor)
	got.GrpcService = nil
	if !proto.Equal(got, want) {
		t.Errorf("ext_proc filter\n got %v\nwant %v", got, want)
	}
	if c := p.GetGrpcService().GetEnvoyGrpc().GetClusterName(); !strings.HasPrefix(c, "envoyextensionpolicy/") {
		t.Errorf("ext_proc cluster %q", c)
	}

	// Policy filters sit in the chain disabled; each route turns on those of its policies.
	// ext_proc must come before the authentication filter (the EnvoyProxy's filterOrder), the
	// header filters of envoypatchpolicy-headers.yaml right after it.
	var chain []string
	for _, f := range tr.hcm.GetHttpFilters() {
		chain = append(chain, strings.SplitN(f.GetName(), "/", 2)[0])
	}
	wantChain := []string{extProcFilter, "cors-extproc.vary", "cors-extproc.headers", "envoy.filters.http.basic_auth", routerFilter}
	if !slices.Equal(chain, wantChain) {
		t.Errorf("filter chain %v, want %v", chain, wantChain)
	}
	// What `cors-extproc validate --mode one-trip` says of it (docs/envoy-extproc.md section 7).
	errs, warnings := tr.chain(t).Check(true, "cors-extproc")
	if len(errs)+len(warnings) > 0 {
		t.Errorf("the chain for --mode one-trip: errors %q, warnings %q", errs, warnings)
	}
	for name, r := range tr.routes {
		if !slices.Contains(r.filters, tr.extProcName) {
			t.Errorf("route %s does not turn on %s", name, tr.extProcName)
		}
	}
}

// TestEnvoyGatewayTranslatedMetadata: the annotations reach the route (HTTPRoute) and the
// virtual host (Gateway) in the shape the server reads (contract section 3).
func TestEnvoyGatewayTranslatedMetadata(t *testing.T) {
	tr := loadEGTranslation(t)
	annotation := func(name string, where string, md map[string]any) {
		t.Helper()
		res := jsonList(jsonObject(md["envoy-gateway"])["resources"])
		if len(res) != 1 {
			t.Fatalf("%s: want one resource, got %v", where, md)
		}
		if got := jsonObject(jsonObject(res[0])["annotations"])["cors-policy"]; got != name {
			t.Errorf("%s: cors-policy %v, want %s", where, got, name)
		}
	}
	gw := loadEnvoyGateway(t).gateway
	for name, r := range tr.routes {
		annotation(gw.Annotations[egAnnotationPrefix+"cors-policy"], "virtual host of "+name, metadataMap(r.vhostMetadata))
	}
	annotation("storefront", egStorefront, metadataMap(tr.route(t, egStorefront).metadata))
	if a := jsonObject(jsonList(jsonObject(metadataMap(tr.route(t, egReports).metadata)["envoy-gateway"])["resources"])[0])["annotations"]; a != nil {
		t.Errorf("%s: annotations %v, want none", egReports, a)
	}
}

// metadataMap is a metadata's filter_metadata as plain values.
func metadataMap(md *corev3.Metadata) map[string]any {
	out := map[string]any{}
	for ns, st := range md.GetFilterMetadata() {
		out[ns] = st.AsMap()
	}
	return out
}

// TestEnvoyGatewayFailOpenGrantsNothing is TestEnvoyFailOpenGrantsNothing for the translation:
// with failOpen, every route that turns cors-extproc on and has a policy (its HTTPRoute's
// annotation or the Gateway's) must remove the upstream's Access-Control-Allow-Origin (an
// HTTPRoute rule's ResponseHeaderModifier), or an outage would pass it to the browser
// unfiltered. TestRealEnvoyGatewayFailsOpen shows the outcome on Envoy 1.39.
func TestEnvoyGatewayFailOpenGrantsNothing(t *testing.T) {
	tr := loadEGTranslation(t)
	if !tr.extProc.GetFailureModeAllow() {
		t.Skip("fail-closed: nothing passes without cors-extproc")
	}
	policy := func(md *corev3.Metadata) any {
		res := jsonList(jsonObject(metadataMap(md)["envoy-gateway"])["resources"])
		if len(res) == 0 {
			return nil
		}
		return jsonObject(jsonObject(res[0])["annotations"])["cors-policy"]
	}
	for name, r := range tr.routes {
		hasPolicy := policy(r.metadata) != nil || policy(r.vhostMetadata) != nil
		if !slices.Contains(r.filters, tr.extProcName) || !hasPolicy {
			continue
		}
		if !slices.Contains(r.responseHeadersToRemove, acao) {
			t.Errorf("route %s: carries a policy but keeps the upstream's ACAO, which fail-open would pass unfiltered", name)
		}
	}
}
