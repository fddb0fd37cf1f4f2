package deploy_test

import (
	"encoding/json"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networkingv1 "istio.io/api/networking/v1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// istioObject is an Istio custom resource: Kubernetes metadata around a protobuf spec.
type istioObject struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            json.RawMessage   `json:"spec"`
}

// decodeIstio decodes an Istio resource strictly: the envelope as JSON, the spec with
// protojson into Istio's own API type (istio.io/api), as istiod reads it.
func decodeIstio(t *testing.T, name string, doc []byte, kind string, spec proto.Message) istioObject {
	t.Helper()
	var o istioObject
	decodeStrict(t, name, doc, &o)
	if o.Kind != kind {
		t.Fatalf("%s: kind %s, want %s", name, o.Kind, kind)
	}
	if err := protojson.Unmarshal(o.Spec, spec); err != nil {
		t.Fatalf("%s %s: %v", name, o.Metadata.Name, err)
	}
	return o
}

type istioFiles struct {
	gateway        *networkingv1.Gateway
	virtualService *networkingv1.VirtualService
	envoyFilter    *networkingv1alpha3.EnvoyFilter
	filterMeta     metav1.ObjectMeta
	cluster        *clusterv3.Cluster
	extProc        *extprocv3.ExternalProcessor
	httpFilterName string
	routes         map[string]*extprocv3.ExtProcPerRoute // by Envoy route name
}

func loadIstio(t *testing.T) istioFiles {
	t.Helper()
	f := istioFiles{
		gateway:        &networkingv1.Gateway{},
		virtualService: &networkingv1.VirtualService{},
		envoyFilter:    &networkingv1alpha3.EnvoyFilter{},
		routes:         map[string]*extprocv3.ExtProcPerRoute{},
	}
	docs := yamlDocuments(t, "istio/gateway.yaml")
	if len(docs) != 2 {
		t.Fatalf("istio/gateway.yaml: want a Gateway and a VirtualService, got %d documents", len(docs))
	}
	gw := decodeIstio(t, "istio/gateway.yaml", docs[0], "Gateway", f.gateway)
	vs := decodeIstio(t, "istio/gateway.yaml", docs[1], "VirtualService", f.virtualService)
	if gw.APIVersion != "networking.istio.io/v1" || vs.APIVersion != "networking.istio.io/v1" || !slices.Contains(f.virtualService.GetGateways(), gw.Metadata.Name) || gw.Metadata.Namespace != vs.Metadata.Namespace {
		t.Error("istio/gateway.yaml: the VirtualService (networking.istio.io/v1) must be bound to the Gateway beside it")
	}

	ef := decodeIstio(t, "istio/envoyfilter.yaml", readFile(t, "istio/envoyfilter.yaml"), "EnvoyFilter", f.envoyFilter)
	if ef.APIVersion != "networking.istio.io/v1alpha3" {
		t.Errorf("EnvoyFilter apiVersion %s", ef.APIVersion)
	}
	f.filterMeta = ef.Metadata
	for i, p := range f.envoyFilter.GetConfigPatches() {
		if p.GetMatch().GetContext() != networkingv1alpha3.EnvoyFilter_GATEWAY {
			t.Errorf("patch %d: context %v, want GATEWAY", i, p.GetMatch().GetContext())
		}
		value, err := protojson.Marshal(p.GetPatch().GetValue())
		if err != nil {
			t.Fatal(err)
		}
		switch p.GetApplyTo() {
		case networkingv1alpha3.EnvoyFilter_CLUSTER:
			f.cluster = &clusterv3.Cluster{}
			decodeProto(t, "EnvoyFilter CLUSTER patch", value, f.cluster)
			validate(t, "EnvoyFilter CLUSTER patch", f.cluster)
		case networkingv1alpha3.EnvoyFilter_HTTP_FILTER:
			if p.GetPatch().GetOperation() != networkingv1alpha3.EnvoyFilter_Patch_INSERT_FIRST ||
				p.GetMatch().GetListener().GetFilterChain().GetFilter().GetName() != "envoy.filters.network.http_connection_manager" {
				t.Error("the ext_proc filter must be inserted first in the HTTP connection manager's chain")
			}
			hf := &hcmv3.HttpFilter{}
			decodeProto(t, "EnvoyFilter HTTP_FILTER patch", value, hf)
			validate(t, "EnvoyFilter HTTP_FILTER patch", hf)
			f.httpFilterName = hf.GetName()
			f.extProc = &extprocv3.ExternalProcessor{}
			unmarshalAny(t, hf.GetTypedConfig(), f.extProc)
		case networkingv1alpha3.EnvoyFilter_HTTP_ROUTE:
			name := p.GetMatch().GetRouteConfiguration().GetVhost().GetRoute().GetName()
			if p.GetPatch().GetOperation() != networkingv1alpha3.EnvoyFilter_Patch_MERGE || name == "" {
				t.Fatalf("patch %d: want a MERGE into a route matched by name", i)
			}
			// A MERGE value is a fragment of a route: decode it as one, then check only
			// what it sets.
			r := &routev3.Route{}
			decodeProto(t, "EnvoyFilter HTTP_ROUTE patch "+name, value, r)
			a, ok := r.GetTypedPerFilterConfig()[extProcFilter]
			if !ok || len(r.GetTypedPerFilterConfig()) != 1 {
				t.Fatalf("route %s: the patch must set typed_per_filter_config[%s] only", name, extProcFilter)
			}
			per := &extprocv3.ExtProcPerRoute{}
			unmarshalAny(t, a, per)
			validate(t, "route "+name, per)
			f.routes[name] = per
		default:
			t.Errorf("patch %d: unexpected applyTo %v", i, p.GetApplyTo())
		}
	}
	if f.cluster == nil || f.extProc == nil || len(f.routes) == 0 {
		t.Fatal("EnvoyFilter: want a CLUSTER, an HTTP_FILTER and HTTP_ROUTE patches")
	}
	return f
}

// istioPolicies returns the x-cors-policy value each Istio route sends, by route name.
func istioPolicies(t *testing.T, f istioFiles) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, per := range f.routes {
		for _, h := range per.GetOverrides().GetGrpcInitialMetadata() {
			if h.GetKey() == "x-cors-policy" {
				out[name] = h.GetValue()
			}
		}
		if _, ok := out[name]; !ok {
			t.Errorf("route %s: no x-cors-policy in overrides.grpc_initial_metadata", name)
		}
	}
	return out
}

func TestIstioEnvoyFilter(t *testing.T) {
	f := loadIstio(t)
	if f.httpFilterName != extProcFilter {
		t.Errorf("HTTP filter named %q: the routes' typed_per_filter_config key is %q", f.httpFilterName, extProcFilter)
	}
	if got := f.extProc.GetGrpcService().GetEnvoyGrpc().GetClusterName(); got != f.cluster.GetName() {
		t.Errorf("ext_proc uses cluster %q, the patch adds %q", got, f.cluster.GetName())
	}
	checkExtProcCluster(t, "istio/envoyfilter.yaml", f.cluster)
	if !f.extProc.GetAllowModeOverride() || !f.extProc.GetFailureModeAllow() || f.extProc.GetMessageTimeout() == nil {
		t.Error("ext_proc: want allow_mode_override, failure_mode_allow and message_timeout as in deploy/envoy.yaml")
	}
	if !proto.Equal(f.extProc.GetProcessingMode(), loadEnvoy(t).extProc.GetProcessingMode()) {
		t.Error("ext_proc processing_mode differs from deploy/envoy.yaml's")
	}
	if sel := f.envoyFilter.GetWorkloadSelector().GetLabels(); len(sel) == 0 || !mapsContain(f.gateway.GetSelector(), sel) {
		t.Errorf("EnvoyFilter workloadSelector %v must select the gateway pods the Gateway selects (%v)", sel, f.gateway.GetSelector())
	}

	var vsRoutes []string
	for _, r := range f.virtualService.GetHttp() {
		vsRoutes = append(vsRoutes, r.GetName())
	}
	for name, value := range istioPolicies(t, f) {
		if !slices.Contains(vsRoutes, name) {
			t.Errorf("EnvoyFilter patches route %q, which the VirtualService does not name (%v)", name, vsRoutes)
		}
		var policy map[string]any
		if err := json.Unmarshal([]byte(value), &policy); err != nil {
			t.Errorf("route %s: x-cors-policy is not JSON: %v", name, err)
		}
	}
}

// mapsContain reports whether every entry of sub is in m.
func mapsContain(m, sub map[string]string) bool {
	for k, v := range sub {
		if m[k] != v {
			return false
		}
	}
	return true
}
