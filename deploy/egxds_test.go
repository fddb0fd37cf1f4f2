package deploy_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	// The typed configs of Envoy Gateway's translation that the harness does not register.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/basic_auth/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"

	"github.com/cors-extproc/cors-extproc/internal/envoyconfig"
	"github.com/cors-extproc/cors-extproc/internal/realenvoy"
)

// egTranslation is the fixture (Envoy Gateway's own xDS for deploy/envoy-gateway/) as a static
// bootstrap a real Envoy runs, with the parts the tests read.
type egTranslation struct {
	bootstrap *bootstrapv3.Bootstrap
	hcm       *hcmv3.HttpConnectionManager // of the Gateway's listener, routes inline
	// extProcName is the ext_proc filter's name in the chain: Envoy Gateway names it after the
	// EnvoyExtensionPolicy.
	extProcName string
	extProc     *extprocv3.ExternalProcessor
	routes      map[string]egRoute // by xDS route name
}

// egRoute is one route of the translation and the virtual host it is in.
type egRoute struct {
	host, prefix  string
	metadata      *corev3.Metadata
	vhostMetadata *corev3.Metadata
	// filters are the filters the route turns on (typed_per_filter_config keys): Envoy Gateway
	// puts policy filters in the chain disabled and enables them per route.
	filters []string
	// responseHeadersToRemove are the route's and its virtual host's
	// response_headers_to_remove (an HTTPRoute rule's ResponseHeaderModifier removals): Envoy's
	// router drops them from the upstream's response before any filter sees it.
	responseHeadersToRemove []string
}

func loadEGTranslation(t *testing.T) egTranslation {
	t.Helper()
	raw, err := json.Marshal(egStaticBootstrap(t, loadEGFixture(t)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := realenvoy.DecodeBootstrap(raw)
	if err != nil {
		t.Fatalf("%s as a static bootstrap: %v", egFixtureFile, err)
	}
	tr := egTranslation{bootstrap: b, routes: map[string]egRoute{}}
	ls := b.GetStaticResources().GetListeners()
	if len(ls) != 1 {
		t.Fatalf("%s: want the Gateway's one listener, got %d", egFixtureFile, len(ls))
	}
	tr.hcm = &hcmv3.HttpConnectionManager{}
	if err := ls[0].GetDefaultFilterChain().GetFilters()[0].GetTypedConfig().UnmarshalTo(tr.hcm); err != nil {
		t.Fatalf("listener %s: %v", ls[0].GetName(), err)
	}
	for _, f := range tr.hcm.GetHttpFilters() {
		if !strings.HasPrefix(f.GetName(), extProcFilter+"/") {
			continue
		}
		if tr.extProc != nil {
			t.Fatalf("listener %s: more than one ext_proc filter", ls[0].GetName())
		}
		tr.extProcName, tr.extProc = f.GetName(), &extprocv3.ExternalProcessor{}
		if err := f.GetTypedConfig().UnmarshalTo(tr.extProc); err != nil {
			t.Fatalf("%s: %v", f.GetName(), err)
		}
	}
	if tr.extProc == nil {
		t.Fatalf("listener %s: no ext_proc filter", ls[0].GetName())
	}
	for _, vh := range tr.hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			er := egRoute{host: vh.GetDomains()[0], prefix: r.GetMatch().GetPrefix(), metadata: r.GetMetadata(), vhostMetadata: vh.GetMetadata(),
				responseHeadersToRemove: append(slices.Clone(r.GetResponseHeadersToRemove()), vh.GetResponseHeadersToRemove()...)}
			for name := range r.GetTypedPerFilterConfig() {
				er.filters = append(er.filters, name)
			}
			tr.routes[r.GetName()] = er
		}
	}
	return tr
}

// chain is the Gateway listener's filter chain as `cors-extproc validate` reads it.
func (tr egTranslation) chain(t *testing.T) *envoyconfig.Chain {
	t.Helper()
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(tr.bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	chains, err := envoyconfig.ReadChains(egFixtureFile, js)
	if err != nil || len(chains) != 1 {
		t.Fatalf("%s: want one filter chain with cors-extproc's filters, got %d (%v)", egFixtureFile, len(chains), err)
	}
	return chains[0]
}

// headersNamespace is the namespace the translation's header filters read.
func (tr egTranslation) headersNamespace(t *testing.T) string {
	t.Helper()
	w := tr.chain(t).Writes[acao]
	if len(w) != 1 {
		t.Fatalf("%s: want one write of %s from metadata, got %v", egFixtureFile, acao, w)
	}
	return w[0].Namespace
}

// withMessageTimeout sets the ext_proc filter's message_timeout in the bootstrap (and in hcm
// and extProc).
func (tr *egTranslation) withMessageTimeout(t *testing.T, d time.Duration) {
	t.Helper()
	tr.extProc.MessageTimeout = durationpb.New(d)
	for _, f := range tr.hcm.GetHttpFilters() {
		if f.GetName() == tr.extProcName {
			f.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, tr.extProc)}
		}
	}
	l := tr.bootstrap.GetStaticResources().GetListeners()[0]
	l.GetDefaultFilterChain().GetFilters()[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, tr.hcm)}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// route returns the translated route of an HTTPRoute's first rule and match on one hostname,
// by the name Envoy Gateway gives it.
func (tr egTranslation) route(t *testing.T, name string) egRoute {
	t.Helper()
	r, ok := tr.routes[name]
	if !ok {
		t.Fatalf("%s: no route %s", egFixtureFile, name)
	}
	return r
}

// egStaticBootstrap turns the fixture's config dump into a bootstrap a real Envoy runs without
// Envoy Gateway: the Gateway's listeners with their route configuration inline (for RDS), and
// the clusters with the endpoints of the dump, static (for EDS). Nothing else of the
// translation changes; realenvoy.Loopback then moves the addresses. Envoy Gateway's own
// listeners and clusters (readiness, stats, its xDS server) are not part of the translation of
// the manifests and are left out; Envoy Gateway's admin listener and runtime layer are kept.
func egStaticBootstrap(t *testing.T, f egFixture) map[string]any {
	t.Helper()
	dump := cloneJSON(t, f.Xds)
	var (
		bootstrap map[string]any
		listeners []any
		clusters  []any
		routes    = map[string]any{}
		endpoints = map[string]any{}
	)
	for _, c := range jsonList(dump["configs"]) {
		c := jsonObject(c)
		switch typ, _ := c["@type"].(string); {
		case strings.HasSuffix(typ, ".BootstrapConfigDump"):
			bootstrap = jsonObject(c["bootstrap"])
		case strings.HasSuffix(typ, ".ListenersConfigDump"):
			for _, l := range jsonList(c["dynamicListeners"]) {
				listeners = append(listeners, jsonObject(jsonObject(l)["activeState"])["listener"])
			}
		case strings.HasSuffix(typ, ".RoutesConfigDump"):
			for _, r := range jsonList(c["dynamicRouteConfigs"]) {
				rc := jsonObject(jsonObject(r)["routeConfig"])
				delete(rc, "@type")
				routes[rc["name"].(string)] = rc
			}
		case strings.HasSuffix(typ, ".ClustersConfigDump"):
			for _, cl := range jsonList(c["dynamicActiveClusters"]) {
				clusters = append(clusters, jsonObject(cl)["cluster"])
			}
		case strings.HasSuffix(typ, ".EndpointsConfigDump"):
			for _, e := range jsonList(c["dynamicEndpointConfigs"]) {
				cla := jsonObject(jsonObject(e)["endpointConfig"])
				delete(cla, "@type")
				endpoints[cla["clusterName"].(string)] = cla
			}
		}
	}
	if bootstrap == nil || len(listeners) == 0 || len(clusters) == 0 {
		t.Fatalf("%s: the config dump lacks a bootstrap, listeners or clusters", egFixtureFile)
	}

	var static []any
	for _, l := range listeners {
		l := jsonObject(l)
		delete(l, "@type")
		inlined := 0
		for _, hcm := range egConnectionManagers(l) {
			rds, ok := hcm["rds"].(map[string]any)
			if !ok {
				continue
			}
			name, _ := rds["routeConfigName"].(string)
			rc, ok := routes[name]
			if !ok {
				t.Fatalf("listener %v: no route configuration %q", l["name"], name)
			}
			delete(hcm, "rds")
			hcm["routeConfig"] = rc
			inlined++
		}
		if inlined > 0 {
			static = append(static, l)
		}
	}
	if len(static) == 0 {
		t.Fatalf("%s: no listener takes its routes from RDS", egFixtureFile)
	}

	for _, c := range clusters {
		c := jsonObject(c)
		delete(c, "@type")
		if c["type"] != "EDS" {
			continue
		}
		service, _ := jsonObject(c["edsClusterConfig"])["serviceName"].(string)
		cla, ok := endpoints[service]
		if !ok {
			t.Fatalf("cluster %v: no endpoints %q", c["name"], service)
		}
		delete(c, "edsClusterConfig")
		c["type"] = "STATIC"
		c["loadAssignment"] = cla
	}

	out := map[string]any{"staticResources": map[string]any{"listeners": static, "clusters": clusters}}
	for _, keep := range []string{"admin", "layeredRuntime"} {
		if v, ok := bootstrap[keep]; ok {
			out[keep] = v
		}
	}
	return out
}

// egConnectionManagers returns the HTTP connection managers of a listener's filter chains.
func egConnectionManagers(listener map[string]any) []map[string]any {
	chains := jsonList(listener["filterChains"])
	if d, ok := listener["defaultFilterChain"]; ok {
		chains = append(chains, d)
	}
	var out []map[string]any
	for _, chain := range chains {
		for _, f := range jsonList(jsonObject(chain)["filters"]) {
			f := jsonObject(f)
			if f["name"] == "envoy.filters.network.http_connection_manager" {
				out = append(out, jsonObject(f["typedConfig"]))
			}
		}
	}
	return out
}

func cloneJSON(t *testing.T, v map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// jsonObject and jsonList read decoded JSON, giving an empty value for anything else.
func jsonObject(v any) map[string]any {
	m, _ := v.(map[string]any)
	if m == nil {
		return map[string]any{}
	}
	return m
}

func jsonList(v any) []any {
	l, _ := v.([]any)
	return l
}
