package deploy_test

import (
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	dnsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/clusters/dns/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/common/matching/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/matcher/action/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

const (
	extProcFilter = "envoy.filters.http.ext_proc"
	routerFilter  = "envoy.filters.http.router"
	corsNamespace = "cors" // the server's --metadata-namespace default
)

// The named Envoy image: one release tag, in a comment of envoy.yaml.
var envoyImageRE = regexp.MustCompile(`envoyproxy/envoy:v(\d+)\.(\d+)\.(\d+)`)

// envoyConfig is deploy/envoy.yaml decoded as Envoy decodes it.
type envoyConfig struct {
	bootstrap *bootstrapv3.Bootstrap
	image     string // e.g. envoyproxy/envoy:v1.36.13
	hcm       *hcmv3.HttpConnectionManager
	filters   []string // HTTP filter names, in order
	extProc   *extprocv3.ExternalProcessor
}

func loadEnvoy(t *testing.T) envoyConfig {
	t.Helper()
	raw := readFile(t, "envoy.yaml")
	images := envoyImageRE.FindAllSubmatch(raw, -1)
	if len(images) != 1 {
		t.Fatalf("envoy.yaml must name exactly one envoyproxy/envoy:vX.Y.Z image in a comment, found %d", len(images))
	}
	c := envoyConfig{bootstrap: &bootstrapv3.Bootstrap{}, image: string(images[0][0])}
	decodeProto(t, "envoy.yaml", raw, c.bootstrap)
	validate(t, "envoy.yaml", c.bootstrap)

	listeners := c.bootstrap.GetStaticResources().GetListeners()
	if len(listeners) != 1 || len(listeners[0].GetFilterChains()) != 1 {
		t.Fatalf("want one listener with one filter chain, got %d listeners", len(listeners))
	}
	network := listeners[0].GetFilterChains()[0].GetFilters()
	if len(network) != 1 {
		t.Fatalf("want only the HTTP connection manager, got %d network filters", len(network))
	}
	c.hcm = &hcmv3.HttpConnectionManager{}
	unmarshalAny(t, network[0].GetTypedConfig(), c.hcm)
	for _, f := range c.hcm.GetHttpFilters() {
		c.filters = append(c.filters, f.GetName())
		switch f.GetName() {
		case extProcFilter:
			c.extProc = &extprocv3.ExternalProcessor{}
			unmarshalAny(t, f.GetTypedConfig(), c.extProc)
		case routerFilter:
			unmarshalAny(t, f.GetTypedConfig(), &routerv3.Router{})
		}
	}
	return c
}

func unmarshalAny(t *testing.T, a *anypb.Any, m proto.Message) {
	t.Helper()
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("typed_config %s: %v", a.GetTypeUrl(), err)
	}
}

func (c envoyConfig) cluster(t *testing.T, name string) *clusterv3.Cluster {
	t.Helper()
	for _, cl := range c.bootstrap.GetStaticResources().GetClusters() {
		if cl.GetName() == name {
			return cl
		}
	}
	t.Fatalf("envoy.yaml: no cluster %q", name)
	return nil
}

// soleAddress is the one socket address of a cluster with one endpoint.
func soleAddress(t *testing.T, cl *clusterv3.Cluster) (string, uint32) {
	t.Helper()
	eps := cl.GetLoadAssignment().GetEndpoints()
	if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
		t.Fatalf("cluster %s: want one endpoint", cl.GetName())
	}
	sa := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	return sa.GetAddress(), sa.GetPortValue()
}

// exampleRoute is one example route of envoy.yaml, as the ext_proc filter sees it.
type exampleRoute struct {
	VirtualHost         string
	Metadata            *corev3.Metadata // the route's metadata (xds.route_metadata), nil if none
	VirtualHostMetadata *corev3.Metadata // xds.virtual_host_metadata, nil if none
	ExtProcDisabled     bool             // ExtProcPerRoute disabled: no ext_proc stream at all
	// GRPCMetadata is the ext_proc stream's initial metadata the route's ExtProcPerRoute
	// overrides set (x-cors-policy).
	GRPCMetadata map[string]string
	// ProcessingMode is the processing mode the route's ExtProcPerRoute overrides set.
	ProcessingMode *extprocv3.ProcessingMode
	// ResponseHeadersToRemove are the route's and its virtual host's
	// response_headers_to_remove: Envoy's router drops them from the upstream's response
	// before any filter sees it.
	ResponseHeadersToRemove []string
}

// envoyRoutes returns envoy.yaml's routes by name.
func envoyRoutes(t *testing.T, c envoyConfig) map[string]exampleRoute {
	t.Helper()
	routes := map[string]exampleRoute{}
	for _, vh := range c.hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if r.GetName() == "" {
				t.Fatalf("virtual host %s: every route needs a name (xds.route_name, tests)", vh.GetName())
			}
			if _, dup := routes[r.GetName()]; dup {
				t.Fatalf("route name %s used twice", r.GetName())
			}
			per := extProcPerRoute(t, r)
			er := exampleRoute{
				VirtualHost:         vh.GetName(),
				Metadata:            r.GetMetadata(),
				VirtualHostMetadata: vh.GetMetadata(),
				ExtProcDisabled:     per.GetDisabled(),
				ProcessingMode:      per.GetOverrides().GetProcessingMode(),
				ResponseHeadersToRemove: append(slices.Clone(r.GetResponseHeadersToRemove()),
					vh.GetResponseHeadersToRemove()...),
			}
			for _, hv := range per.GetOverrides().GetGrpcInitialMetadata() {
				if er.GRPCMetadata == nil {
					er.GRPCMetadata = map[string]string{}
				}
				er.GRPCMetadata[hv.GetKey()] = hv.GetValue()
			}
			routes[r.GetName()] = er
		}
	}
	return routes
}

// extProcPerRoute is the route's ext_proc per-route config, nil when it has none.
func extProcPerRoute(t *testing.T, r *routev3.Route) *extprocv3.ExtProcPerRoute {
	t.Helper()
	a, ok := r.GetTypedPerFilterConfig()[extProcFilter]
	if !ok {
		return nil
	}
	per := &extprocv3.ExtProcPerRoute{}
	unmarshalAny(t, a, per)
	validate(t, "route "+r.GetName(), per)
	return per
}

func TestEnvoyImageIsPinnedToAFixedRelease(t *testing.T) {
	c := loadEnvoy(t)
	m := envoyImageRE.FindStringSubmatch(c.image)
	// request_attributes exist since 1.30; 1.37.0 alone prefixes the route metadata text
	// (docs/envoy-extproc.md section 6).
	major, _ := strconv.Atoi(m[1]) // the pattern holds digits only
	minor, _ := strconv.Atoi(m[2])
	patch, _ := strconv.Atoi(m[3])
	if major != 1 || minor < 30 || (minor == 37 && patch == 0) {
		t.Errorf("%s: want a 1.x release from 1.30 on, other than 1.37.0", c.image)
	}
}

func TestEnvoyBootstrap(t *testing.T) {
	c := loadEnvoy(t)

	if a := c.bootstrap.GetAdmin().GetAddress().GetSocketAddress().GetAddress(); a != "127.0.0.1" {
		t.Errorf("admin listens on %q, want 127.0.0.1", a)
	}
	if p := c.bootstrap.GetStaticResources().GetListeners()[0].GetAddress().GetSocketAddress().GetPortValue(); p != 8080 {
		t.Errorf("listener port %d, want 8080", p)
	}

	ext := slices.Index(c.filters, extProcFilter)
	if ext != 0 || c.filters[len(c.filters)-1] != routerFilter {
		t.Errorf("HTTP filters %v: want ext_proc first and the router last", c.filters)
	}
	// The header filters fit both server modes (docs/envoy-extproc.md section 7), with the
	// namespace the servers send.
	for _, oneTrip := range []bool{false, true} {
		errs, warnings := headerChain(t).Check(oneTrip, "cors-extproc")
		if len(errs)+len(warnings) > 0 {
			t.Errorf("envoy.yaml filter chain, one-trip %v: %v %v", oneTrip, errs, warnings)
		}
	}
	if c.hcm.GetRds() != nil || c.hcm.GetRouteConfig() == nil {
		t.Error("routes must be inline (route_config), so the file runs as is")
	}

	p := c.extProc
	for _, attr := range []string{"xds.route_metadata", "xds.virtual_host_metadata", "xds.route_name"} {
		if !slices.Contains(p.GetRequestAttributes(), attr) {
			t.Errorf("ext_proc request_attributes %v lack %s", p.GetRequestAttributes(), attr)
		}
	}
	if !p.GetAllowModeOverride() {
		t.Error("ext_proc: allow_mode_override must be true (the server skips the response phase)")
	}
	want := &extprocv3.ProcessingMode{
		RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
		ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
		RequestBodyMode:     extprocv3.ProcessingMode_NONE,
		ResponseBodyMode:    extprocv3.ProcessingMode_NONE,
		RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
		ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
	}
	if !proto.Equal(p.GetProcessingMode(), want) {
		t.Errorf("ext_proc processing_mode %v, want headers only: %v", p.GetProcessingMode(), want)
	}
	if d := p.GetMessageTimeout().AsDuration(); d <= 0 || d > 500*time.Millisecond {
		t.Errorf("ext_proc message_timeout %v: want it set, at most 500ms", d)
	}
	if !p.GetFailureModeAllow() {
		t.Error("ext_proc failure_mode_allow: the file documents fail-open; keep the comment and the value in step")
	}
	if p.GetObservabilityMode() || p.GetMutationRules() != nil {
		t.Error("ext_proc: observability_mode or mutation_rules would drop the server's header mutations")
	}

	cl := c.cluster(t, p.GetGrpcService().GetEnvoyGrpc().GetClusterName())
	checkExtProcCluster(t, "envoy.yaml", cl)

	clusters := map[string]bool{}
	for _, cl := range c.bootstrap.GetStaticResources().GetClusters() {
		clusters[cl.GetName()] = true
	}
	for _, vh := range c.hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if !clusters[r.GetRoute().GetCluster()] {
				t.Errorf("route %s: cluster %q is not defined", r.GetName(), r.GetRoute().GetCluster())
			}
			for name := range r.GetTypedPerFilterConfig() {
				if !slices.Contains(c.filters, name) {
					t.Errorf("route %s: typed_per_filter_config key %q names no HTTP filter", r.GetName(), name)
				}
			}
		}
	}
}

// strictDNS reports whether a cluster resolves its address to every address DNS returns: type
// STRICT_DNS, or its non-deprecated form, the envoy.cluster.dns extension with
// all_addresses_in_single_endpoint false.
func strictDNS(t *testing.T, cl *clusterv3.Cluster) bool {
	t.Helper()
	if ct := cl.GetClusterType(); ct != nil {
		dns := &dnsv3.DnsCluster{}
		unmarshalAny(t, ct.GetTypedConfig(), dns)
		return ct.GetName() == "envoy.cluster.dns" && !dns.GetAllAddressesInSingleEndpoint()
	}
	return cl.GetType() == clusterv3.Cluster_STRICT_DNS
}

// checkExtProcCluster checks a cluster carrying ext_proc streams: HTTP/2, one STRICT_DNS
// endpoint on the headless Service of deploy/k8s, gRPC health checks.
func checkExtProcCluster(t *testing.T, file string, cl *clusterv3.Cluster) {
	t.Helper()
	if !strictDNS(t, cl) {
		t.Errorf("%s cluster %s: want STRICT_DNS, or the DNS cluster extension without all_addresses_in_single_endpoint (every pod of the headless Service)", file, cl.GetName())
	}
	opts, ok := cl.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if !ok {
		t.Fatalf("%s cluster %s: no HttpProtocolOptions (gRPC needs HTTP/2)", file, cl.GetName())
	}
	http := &httpv3.HttpProtocolOptions{}
	unmarshalAny(t, opts, http)
	if http.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Errorf("%s cluster %s: want explicit HTTP/2", file, cl.GetName())
	}
	var grpcHealth bool
	for _, hc := range cl.GetHealthChecks() {
		if g := hc.GetGrpcHealthCheck(); g != nil && g.GetServiceName() == "" {
			grpcHealth = true
		}
	}
	if !grpcHealth {
		t.Errorf("%s cluster %s: want a gRPC health check of the overall status (service name \"\")", file, cl.GetName())
	}
	host, port := soleAddress(t, cl)
	svc := headlessService(t)
	if want := svc.Name + "." + svc.Namespace + ".svc.cluster.local"; host != want {
		t.Errorf("%s cluster %s: address %s, want the headless Service %s", file, cl.GetName(), host, want)
	}
	if port != uint32(svc.Spec.Ports[0].Port) {
		t.Errorf("%s cluster %s: port %d, want the Service's %d", file, cl.GetName(), port, svc.Spec.Ports[0].Port)
	}
}

func TestEnvoyExampleRoutes(t *testing.T) {
	c := loadEnvoy(t)
	routes := envoyRoutes(t, c)
	want := []string{"public-api", "spa-api", "tenants", "partners", "legacy-preflight", "legacy", "reports", "internal", "www-fonts", "www-default"}
	var got []string
	for name := range routes {
		got = append(got, name)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("routes %v, want %v (the behaviour tests cover each)", got, want)
	}
	for name, r := range routes {
		policy := r.Metadata.GetFilterMetadata()[corsNamespace]
		vhDefault := r.VirtualHostMetadata.GetFilterMetadata()[corsNamespace]
		switch {
		case r.ExtProcDisabled:
			if policy != nil {
				t.Errorf("route %s: ext_proc disabled, yet it has a policy", name)
			}
		case policy == nil && vhDefault == nil:
			t.Errorf("route %s: no policy and no virtual-host default", name)
		}
	}
	if routes["www-default"].Metadata != nil {
		t.Error("www-default must have no metadata: it shows the virtual-host default")
	}
	if !routes["internal"].ExtProcDisabled {
		t.Error("internal must disable ext_proc: it is the no-CORS route")
	}
}

// TestEnvoyFailOpenGrantsNothing: with failure_mode_allow (fail open), a request passes without
// cors-extproc when the service is down or late, so the upstream's own
// Access-Control-Allow-Origin would reach the browser unfiltered. Every route that carries a
// policy must therefore remove it (route or virtual host response_headers_to_remove: the
// router drops it before cors-extproc sees the response, which sets or removes ACAO on every
// actual response anyway, docs/cors-semantics.md section 8). The one exception is a route that
// matches only preflights of a preflight_continue policy: the upstream answers those itself.
// faults/ proves the outcome through a real Envoy (docs/failure-modes.md).
func TestEnvoyFailOpenGrantsNothing(t *testing.T) {
	c := loadEnvoy(t)
	if !c.extProc.GetFailureModeAllow() {
		t.Skip("fail-closed: nothing passes without cors-extproc")
	}
	for _, vh := range c.hcm.GetRouteConfig().GetVirtualHosts() {
		vhRemoves := slices.Contains(vh.GetResponseHeadersToRemove(), "access-control-allow-origin")
		for _, r := range vh.GetRoutes() {
			policy := r.GetMetadata().GetFilterMetadata()[corsNamespace]
			if policy == nil {
				policy = vh.GetMetadata().GetFilterMetadata()[corsNamespace]
			}
			removes := vhRemoves || slices.Contains(r.GetResponseHeadersToRemove(), "access-control-allow-origin")
			switch {
			case extProcPerRoute(t, r).GetDisabled() || policy == nil:
				if removes {
					t.Errorf("route %s: no CORS policy, yet the upstream's ACAO is removed", r.GetName())
				}
			case policy.GetFields()["preflight_continue"].GetBoolValue() && preflightsOnly(r.GetMatch()):
				if removes {
					t.Errorf("route %s: preflights of a preflight_continue policy must keep the upstream's answer whole", r.GetName())
				}
			case !removes:
				t.Errorf("route %s: carries a policy but keeps the upstream's ACAO, which fail-open would pass unfiltered", r.GetName())
			}
		}
	}
}

// preflightsOnly reports whether a route match admits only preflights (docs/cors-semantics.md
// section 6): method OPTIONS, an Origin and an Access-Control-Request-Method present.
func preflightsOnly(m *routev3.RouteMatch) bool {
	need := map[string]bool{":method": false, "origin": false, "access-control-request-method": false}
	for _, h := range m.GetHeaders() {
		switch name := h.GetName(); {
		case name == ":method" && h.GetStringMatch().GetExact() == "OPTIONS" && !h.GetInvertMatch():
			need[name] = true
		case (name == "origin" || name == "access-control-request-method") && h.GetPresentMatch() && !h.GetInvertMatch():
			need[name] = true
		}
	}
	return need[":method"] && need["origin"] && need["access-control-request-method"]
}
