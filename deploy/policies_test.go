package deploy_test

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// namedPolicies is the named-policy file, the one copy that Kubernetes (ConfigMap) and
// docker-compose (bind mount) both use.
const namedPoliciesFile = "k8s/base/policies.yaml"

func loadNamedPolicies(t *testing.T) map[string]map[string]any {
	t.Helper()
	var p map[string]map[string]any
	decodeStrict(t, namedPoliciesFile, readFile(t, namedPoliciesFile), &p)
	if len(p) == 0 {
		t.Fatalf("%s defines no policy", namedPoliciesFile)
	}
	return p
}

// corsRef returns the ref a metadata's cors namespace names, if any.
func corsRef(m *corev3.Metadata) (string, bool) {
	ref, ok := m.GetFilterMetadata()[corsNamespace].GetFields()["ref"]
	return ref.GetStringValue(), ok
}

// TestNamedPoliciesAreReferenced checks every example that names a policy of the file names
// one it defines, and every policy the file defines is used by some example, so the file and
// the examples cannot drift apart.
func TestNamedPoliciesAreReferenced(t *testing.T) {
	defined := loadNamedPolicies(t)
	used := map[string][]string{} // policy name -> where

	for name, r := range envoyRoutes(t, loadEnvoy(t)) {
		for what, m := range map[string]*corev3.Metadata{"route": r.Metadata, "virtual host": r.VirtualHostMetadata} {
			if ref, ok := corsRef(m); ok {
				used[ref] = append(used[ref], "envoy.yaml "+what+" of "+name)
			}
		}
	}
	eg := loadEnvoyGateway(t)
	if ref, ok := eg.gateway.Annotations[egAnnotationPrefix+"cors-policy"]; ok {
		used[ref] = append(used[ref], "envoy-gateway Gateway "+eg.gateway.Name)
	}
	for _, r := range eg.httpRoutes {
		if ref, ok := r.Annotations[egAnnotationPrefix+"cors-policy"]; ok {
			used[ref] = append(used[ref], "envoy-gateway HTTPRoute "+r.Name)
		}
	}
	for route, value := range istioPolicies(t, loadIstio(t)) {
		var p struct {
			Ref *string `json:"ref"`
		}
		if err := json.Unmarshal([]byte(value), &p); err != nil {
			t.Fatalf("istio route %s: %v", route, err)
		}
		if p.Ref != nil {
			used[*p.Ref] = append(used[*p.Ref], "istio route "+route)
		}
	}

	for ref, where := range used {
		if _, ok := defined[ref]; !ok {
			t.Errorf("%v: policy %q is not in %s", where, ref, namedPoliciesFile)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(defined)) {
		if _, ok := used[name]; !ok {
			t.Errorf("%s: policy %q is used by no example", namedPoliciesFile, name)
		}
	}
}
