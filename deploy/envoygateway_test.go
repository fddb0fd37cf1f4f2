package deploy_test

import (
	"encoding/json"
	"regexp"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1b1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// Envoy Gateway v1.9's own API (gateway.envoyproxy.io/v1alpha1) lives in its control-plane
// module, which would bring that whole dependency tree; these structs hold the fields of
// api/v1alpha1 (envoyproxy_types.go, envoyextensionypolicy_types.go, ext_proc_types.go) the
// files use, with the same JSON names, and decoding strictly rejects any other.

type envoyProxy struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		MergeType   string `json:"mergeType,omitempty"`
		FilterOrder []struct {
			Name   string `json:"name"`
			Before string `json:"before,omitempty"`
			After  string `json:"after,omitempty"`
		} `json:"filterOrder"`
		BackendTLS *struct {
			ClientCertificateRef *gwapiv1.SecretObjectReference `json:"clientCertificateRef,omitempty"`
		} `json:"backendTLS,omitempty"`
		// Checked in Envoy Gateway's translation (TestRealEnvoyGatewayRoutesBehave).
		Telemetry json.RawMessage `json:"telemetry,omitempty"`
	} `json:"spec"`
}

// envoyPatchPolicy holds the fields of api/v1alpha1 envoypatchpolicy_types.go; the patches
// themselves are checked by Envoy Gateway's translation (testdata/envoygateway-xds.json).
type envoyPatchPolicy struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		TargetRef struct {
			Group string `json:"group"`
			Kind  string `json:"kind"`
			Name  string `json:"name"`
		} `json:"targetRef"`
		Type        string `json:"type"`
		Priority    int32  `json:"priority,omitempty"`
		JSONPatches []struct {
			Type      string `json:"type"`
			Name      string `json:"name"`
			Operation struct {
				Op       string          `json:"op"`
				Path     string          `json:"path,omitempty"`
				JSONPath string          `json:"jsonPath,omitempty"`
				From     string          `json:"from,omitempty"`
				Value    json.RawMessage `json:"value,omitempty"`
			} `json:"operation"`
		} `json:"jsonPatches"`
	} `json:"spec"`
}

type processingModeOptions struct {
	Body       *string  `json:"body,omitempty"`
	Attributes []string `json:"attributes,omitempty"`
}

type envoyExtensionPolicy struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		TargetRefs []struct {
			Group string `json:"group"`
			Kind  string `json:"kind"`
			Name  string `json:"name"`
		} `json:"targetRefs"`
		ExtProc []struct {
			BackendRefs []struct {
				Group     *string `json:"group,omitempty"`
				Kind      *string `json:"kind,omitempty"`
				Name      string  `json:"name"`
				Namespace *string `json:"namespace,omitempty"`
				Port      *int32  `json:"port,omitempty"`
			} `json:"backendRefs"`
			ProcessingMode *struct {
				Request           *processingModeOptions `json:"request,omitempty"`
				Response          *processingModeOptions `json:"response,omitempty"`
				AllowModeOverride bool                   `json:"allowModeOverride,omitempty"`
			} `json:"processingMode,omitempty"`
			MessageTimeout  *gwapiv1.Duration `json:"messageTimeout,omitempty"`
			FailOpen        *bool             `json:"failOpen,omitempty"`
			BackendSettings *struct {
				CircuitBreaker *struct {
					MaxParallelRequests *int64 `json:"maxParallelRequests,omitempty"`
				} `json:"circuitBreaker,omitempty"`
			} `json:"backendSettings,omitempty"`
			Metadata *struct {
				WritableNamespaces []string `json:"writableNamespaces,omitempty"`
			} `json:"metadata,omitempty"`
		} `json:"extProc"`
	} `json:"spec"`
}

// The attribute names Envoy Gateway v1.9 accepts (its CRD's validation pattern).
var egAttributeRE = regexp.MustCompile(`^(connection\.|source\.|destination\.|request\.|response\.|upstream\.|xds\.route_)[a-z_1-9]*$`)

type envoyGatewayFiles struct {
	gateway    *gwapiv1.Gateway
	proxy      envoyProxy
	policy     envoyExtensionPolicy
	grant      *gwapiv1b1.ReferenceGrant
	httpRoutes []*gwapiv1.HTTPRoute
}

func loadEnvoyGateway(t *testing.T) envoyGatewayFiles {
	t.Helper()
	var f envoyGatewayFiles
	f.gateway = decodeObject[gwapiv1.Gateway](t, "envoy-gateway/gateway.yaml", readFile(t, "envoy-gateway/gateway.yaml"))
	decodeStrict(t, "envoy-gateway/envoyproxy.yaml", readFile(t, "envoy-gateway/envoyproxy.yaml"), &f.proxy)
	decodeStrict(t, "envoy-gateway/envoyextensionpolicy.yaml", readFile(t, "envoy-gateway/envoyextensionpolicy.yaml"), &f.policy)
	f.grant = decodeObject[gwapiv1b1.ReferenceGrant](t, "envoy-gateway/referencegrant.yaml", readFile(t, "envoy-gateway/referencegrant.yaml"))
	for _, doc := range yamlDocuments(t, "envoy-gateway/httproute.yaml") {
		f.httpRoutes = append(f.httpRoutes, decodeObject[gwapiv1.HTTPRoute](t, "envoy-gateway/httproute.yaml", doc))
	}
	for what, tm := range map[string]metav1.TypeMeta{
		"Gateway":              f.gateway.TypeMeta,
		"EnvoyProxy":           f.proxy.TypeMeta,
		"EnvoyExtensionPolicy": f.policy.TypeMeta,
		"ReferenceGrant":       f.grant.TypeMeta,
	} {
		want := map[string]string{
			"Gateway":              "gateway.networking.k8s.io/v1",
			"EnvoyProxy":           "gateway.envoyproxy.io/v1alpha1",
			"EnvoyExtensionPolicy": "gateway.envoyproxy.io/v1alpha1",
			"ReferenceGrant":       "gateway.networking.k8s.io/v1beta1",
		}[what]
		if tm.Kind != what || tm.APIVersion != want {
			t.Errorf("%s: got %s %s, want %s", what, tm.APIVersion, tm.Kind, want)
		}
	}
	for _, r := range f.httpRoutes {
		if r.Kind != "HTTPRoute" || r.APIVersion != "gateway.networking.k8s.io/v1" {
			t.Errorf("httproute.yaml: %s %s", r.APIVersion, r.Kind)
		}
	}
	return f
}

const egAnnotationPrefix = "gateway.envoyproxy.io/"

func TestEnvoyGatewayExtensionPolicy(t *testing.T) {
	f := loadEnvoyGateway(t)
	p := f.policy
	if len(p.Spec.TargetRefs) != 1 {
		t.Fatalf("EnvoyExtensionPolicy: want one targetRef, got %d", len(p.Spec.TargetRefs))
	}
	if ref := p.Spec.TargetRefs[0]; ref.Group != gwapiv1.GroupName || ref.Kind != "Gateway" || ref.Name != f.gateway.Name || p.Metadata.Namespace != f.gateway.Namespace {
		t.Errorf("EnvoyExtensionPolicy targets %+v, want the Gateway %s/%s", ref, f.gateway.Namespace, f.gateway.Name)
	}
	if len(p.Spec.ExtProc) != 1 || len(p.Spec.ExtProc[0].BackendRefs) != 1 {
		t.Fatal("EnvoyExtensionPolicy: want one extProc with one backendRef")
	}
	ext := p.Spec.ExtProc[0]

	svc := headlessService(t)
	ref := ext.BackendRefs[0]
	if ref.Name != svc.Name || ref.Namespace == nil || *ref.Namespace != svc.Namespace || ref.Port == nil || *ref.Port != svc.Spec.Ports[0].Port ||
		(ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Service") {
		t.Errorf("backendRef %+v: want the Service %s/%s port %d", ref, svc.Namespace, svc.Name, svc.Spec.Ports[0].Port)
	}
	// A backend in another namespace needs the target namespace's ReferenceGrant.
	g := f.grant.Spec
	if f.grant.Namespace != svc.Namespace || len(g.From) != 1 || len(g.To) != 1 ||
		g.From[0].Group != "gateway.envoyproxy.io" || g.From[0].Kind != "EnvoyExtensionPolicy" || string(g.From[0].Namespace) != p.Metadata.Namespace ||
		g.To[0].Group != "" || g.To[0].Kind != "Service" || g.To[0].Name == nil || string(*g.To[0].Name) != svc.Name {
		t.Errorf("ReferenceGrant %s/%s %+v does not let the policy in %s use the Service %s/%s", f.grant.Namespace, f.grant.Name, g, p.Metadata.Namespace, svc.Namespace, svc.Name)
	}

	pm := ext.ProcessingMode
	if pm == nil || pm.Request == nil || pm.Response == nil {
		t.Fatal("processingMode: request and response must both be present (headers sent both ways)")
	}
	if pm.Request.Body != nil || pm.Response.Body != nil || len(pm.Response.Attributes) != 0 {
		t.Error("processingMode: headers only, no body, no response attributes")
	}
	if !slices.Contains(pm.Request.Attributes, "xds.route_metadata") {
		t.Errorf("request attributes %v lack xds.route_metadata", pm.Request.Attributes)
	}
	for _, a := range pm.Request.Attributes {
		if !egAttributeRE.MatchString(a) {
			t.Errorf("attribute %q is refused by Envoy Gateway's CRD validation", a)
		}
	}
	if !pm.AllowModeOverride {
		t.Error("processingMode.allowModeOverride must be true")
	}
	if ext.MessageTimeout == nil || !regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`).MatchString(string(*ext.MessageTimeout)) {
		t.Errorf("messageTimeout %v: want a Gateway API duration", ext.MessageTimeout)
	}
	if ext.FailOpen == nil || !*ext.FailOpen {
		t.Error("failOpen: the file documents fail-open, like deploy/envoy.yaml")
	}

	ip := f.gateway.Spec.Infrastructure
	if ip == nil || ip.ParametersRef == nil || ip.ParametersRef.Group != "gateway.envoyproxy.io" || ip.ParametersRef.Kind != "EnvoyProxy" ||
		ip.ParametersRef.Name != f.proxy.Metadata.Name || f.proxy.Metadata.Namespace != f.gateway.Namespace {
		t.Error("the Gateway must use the EnvoyProxy of envoyproxy.yaml (same namespace) through infrastructure.parametersRef")
	}
	for _, r := range f.httpRoutes {
		for _, parent := range r.Spec.ParentRefs {
			if string(parent.Name) != f.gateway.Name || (parent.Namespace != nil && string(*parent.Namespace) != f.gateway.Namespace) || r.Namespace != f.gateway.Namespace {
				t.Errorf("HTTPRoute %s: parent %+v is not the demo Gateway", r.Name, parent)
			}
		}
	}
	// The Gateway's annotation is the default of the routes whose HTTPRoute names none.
	if _, ok := f.gateway.Annotations[egAnnotationPrefix+"cors-policy"]; !ok {
		t.Errorf("Gateway %s: no %scors-policy annotation", f.gateway.Name, egAnnotationPrefix)
	}
}

// egAuthFilters is Envoy Gateway v1.9's default HTTP filter order (internal/xds/translator/
// httpfilters.go newOrderedHTTPFilter) from the first authentication filter to ext_proc.
var egAuthFilters = []string{
	"envoy.filters.http.ext_authz",
	"envoy.filters.http.api_key_auth",
	"envoy.filters.http.basic_auth",
	"envoy.filters.http.oauth2",
	"envoy.filters.http.jwt_authn",
}

// TestEnvoyGatewayFilterOrder replays Envoy Gateway's filterOrder algorithm (sortHTTPFilters:
// each entry in turn moves the named filter just before the first filter of the "before" kind,
// if one is present) on every combination of authentication filters a route can have, and
// checks ext_proc always ends up ahead of all of them.
func TestEnvoyGatewayFilterOrder(t *testing.T) {
	order := loadEnvoyGateway(t).proxy.Spec.FilterOrder
	for _, e := range order {
		if e.Name != extProcFilter || e.After != "" || !slices.Contains(egAuthFilters, e.Before) {
			t.Fatalf("filterOrder entry %+v: want ext_proc before an authentication filter", e)
		}
	}
	for mask := 1; mask < 1<<len(egAuthFilters); mask++ {
		var chain []string
		for i, f := range egAuthFilters {
			if mask&(1<<i) != 0 {
				chain = append(chain, f)
			}
		}
		present := slices.Clone(chain)
		chain = append(chain, extProcFilter, routerFilter)
		for _, e := range order {
			if !slices.Contains(chain, e.Before) {
				continue
			}
			i := slices.Index(chain, extProcFilter)
			chain = slices.Delete(chain, i, i+1)
			chain = slices.Insert(chain, slices.Index(chain, e.Before), extProcFilter)
		}
		if chain[0] != extProcFilter {
			t.Errorf("with %v, the filter chain becomes %v", present, chain)
		}
	}
}
