package deploy_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	networkingv1 "istio.io/api/networking/v1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	k8snetworkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1b1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// manifest is one Kubernetes object as a tool would send it to the API server: from a file, a
// kustomize build or a Helm render, decoded strictly into its type (decodeManifest).
type manifest struct {
	source string // where it came from, for messages
	metav1.TypeMeta
	meta metav1.ObjectMeta
	doc  []byte
	obj  any // *appsv1.Deployment, *gwapiv1.Gateway, istioObject, ...
}

func (m manifest) key() string {
	return m.Kind + " " + m.meta.Namespace + "/" + m.meta.Name
}

// manifestKinds decodes every kind that deploy/ and the Helm chart hold, each strictly into the
// real type where one is cheap to have (k8s.io/api, the Gateway API, istio.io/api) and into the
// structs of these tests otherwise (cert-manager, the Prometheus Operator, Envoy Gateway's own
// API). A kind missing here fails the test: nothing is let through unchecked.
var manifestKinds = map[string]func(t *testing.T, name string, doc []byte) any{
	"v1 Namespace":                                        decoder[corev1.Namespace],
	"v1 ServiceAccount":                                   decoder[corev1.ServiceAccount],
	"v1 Service":                                          decoder[corev1.Service],
	"v1 ConfigMap":                                        decoder[corev1.ConfigMap],
	"apps/v1 Deployment":                                  decoder[appsv1.Deployment],
	"policy/v1 PodDisruptionBudget":                       decoder[policyv1.PodDisruptionBudget],
	"autoscaling/v2 HorizontalPodAutoscaler":              decoder[autoscalingv2.HorizontalPodAutoscaler],
	"networking.k8s.io/v1 NetworkPolicy":                  decoder[k8snetworkingv1.NetworkPolicy],
	"cert-manager.io/v1 Certificate":                      decoder[certificate],
	"cert-manager.io/v1 ClusterIssuer":                    decoder[clusterIssuer],
	"monitoring.coreos.com/v1 ServiceMonitor":             decoder[serviceMonitor],
	"monitoring.coreos.com/v1 PrometheusRule":             decoder[prometheusRule],
	"gateway.networking.k8s.io/v1 Gateway":                decoder[gwapiv1.Gateway],
	"gateway.networking.k8s.io/v1 HTTPRoute":              decoder[gwapiv1.HTTPRoute],
	"gateway.networking.k8s.io/v1 BackendTLSPolicy":       decoder[gwapiv1.BackendTLSPolicy],
	"gateway.networking.k8s.io/v1beta1 ReferenceGrant":    decoder[gwapiv1b1.ReferenceGrant],
	"gateway.envoyproxy.io/v1alpha1 EnvoyProxy":           decoder[envoyProxy],
	"gateway.envoyproxy.io/v1alpha1 EnvoyExtensionPolicy": decoder[envoyExtensionPolicy],
	"gateway.envoyproxy.io/v1alpha1 EnvoyPatchPolicy":     decoder[envoyPatchPolicy],
	"networking.istio.io/v1 Gateway":                      istioDecoder[networkingv1.Gateway]("Gateway"),
	"networking.istio.io/v1 VirtualService":               istioDecoder[networkingv1.VirtualService]("VirtualService"),
	"networking.istio.io/v1 DestinationRule":              istioDecoder[networkingv1.DestinationRule]("DestinationRule"),
	"networking.istio.io/v1 ServiceEntry":                 istioDecoder[networkingv1.ServiceEntry]("ServiceEntry"),
	"networking.istio.io/v1alpha3 EnvoyFilter":            istioDecoder[networkingv1alpha3.EnvoyFilter]("EnvoyFilter"),
}

func decoder[T any](t *testing.T, name string, doc []byte) any {
	t.Helper()
	return decodeObject[T](t, name, doc)
}

// istioResource is an Istio object with its spec decoded into Istio's API type.
type istioResource[S proto.Message] struct {
	istioObject
	spec S
}

func istioDecoder[S any, PS interface {
	*S
	proto.Message
}](kind string) func(t *testing.T, name string, doc []byte) any {
	return func(t *testing.T, name string, doc []byte) any {
		t.Helper()
		spec := PS(new(S))
		return &istioResource[PS]{decodeIstio(t, name, doc, kind, spec), spec}
	}
}

// dnsLabel is what Kubernetes accepts as a namespace and as most object names (RFC 1123).
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// decodeManifest decodes one YAML document into its Kubernetes type.
func decodeManifest(t *testing.T, source string, doc []byte) manifest {
	t.Helper()
	var head struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		t.Fatalf("%s: %v", source, err)
	}
	decode, ok := manifestKinds[head.APIVersion+" "+head.Kind]
	if !ok {
		t.Fatalf("%s: %s %s %q: a kind these tests do not know", source, head.APIVersion, head.Kind, head.Metadata.Name)
	}
	m := manifest{source: source, TypeMeta: head.TypeMeta, meta: head.Metadata, doc: doc}
	m.obj = decode(t, fmt.Sprintf("%s: %s %s", source, head.Kind, head.Metadata.Name), doc)
	if !dnsLabel.MatchString(head.Metadata.Name) && !strings.Contains(head.Metadata.Name, ".") {
		t.Errorf("%s: %s name %q is not a valid name", source, head.Kind, head.Metadata.Name)
	}
	if ns := head.Metadata.Namespace; ns != "" && !dnsLabel.MatchString(ns) {
		t.Errorf("%s: %s %s: namespace %q is not a valid name", source, head.Kind, head.Metadata.Name, ns)
	}
	return m
}

// decodeManifests splits a multi-document YAML stream and decodes each document.
func decodeManifests(t *testing.T, source string, data []byte) []manifest {
	t.Helper()
	var out []manifest
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		out = append(out, decodeManifest(t, source, doc))
	}
	return out
}

// stripComments drops the comment lines of a YAML document.
func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			b.Write(line)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// kustomizeBuild builds a kustomization as `kubectl kustomize DIR` (and so `kubectl apply -k
// DIR`) does, with kustomize's own library, on fsys (the disk, or a copy holding a user's
// overlay), and decodes every object it outputs.
func kustomizeBuild(t *testing.T, fsys filesys.FileSystem, dir string) []manifest {
	t.Helper()
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := resources.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return decodeManifests(t, "kustomize build "+filepath.ToSlash(dir), out)
}

// byKey indexes manifests by kind, namespace and name, failing on duplicates.
func byKey(t *testing.T, ms []manifest) map[string]manifest {
	t.Helper()
	out := map[string]manifest{}
	for _, m := range ms {
		if prev, dup := out[m.key()]; dup {
			t.Fatalf("%s and %s: %s twice", prev.source, m.source, m.key())
		}
		out[m.key()] = m
	}
	return out
}

// only returns the one manifest of a kind, failing if there is not exactly one.
func only[T any](t *testing.T, ms []manifest) *T {
	t.Helper()
	var found []*T
	for _, m := range ms {
		if v, ok := m.obj.(*T); ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %T, got %d", *new(T), len(found))
	}
	return found[0]
}
