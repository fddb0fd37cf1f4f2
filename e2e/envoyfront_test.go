package e2e

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	ratelimitfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
	"github.com/cors-extproc/cors-extproc/internal/realenvoy"
	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

// shippedBootstrap is the Envoy configuration the repository ships (tests run in e2e/).
const shippedBootstrap = "../deploy/envoy.yaml"

// publicListener names the copy of the shipped listener that Chromium is told is on the public
// internet (see publicHost).
const publicListener = "public"

// envoyFront is a real Envoy (internal/realenvoy) between the browser and the service, run
// from deploy/envoy.yaml as shipped: its listener, HTTP connection manager, HTTP filter chain
// and clusters, with only these changes:
//
//   - addresses on loopback (realenvoy.Loopback): the service's cluster reaches a
//     realenvoy.Recorder in front of the real binary, the upstream cluster the suite's API;
//   - the route table is the suite's (envoyRoutes), each policy on the channel its route
//     names: route metadata, virtual-host metadata, or x-cors-policy through the ext_proc
//     filter's per-route grpc_initial_metadata;
//   - the ext_proc filter's message_timeout is testMessageTimeout, as in the envoytest front;
//   - the listener is served twice, the copy named publicListener;
//   - test additions for the routes Envoy answers itself (ownReply, ownReplyRoute): an RBAC
//     and a local_ratelimit filter placed after the shipped filters, right before the router,
//     as an operator places an authorization or rate limit filter after ext_proc and the header
//     filters; each does nothing but on the route that configures it. And a cluster without
//     endpoints (noEndpointsCluster).
//
// Whatever else the shipped chain holds (the header filters after ext_proc, the access log)
// runs as shipped. Every record comes from what happened: the Recorder holds what Envoy sent the
// service and what it answered, the upstream what reached it and what it answered, and
// Chromium reports what the browser got (wire_test.go).
type envoyFront struct {
	envoy    *realenvoy.Envoy
	recorder *realenvoy.Recorder
	upstream *upstreamLog
	// zero are the counters that must stay 0 (see faultCounters).
	zero []string
}

// startEnvoyFront starts Envoy bin in front of the service and returns it with the addresses
// of its two listeners.
func startEnvoyFront(t *testing.T, bin realenvoy.Binary, svc *servicetest.Service) (f *envoyFront, main, public string) {
	t.Helper()
	routes := envoyRoutes()
	b, shipped := envoyBootstrap(t, routes)
	f = &envoyFront{recorder: realenvoy.NewRecorder(t, svc.GRPCAddr), zero: faultCounters(shipped)}
	var upstreamAddr string
	f.upstream, upstreamAddr = startUpstream(t, routes)
	realenvoy.Loopback(t, b, map[string]string{shipped.service: f.recorder.Addr, shipped.upstream: upstreamAddr})
	f.envoy = realenvoy.Start(t, bin, b, realenvoy.Options{})
	return f, strings.TrimPrefix(f.envoy.URL(t, shipped.listener), "http://"),
		strings.TrimPrefix(f.envoy.URL(t, publicListener), "http://")
}

// shippedChain names what envoyBootstrap found in the shipped configuration.
type shippedChain struct {
	listener, service, upstream string
	// stats is the prefix of the ext_proc filter's counters: http.<stat_prefix>.ext_proc.
	stats string
}

// The test additions for Envoy's own replies (see envoyFront): filter names, and the cluster
// without endpoints the no-healthy-upstream route goes to.
const (
	rbacFilter         = "envoy.filters.http.rbac"
	rateLimitFilter    = "envoy.filters.http.local_ratelimit"
	noEndpointsCluster = "no-endpoints"
)

// ownReplyRouteTimeout is the route timeout of the upstreamTimeout route; its API answers only
// after Envoy gave up (api.slow).
const ownReplyRouteTimeout = 500 * time.Millisecond

// ownReplyFilters are the test's RBAC and local_ratelimit filters: without a per-route config
// neither acts (RBAC without rules enforces nothing; the rate limit without a token bucket
// limits nothing).
func ownReplyFilters(t *testing.T) []*hcmv3.HttpFilter {
	return []*hcmv3.HttpFilter{
		{Name: rbacFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: pack(t, &rbacfilterv3.RBAC{})}},
		{Name: rateLimitFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: pack(t, &ratelimitfilterv3.LocalRateLimit{StatPrefix: "e2e"})}},
	}
}

// ownReplyRoute makes rt a route Envoy answers itself with reply.
func ownReplyRoute(t *testing.T, rt *routev3.Route, reply ownReply) {
	switch reply {
	case noHealthyUpstream:
		rt.GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: noEndpointsCluster}
	case upstreamTimeout:
		rt.GetRoute().Timeout = durationpb.New(ownReplyRouteTimeout)
	case directResponse:
		rt.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: directStatus, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: directBody}}}}
	case rbacDenied:
		everything := &rbacv3.Policy{Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
			Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}}
		rt.TypedPerFilterConfig[rbacFilter] = pack(t, &rbacfilterv3.RBACPerRoute{Rbac: &rbacfilterv3.RBAC{
			Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{"everything": everything}}}})
	case rateLimited:
		all := &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100}, RuntimeKey: "e2e_limited"}
		rt.TypedPerFilterConfig[rateLimitFilter] = pack(t, &ratelimitfilterv3.LocalRateLimit{
			StatPrefix:              "e2e_limited",
			TokenBucket:             &typev3.TokenBucket{MaxTokens: 1, TokensPerFill: wrapperspb.UInt32(1), FillInterval: durationpb.New(time.Hour)},
			FilterEnabled:           all,
			FilterEnforced:          all,
			EnableXRatelimitHeaders: ratelimitv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03,
		})
	default:
		t.Fatalf("route %s: no Envoy reply %q", rt.GetName(), reply)
	}
}

// The direct_response route's answer.
const (
	directStatus = http.StatusGone
	directBody   = "gone: answered by Envoy's direct_response"
)

// envoyBootstrap is deploy/envoy.yaml with the suite's routes (see envoyFront). The shipped
// file must hold one listener with one HTTP connection manager whose route table is inline and
// whose chain holds an ext_proc filter; the suite's routes go to the cluster of its first route.
func envoyBootstrap(t *testing.T, routes routeTable) (*bootstrapv3.Bootstrap, shippedChain) {
	t.Helper()
	b := realenvoy.LoadBootstrap(t, shippedBootstrap)
	listeners := b.GetStaticResources().GetListeners()
	if len(listeners) != 1 || len(listeners[0].GetFilterChains()) != 1 {
		t.Fatalf("%s: the browser suite plays one listener with one filter chain", shippedBootstrap)
	}
	l := listeners[0]
	var hcmFilter *listenerv3.Filter
	hcm := &hcmv3.HttpConnectionManager{}
	for _, f := range l.GetFilterChains()[0].GetFilters() {
		if f.GetTypedConfig().MessageIs(hcm) {
			hcmFilter = f
			unpack(t, f.GetTypedConfig(), hcm)
		}
	}
	if hcmFilter == nil || hcm.GetRouteConfig() == nil {
		t.Fatalf("%s: no HTTP connection manager with an inline route_config", shippedBootstrap)
	}
	shipped := shippedChain{listener: l.GetName(), stats: "http." + hcm.GetStatPrefix() + ".ext_proc."}
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if c := r.GetRoute().GetCluster(); c != "" && shipped.upstream == "" {
				shipped.upstream = c
			}
		}
	}

	var extProcFilter string
	for _, f := range hcm.GetHttpFilters() {
		ext := &extprocfilterv3.ExternalProcessor{}
		if !f.GetTypedConfig().MessageIs(ext) {
			continue
		}
		unpack(t, f.GetTypedConfig(), ext)
		ext.MessageTimeout = durationpb.New(testMessageTimeout)
		f.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: pack(t, ext)}
		extProcFilter = f.GetName()
		shipped.service = ext.GetGrpcService().GetEnvoyGrpc().GetClusterName()
	}
	if extProcFilter == "" || shipped.service == "" || shipped.upstream == "" {
		t.Fatalf("%s: want an ext_proc filter on an envoy_grpc cluster and a route to an upstream cluster", shippedBootstrap)
	}

	hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: envoyRouteConfig(t, routes, extProcFilter, shipped.upstream)}
	// Test additions (see envoyFront): the filters go right before the router, the last filter.
	filters := hcm.GetHttpFilters()
	router := len(filters) - 1
	if !filters[router].GetTypedConfig().MessageIs(&routerv3.Router{}) {
		t.Fatalf("%s: the last HTTP filter is %s, not the router", shippedBootstrap, filters[router].GetName())
	}
	hcm.HttpFilters = append(append(filters[:router:router], ownReplyFilters(t)...), filters[router])
	b.StaticResources.Clusters = append(b.StaticResources.Clusters, &clusterv3.Cluster{
		Name:                 noEndpointsCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment:       &endpointv3.ClusterLoadAssignment{ClusterName: noEndpointsCluster},
	})
	hcmFilter.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: pack(t, hcm)}
	public := proto.Clone(l).(*listenerv3.Listener)
	public.Name = publicListener
	b.StaticResources.Listeners = append(listeners, public)
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("the suite's bootstrap: %v", err)
	}
	return b, shipped
}

// envoyRouteConfig is the route table as Envoy configuration: a virtual host per API host and
// one for every other host, each with one route to cluster.
func envoyRouteConfig(t *testing.T, routes routeTable, extProcFilter, cluster string) *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{Name: "e2e"}
	for _, host := range slices.Sorted(maps.Keys(routes.routes)) {
		rc.VirtualHosts = append(rc.VirtualHosts, virtualHost(t, host, routes.routes[host], extProcFilter, cluster))
	}
	rc.VirtualHosts = append(rc.VirtualHosts, virtualHost(t, "*", routes.site, extProcFilter, cluster))
	return rc
}

// virtualHost is one route as Envoy configuration: its metadata on the route and the virtual
// host, its gRPC metadata through the ext_proc filter's per-route override
// (grpc_initial_metadata; contract section 3), and the reply Envoy makes itself, if any.
func virtualHost(t *testing.T, domain string, er route, extProcFilter, cluster string) *routev3.VirtualHost {
	r := er.envoy
	rt := &routev3.Route{
		Name:     r.Name,
		Match:    &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action:   &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
		Metadata: r.Metadata,
	}
	if len(r.GRPCMetadata) > 0 {
		var md []*corev3.HeaderValue
		for _, k := range slices.Sorted(maps.Keys(r.GRPCMetadata)) {
			md = append(md, &corev3.HeaderValue{Key: k, Value: r.GRPCMetadata[k]})
		}
		rt.TypedPerFilterConfig = map[string]*anypb.Any{extProcFilter: pack(t, &extprocfilterv3.ExtProcPerRoute{
			Override: &extprocfilterv3.ExtProcPerRoute_Overrides{Overrides: &extprocfilterv3.ExtProcOverrides{GrpcInitialMetadata: md}},
		})}
	}
	if er.reply != "" {
		if rt.TypedPerFilterConfig == nil {
			rt.TypedPerFilterConfig = map[string]*anypb.Any{}
		}
		ownReplyRoute(t, rt, er.reply)
	}
	return &routev3.VirtualHost{Name: r.Name, Domains: []string{domain}, Metadata: r.VirtualHostMetadata, Routes: []*routev3.Route{rt}}
}

// ownReplies: a real Envoy makes its own replies.
func (f *envoyFront) ownReplies() bool { return true }

func pack(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func unpack(t *testing.T, a *anypb.Any, m proto.Message) {
	t.Helper()
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("%s: %v", a.GetTypeUrl(), err)
	}
}

// served reads the Recorder's streams (one per request Envoy handed to ext_proc) and pairs each
// with the upstream's record of the same request.
func (f *envoyFront) served(prefix string) []served {
	ups := f.upstream.exchanges(prefix)
	used := make([]bool, len(ups))
	var out []served
	for _, s := range f.recorder.Streams() {
		sv, requestID, ok := streamServed(s)
		if !ok || !strings.HasPrefix(sv.Path, prefix) {
			continue
		}
		// The upstream's record of it: the first not yet paired with the same x-request-id
		// (Envoy's, or the browser's where the page set one), method, host and path.
		for j, u := range ups {
			if !used[j] && u.requestID == requestID && u.Method == sv.Method && hostname(u.Host) == hostname(sv.Host) && u.Path == sv.Path {
				used[j] = true
				sv.UpstreamCalled, sv.UpstreamHeader = true, toEnvoy(u.Header)
				break
			}
		}
		out = append(out, sv)
	}
	for j, u := range ups {
		if !used[j] {
			out = append(out, served{Method: u.Method, Host: u.Host, Path: u.Path, Preflight: u.Preflight,
				UpstreamCalled: true, UpstreamHeader: toEnvoy(u.Header),
				Err: "reached the upstream, but the Recorder holds no request_headers of it"})
		}
	}
	return out
}

// streamServed reads one ext_proc stream: the request from its request_headers message, the
// route from the xds.route_name attribute, whether the service answered at once, and any
// message the service left unanswered. ok is false for a stream without request_headers.
func streamServed(s *realenvoy.Stream) (sv served, requestID string, ok bool) {
	var missing []string
	for i, req := range s.Requests {
		if rh := req.GetRequestHeaders(); rh != nil && !ok {
			ok = true
			h := http.Header{}
			for _, f := range rh.GetHeaders().GetHeaders() {
				v := f.GetValue()
				if raw := f.GetRawValue(); len(raw) > 0 {
					v = string(raw)
				}
				h.Add(f.GetKey(), v)
			}
			sv.Method, sv.Host, sv.Path = h.Get(":method"), h.Get(":authority"), h.Get(":path")
			sv.Preflight = isPreflight(sv.Method, h)
			sv.Answered = s.Responses[i].GetImmediateResponse() != nil
			requestID = h.Get("x-request-id")
			for _, attrs := range req.GetAttributes() {
				if name := attrs.GetFields()["xds.route_name"].GetStringValue(); name != "" {
					sv.Route = name
				}
			}
		}
		if s.Responses[i] == nil && !req.GetObservabilityMode() {
			missing = append(missing, messageKind(req))
		}
	}
	if len(missing) > 0 {
		sv.Err = "the service sent no answer to " + strings.Join(missing, ", ")
	}
	return sv, requestID, ok
}

func messageKind(req *extprocv3.ProcessingRequest) string {
	switch {
	case req.GetRequestHeaders() != nil:
		return "request_headers"
	case req.GetResponseHeaders() != nil:
		return "response_headers"
	}
	return fmt.Sprintf("%T", req.GetRequest())
}

// faultCounters are Envoy's counters that must stay 0. The ext_proc filter's each count a
// request whose exchange with the service failed (with failure_mode_allow Envoy then passes it
// on untouched, so the browser sees no CORS headers) or a reply Envoy refused. lb_healthy_panic
// counts streams sent while no endpoint of the service's cluster passed its health check: the
// cluster is not working as deployed.
func faultCounters(shipped shippedChain) []string {
	var out []string
	for _, c := range []string{"streams_failed", "failure_mode_allowed", "message_timeouts", "rejected_header_mutations", "spurious_msgs_received"} {
		out = append(out, shipped.stats+c)
	}
	return append(out, "cluster."+shipped.service+".lb_healthy_panic")
}

// faults lists the streams the service left unanswered, and the fault counters Envoy counted.
func (f *envoyFront) faults(t *testing.T) []string {
	var out []string
	for _, sv := range f.served("") {
		if sv.Err != "" {
			out = append(out, sv.Method+" "+sv.Host+sv.Path+": "+sv.Err)
		}
	}
	for _, c := range f.zero {
		if n := f.envoy.Counter(t, c); n != 0 {
			out = append(out, fmt.Sprintf("Envoy counted %s: %d", c, n))
		}
	}
	return out
}

// upstreamLog is the API behind the real Envoy: the routes' upstream handlers on one loopback
// server (a realenvoy.Upstream), picked by Host as the fronts pick routes, with a record of
// what each request was answered.
type upstreamLog struct {
	mu   sync.Mutex
	seen []upstreamExchange
}

// upstreamExchange is one request that reached the upstream, and the header it answered with.
type upstreamExchange struct {
	Method, Host, Path string
	Preflight          bool
	requestID          string
	Header             http.Header
}

func startUpstream(t *testing.T, routes routeTable) (*upstreamLog, string) {
	u := &upstreamLog{}
	srv := realenvoy.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		ex := upstreamExchange{Method: r.Method, Host: r.Host, Path: r.URL.RequestURI(), Preflight: isPreflight(r.Method, r.Header),
			requestID: r.Header.Get("x-request-id")}
		hw := &headerRecorder{ResponseWriter: w, wrote: func(h http.Header) {
			ex.Header = h
			u.mu.Lock()
			u.seen = append(u.seen, ex)
			u.mu.Unlock()
		}}
		routes.pick(r.Host).upstream.ServeHTTP(hw, r)
		hw.WriteHeader(http.StatusOK) // a handler that wrote nothing answered 200
	})
	return u, srv.Addr
}

// exchanges returns the requests whose path starts with prefix, in arrival order.
func (u *upstreamLog) exchanges(prefix string) []upstreamExchange {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []upstreamExchange
	for _, ex := range u.seen {
		if strings.HasPrefix(ex.Path, prefix) {
			out = append(out, ex)
		}
	}
	return out
}

// headerRecorder hands the header to wrote when the handler commits it, before a byte of the
// response leaves: by the time the browser has the response, the record exists.
type headerRecorder struct {
	http.ResponseWriter
	wrote     func(http.Header)
	committed bool
}

func (w *headerRecorder) WriteHeader(status int) {
	if w.committed {
		return
	}
	w.committed = true
	w.wrote(w.Header().Clone())
	w.ResponseWriter.WriteHeader(status)
}

func (w *headerRecorder) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.ResponseWriter.Write(p)
}

// TestEnvoyBootstrapIsTheShippedChain: the real-Envoy front runs deploy/envoy.yaml's clusters,
// connection manager and HTTP filters as shipped (but the ext_proc filter's message_timeout),
// with the test additions for Envoy's own replies only where envoyFront says, and carries each
// route's policy on the channel apiRoutes names. It needs no Envoy.
func TestEnvoyBootstrapIsTheShippedChain(t *testing.T) {
	shipped := realenvoy.LoadBootstrap(t, shippedBootstrap)
	got, chain := envoyBootstrap(t, envoyRoutes())

	clusters := got.GetStaticResources().GetClusters()
	if n := len(clusters); n == 0 || clusters[n-1].GetName() != noEndpointsCluster || len(clusters[n-1].GetLoadAssignment().GetEndpoints()) != 0 {
		t.Errorf("want the test's cluster %s, without endpoints, after the shipped ones", noEndpointsCluster)
	} else if !slices.EqualFunc(clusters[:n-1], shipped.GetStaticResources().GetClusters(),
		func(a, b *clusterv3.Cluster) bool { return proto.Equal(a, b) }) {
		t.Error("the clusters differ from the shipped ones")
	}
	names := map[string]bool{}
	for _, c := range got.GetStaticResources().GetClusters() {
		names[c.GetName()] = true
	}
	if !names[chain.service] || !names[chain.upstream] || chain.service == chain.upstream {
		t.Errorf("service cluster %q and upstream cluster %q: want two of the shipped clusters", chain.service, chain.upstream)
	}

	shippedHCM := hcmOf(t, shipped.GetStaticResources().GetListeners()[0])
	listeners := got.GetStaticResources().GetListeners()
	if len(listeners) != 2 || listeners[0].GetName() != chain.listener || listeners[1].GetName() != publicListener {
		t.Fatalf("listeners %v, want the shipped one and %s", listeners, publicListener)
	}
	hcm := hcmOf(t, listeners[0])
	if !proto.Equal(hcm, hcmOf(t, listeners[1])) {
		t.Error("the public listener's connection manager differs from the main one's")
	}
	routeConfig := hcm.GetRouteConfig()

	// The filters as shipped, but the ext_proc filter's message_timeout, and the test's own
	// right before the router.
	filters, shippedFilters := hcm.GetHttpFilters(), shippedHCM.GetHttpFilters()
	added := ownReplyFilters(t)
	if len(filters) != len(shippedFilters)+len(added) {
		t.Fatalf("%d HTTP filters, want the %d shipped and the test's %d", len(filters), len(shippedFilters), len(added))
	}
	router := len(shippedFilters) - 1
	for i, f := range added {
		if got := filters[router+i]; !proto.Equal(got, f) {
			t.Errorf("HTTP filter %d is %s, want the test's %s right before the router", router+i, got.GetName(), f.GetName())
		}
	}
	filters = append(filters[:router:router], filters[router+len(added):]...)
	var extProcFilter string
	for i, f := range filters {
		ext := &extprocfilterv3.ExternalProcessor{}
		if f.GetTypedConfig().MessageIs(ext) {
			extProcFilter = f.GetName()
			unpack(t, f.GetTypedConfig(), ext)
			if d := ext.GetMessageTimeout().AsDuration(); d != testMessageTimeout {
				t.Errorf("ext_proc message_timeout %v, want %v", d, testMessageTimeout)
			}
			shippedExt := &extprocfilterv3.ExternalProcessor{}
			unpack(t, shippedFilters[i].GetTypedConfig(), shippedExt)
			ext.MessageTimeout, shippedExt.MessageTimeout = nil, nil
			if !proto.Equal(ext, shippedExt) {
				t.Errorf("ext_proc filter %s differs from the shipped one beyond message_timeout", f.GetName())
			}
			continue
		}
		if !proto.Equal(f, shippedFilters[i]) {
			t.Errorf("HTTP filter %d (%s) differs from the shipped %s", i, f.GetName(), shippedFilters[i].GetName())
		}
	}
	hcm.HttpFilters, shippedHCM.HttpFilters = nil, nil
	hcm.RouteSpecifier, shippedHCM.RouteSpecifier = nil, nil
	if !proto.Equal(hcm, shippedHCM) {
		t.Error("the connection manager differs from the shipped one beyond its filters and routes")
	}

	// Each route's policy on its channel, nowhere else.
	vhosts := map[string]*routev3.VirtualHost{}
	for _, vh := range routeConfig.GetVirtualHosts() {
		vhosts[vh.GetDomains()[0]] = vh
	}
	for _, r := range apiRoutes {
		vh := vhosts[r.name+apiDomain]
		if vh == nil || len(vh.GetRoutes()) != 1 {
			t.Errorf("%s: no virtual host with one route", r.name)
			continue
		}
		rt := vh.GetRoutes()[0]
		wantCluster := chain.upstream
		switch r.reply {
		case noHealthyUpstream:
			wantCluster = noEndpointsCluster
		case directResponse:
			wantCluster = ""
		}
		if rt.GetName() != r.name || rt.GetRoute().GetCluster() != wantCluster {
			t.Errorf("%s: route %q to %q, want %q to %q", r.name, rt.GetName(), rt.GetRoute().GetCluster(), r.name, wantCluster)
		}
		_, rbac := rt.GetTypedPerFilterConfig()[rbacFilter]
		_, limit := rt.GetTypedPerFilterConfig()[rateLimitFilter]
		if rbac != (r.reply == rbacDenied) || limit != (r.reply == rateLimited) ||
			(rt.GetRoute().GetTimeout() != nil) != (r.reply == upstreamTimeout) || (rt.GetDirectResponse() != nil) != (r.reply == directResponse) {
			t.Errorf("%s: Envoy's own reply configured on the wrong routes: RBAC %v, rate limit %v, timeout %v, direct_response %v (want %q)",
				r.name, rbac, limit, rt.GetRoute().GetTimeout(), rt.GetDirectResponse(), r.reply)
		}
		routeMD, vhostMD := rt.GetMetadata().GetFilterMetadata()["cors"], vh.GetMetadata().GetFilterMetadata()["cors"]
		var grpcMD string
		if a, ok := rt.GetTypedPerFilterConfig()[extProcFilter]; ok {
			per := &extprocfilterv3.ExtProcPerRoute{}
			unpack(t, a, per)
			for _, h := range per.GetOverrides().GetGrpcInitialMetadata() {
				if h.GetKey() == "x-cors-policy" {
					grpcMD = h.GetValue()
				}
			}
		}
		policy := envoyfilter.Struct(r.policy)
		carries := map[channel]bool{
			routeMetadata:       proto.Equal(routeMD, policy),
			virtualHostMetadata: proto.Equal(vhostMD, policy),
			grpcMetadata:        grpcMD == policyJSON(r.policy),
		}
		holds := map[channel]bool{routeMetadata: routeMD != nil, virtualHostMetadata: vhostMD != nil, grpcMetadata: grpcMD != ""}
		for ch, has := range holds {
			if ch == r.channel && !carries[ch] || ch != r.channel && has {
				t.Errorf("%s: the policy must be on %s alone; on %s: the policy %v, anything %v", r.name, r.channel, ch, carries[ch], has)
			}
		}
	}
	if site := vhosts["*"]; site == nil || site.GetMetadata() != nil || site.GetRoutes()[0].GetMetadata() != nil {
		t.Error("want a virtual host for every other host, without a policy")
	}
}

func hcmOf(t *testing.T, l *listenerv3.Listener) *hcmv3.HttpConnectionManager {
	t.Helper()
	for _, f := range l.GetFilterChains()[0].GetFilters() {
		hcm := &hcmv3.HttpConnectionManager{}
		if f.GetTypedConfig().MessageIs(hcm) {
			unpack(t, f.GetTypedConfig(), hcm)
			return hcm
		}
	}
	t.Fatalf("listener %s has no HTTP connection manager", l.GetName())
	return nil
}
