package deploy_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	networkingv1 "istio.io/api/networking/v1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1b1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// mergePatchOf returns the -p JSON of a kubectl patch command, decoded into v.
func mergePatchOf(t *testing.T, c shellCommand, v any) {
	t.Helper()
	_, fl := flags(c.pipeline[0])
	if one(fl, "type") != "merge" {
		t.Fatalf("README line %d: want a merge patch", c.line)
	}
	dec := json.NewDecoder(strings.NewReader(one(fl, "p")))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("README line %d: %v", c.line, err)
	}
}

// The files for an existing Gateway are the demo's, retargeted: the same extension policy and
// filter order, the grant from the Gateway's namespace, and the README's patch giving the
// Gateway that EnvoyProxy.
func TestEnvoyGatewayAttach(t *testing.T) {
	demo := loadEnvoyGateway(t)
	var policy envoyExtensionPolicy
	var proxy envoyProxy
	decodeStrict(t, "attach/envoyextensionpolicy.yaml", readFile(t, "envoy-gateway/attach/envoyextensionpolicy.yaml"), &policy)
	decodeStrict(t, "attach/envoyproxy.yaml", readFile(t, "envoy-gateway/attach/envoyproxy.yaml"), &proxy)
	grant := decodeObject[gwapiv1b1.ReferenceGrant](t, "attach/referencegrant.yaml", readFile(t, "envoy-gateway/attach/referencegrant.yaml"))

	ns := policy.Metadata.Namespace
	if len(policy.Spec.TargetRefs) != 1 || policy.Spec.TargetRefs[0].Kind != "Gateway" || ns == demo.policy.Metadata.Namespace {
		t.Fatalf("attach policy %s targets %+v: want one Gateway, outside the demo's namespace", ns, policy.Spec.TargetRefs)
	}
	gateway := policy.Spec.TargetRefs[0].Name
	if _, ok := readmeExisting["Gateway "+ns+"/"+gateway]; !ok {
		t.Errorf("attach policy targets Gateway %s/%s, not the placeholder the README patches", ns, gateway)
	}
	if diff := cmp.Diff(demo.policy.Spec.ExtProc, policy.Spec.ExtProc); diff != "" {
		t.Errorf("attach/envoyextensionpolicy.yaml differs from envoyextensionpolicy.yaml (-demo +attach):\n%s", diff)
	}
	if proxy.Metadata.Namespace != ns || proxy.Metadata.Name != demo.proxy.Metadata.Name {
		t.Errorf("attach EnvoyProxy %s/%s: want %s in the Gateway's namespace %s", proxy.Metadata.Namespace, proxy.Metadata.Name, demo.proxy.Metadata.Name, ns)
	}
	if diff := cmp.Diff(demo.proxy.Spec, proxy.Spec); diff != "" {
		t.Errorf("attach/envoyproxy.yaml differs from envoyproxy.yaml (-demo +attach):\n%s", diff)
	}
	// An EnvoyProxy on a Gateway replaces the GatewayClass's whole unless it merges.
	for _, p := range []envoyProxy{demo.proxy, proxy} {
		if p.Spec.MergeType != "StrategicMerge" {
			t.Errorf("EnvoyProxy %s/%s: mergeType %q, want StrategicMerge so the GatewayClass's settings stay", p.Metadata.Namespace, p.Metadata.Name, p.Spec.MergeType)
		}
	}
	if g := grant.Spec; grant.Namespace != demo.grant.Namespace || grant.Name == demo.grant.Name || len(g.From) != 1 || string(g.From[0].Namespace) != ns ||
		!cmp.Equal(g.To, demo.grant.Spec.To) || g.From[0].Kind != "EnvoyExtensionPolicy" {
		t.Errorf("attach ReferenceGrant %s/%s %+v: want a grant of its own, from %s, to the same Service", grant.Namespace, grant.Name, g, ns)
	}

	var patch gwapiv1.Gateway
	c := readmeCommand(t, "kubectl", "patch", "gateway", gateway)
	mergePatchOf(t, c, &patch)
	ref := patch.Spec.Infrastructure.ParametersRef
	if _, fl := flags(c.pipeline[0]); one(fl, "n") != ns || ref == nil || ref.Kind != "EnvoyProxy" || ref.Group != "gateway.envoyproxy.io" || ref.Name != proxy.Metadata.Name {
		t.Errorf("README line %d: the Gateway must be given the EnvoyProxy %s/%s", c.line, ns, proxy.Metadata.Name)
	}
}

// TLS from Envoy Gateway to the TLS overlay: the BackendTLSPolicy trusts the overlay's CA and
// checks the name the server's certificate holds, and the EnvoyProxy presents a client
// certificate from the same issuer, in its own namespace.
func TestEnvoyGatewayTLS(t *testing.T) {
	demo := loadEnvoyGateway(t)
	svc := headlessService(t)
	var server certificate
	decodeStrict(t, "certificate.yaml", readFile(t, tlsOverlay+"/certificate.yaml"), &server)

	p := decodeObject[gwapiv1.BackendTLSPolicy](t, "tls/backendtlspolicy.yaml", readFile(t, "envoy-gateway/tls/backendtlspolicy.yaml"))
	if p.Namespace != svc.Namespace || len(p.Spec.TargetRefs) != 1 || p.Spec.TargetRefs[0].Kind != "Service" || p.Spec.TargetRefs[0].Group != "" || string(p.Spec.TargetRefs[0].Name) != svc.Name {
		t.Errorf("BackendTLSPolicy %s/%s targets %+v: want the Service %s/%s, beside it", p.Namespace, p.Name, p.Spec.TargetRefs, svc.Namespace, svc.Name)
	}
	// The policy applies to the Service the extension policy's backendRef names.
	if ref := demo.policy.Spec.ExtProc[0].BackendRefs[0]; ref.Name != svc.Name || *ref.Namespace != svc.Namespace {
		t.Errorf("extension policy backend %+v is not the Service the BackendTLSPolicy targets", ref)
	}
	v := p.Spec.Validation
	if len(v.CACertificateRefs) != 1 || v.CACertificateRefs[0].Kind != "Secret" || string(v.CACertificateRefs[0].Name) != server.Spec.SecretName {
		t.Errorf("BackendTLSPolicy CA %+v: want the overlay's Secret %s (its ca.crt)", v.CACertificateRefs, server.Spec.SecretName)
	}
	if !slices.Contains(server.Spec.DNSNames, string(v.Hostname)) {
		t.Errorf("BackendTLSPolicy hostname %s is not a name of the server's certificate %v", v.Hostname, server.Spec.DNSNames)
	}

	var client certificate
	decodeStrict(t, "tls/client-certificate.yaml", readFile(t, "envoy-gateway/tls/client-certificate.yaml"), &client)
	checkCertificate(t, "envoy-gateway/tls/client-certificate.yaml", client, "client auth")
	if client.Spec.IssuerRef != server.Spec.IssuerRef || client.Metadata.Namespace != "" {
		t.Errorf("client certificate: issuer %+v, want the server's %+v; namespace %q, want none (the README applies it into the EnvoyProxy's)", client.Spec.IssuerRef, server.Spec.IssuerRef, client.Metadata.Namespace)
	}
	apply := readmeCommand(t, "kubectl", "apply", "-n", demo.proxy.Metadata.Namespace, "-f", "deploy/envoy-gateway/tls/client-certificate.yaml")
	var proxyPatch envoyProxy
	c := readmeCommand(t, "kubectl", "patch", "envoyproxy", demo.proxy.Metadata.Name)
	mergePatchOf(t, c, &proxyPatch)
	if _, fl := flags(c.pipeline[0]); one(fl, "n") != demo.proxy.Metadata.Namespace {
		t.Errorf("README line %d: patch the EnvoyProxy in %s", c.line, demo.proxy.Metadata.Namespace)
	}
	if b := proxyPatch.Spec.BackendTLS; b == nil || b.ClientCertificateRef == nil || string(b.ClientCertificateRef.Name) != client.Spec.SecretName || b.ClientCertificateRef.Namespace != nil {
		t.Errorf("README line %d: the EnvoyProxy must present the Secret %s of line %d, from its own namespace", c.line, client.Spec.SecretName, apply.line)
	}
}

// TLS from Istio's ingress gateway to the TLS overlay: the ServiceEntry resolves the headless
// Service's name, the DestinationRule speaks mutual TLS to it with the client certificate of
// client-certificate.yaml, and the second EnvoyFilter points ext_proc at that cluster.
func TestIstioTLS(t *testing.T) {
	main := loadIstio(t)
	svc := headlessService(t)
	fqdn := svc.Name + "." + svc.Namespace + ".svc.cluster.local"
	var server certificate
	decodeStrict(t, "certificate.yaml", readFile(t, tlsOverlay+"/certificate.yaml"), &server)

	objects := byKey(t, decodeManifests(t, "istio/tls", append(append(append(
		readFile(t, "istio/tls/serviceentry.yaml"), "\n---\n"...),
		append(readFile(t, "istio/tls/destinationrule.yaml"), "\n---\n"...)...),
		append(append(readFile(t, "istio/tls/envoyfilter-tls.yaml"), "\n---\n"...), readFile(t, "istio/tls/client-certificate.yaml")...)...)))
	se := objects["ServiceEntry istio-system/cors-extproc-mtls"].obj.(*istioResource[*networkingv1.ServiceEntry])
	dr := objects["DestinationRule istio-system/cors-extproc-mtls"].obj.(*istioResource[*networkingv1.DestinationRule])
	ef := objects["EnvoyFilter istio-system/cors-extproc-tls"].obj.(*istioResource[*networkingv1alpha3.EnvoyFilter])
	client := objects["Certificate istio-system/cors-extproc-client"].obj.(*certificate)

	if s := se.spec; len(s.GetHosts()) != 1 || s.GetResolution() != networkingv1.ServiceEntry_DNS || len(s.GetEndpoints()) != 1 || s.GetEndpoints()[0].GetAddress() != fqdn ||
		len(s.GetPorts()) != 1 || s.GetPorts()[0].GetNumber() != uint32(svc.Spec.Ports[0].Port) || s.GetPorts()[0].GetProtocol() != "GRPC" {
		t.Fatalf("ServiceEntry %v: want one host resolved by DNS to %s, gRPC on port %d", s, fqdn, svc.Spec.Ports[0].Port)
	}
	host := se.spec.GetHosts()[0]
	if host == fqdn || !slices.Equal(se.spec.GetExportTo(), []string{"."}) || se.Metadata.Namespace != main.filterMeta.Namespace {
		t.Errorf("ServiceEntry host %s, exportTo %v, namespace %s: want a name of its own, seen only in the gateway's namespace %s", host, se.spec.GetExportTo(), se.Metadata.Namespace, main.filterMeta.Namespace)
	}
	tls := dr.spec.GetTrafficPolicy().GetTls()
	if dr.spec.GetHost() != host || tls.GetMode() != networkingv1.ClientTLSSettings_MUTUAL || dr.Metadata.Namespace != se.Metadata.Namespace {
		t.Errorf("DestinationRule %s for %s, TLS mode %v: want MUTUAL for %s", dr.Metadata.Name, dr.spec.GetHost(), tls.GetMode(), host)
	}
	if tls.GetCredentialName() != client.Spec.SecretName || client.Metadata.Namespace != dr.Metadata.Namespace {
		t.Errorf("DestinationRule credentialName %q: want the Secret %s/%s of client-certificate.yaml, in the gateway's namespace", tls.GetCredentialName(), client.Metadata.Namespace, client.Spec.SecretName)
	}
	if tls.GetSni() != fqdn || !slices.Equal(tls.GetSubjectAltNames(), []string{fqdn}) || !slices.Contains(server.Spec.DNSNames, fqdn) {
		t.Errorf("DestinationRule sni %q, subjectAltNames %v: want the Service's name %s, a name of the server's certificate", tls.GetSni(), tls.GetSubjectAltNames(), fqdn)
	}
	// The rest of the cluster as envoyfilter.yaml's: load balancing and connect timeout.
	tp := dr.spec.GetTrafficPolicy()
	if tp.GetLoadBalancer().GetSimple().String() != main.cluster.GetLbPolicy().String() ||
		tp.GetConnectionPool().GetTcp().GetConnectTimeout().AsDuration() != main.cluster.GetConnectTimeout().AsDuration() {
		t.Errorf("DestinationRule load balancer %v, connect timeout %v: want envoyfilter.yaml's cluster's %v, %v", tp.GetLoadBalancer().GetSimple(),
			tp.GetConnectionPool().GetTcp().GetConnectTimeout().AsDuration(), main.cluster.GetLbPolicy(), main.cluster.GetConnectTimeout().AsDuration())
	}
	checkCertificate(t, "istio/tls/client-certificate.yaml", *client, "client auth")
	if client.Spec.IssuerRef != server.Spec.IssuerRef {
		t.Errorf("client certificate issuer %+v, want the server's %+v", client.Spec.IssuerRef, server.Spec.IssuerRef)
	}

	// The EnvoyFilter: after the main one, on the same gateways, merging the cluster name of
	// Istio's cluster for the ServiceEntry (outbound|PORT||HOST) into the ext_proc filter.
	if ef.spec.GetPriority() <= main.envoyFilter.GetPriority() || !cmp.Equal(ef.spec.GetWorkloadSelector().GetLabels(), main.envoyFilter.GetWorkloadSelector().GetLabels()) {
		t.Errorf("envoyfilter-tls.yaml: priority %d (the main one's %d), selector %v: want it applied after the main one, on the same gateways", ef.spec.GetPriority(), main.envoyFilter.GetPriority(), ef.spec.GetWorkloadSelector().GetLabels())
	}
	patches := ef.spec.GetConfigPatches()
	if len(patches) != 1 || patches[0].GetApplyTo() != networkingv1alpha3.EnvoyFilter_HTTP_FILTER || patches[0].GetPatch().GetOperation() != networkingv1alpha3.EnvoyFilter_Patch_MERGE ||
		patches[0].GetMatch().GetListener().GetFilterChain().GetFilter().GetSubFilter().GetName() != main.httpFilterName {
		t.Fatalf("envoyfilter-tls.yaml: want one MERGE into the %s filter", main.httpFilterName)
	}
	value, err := protojson.Marshal(patches[0].GetPatch().GetValue().GetFields()["typed_config"].GetStructValue())
	if err != nil {
		t.Fatal(err)
	}
	var typed anypb.Any
	decodeProto(t, "envoyfilter-tls.yaml typed_config", value, &typed)
	var ext extprocv3.ExternalProcessor
	unmarshalAny(t, &typed, &ext)
	if want := "outbound|9002||" + host; ext.GetGrpcService().GetEnvoyGrpc().GetClusterName() != want {
		t.Errorf("envoyfilter-tls.yaml: ext_proc cluster %q, want Istio's cluster for the ServiceEntry, %s", ext.GetGrpcService().GetEnvoyGrpc().GetClusterName(), want)
	}
}
