package deploy_test

import (
	"crypto/x509"
	"fmt"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/cors-extproc/cors-extproc/internal/realenvoy"
	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

const tlsOverlay = "k8s/overlays/tls"

// certificate holds the fields of cert-manager's cert-manager.io/v1 Certificate these files
// use. (cert-manager's Go module would bring its controllers' dependencies for one object.)
type certificate struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		SecretName  string   `json:"secretName"`
		CommonName  string   `json:"commonName,omitempty"`
		DNSNames    []string `json:"dnsNames,omitempty"`
		Duration    string   `json:"duration"`
		RenewBefore string   `json:"renewBefore"`
		PrivateKey  struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			RotationPolicy string `json:"rotationPolicy"`
		} `json:"privateKey"`
		Usages    []string  `json:"usages"`
		IssuerRef issuerRef `json:"issuerRef"`
	} `json:"spec"`
}

type issuerRef struct {
	Group string `json:"group"`
	Kind  string `json:"kind"`
	Name  string `json:"name"`
}

// clusterIssuer holds the fields of a cert-manager CA ClusterIssuer.
type clusterIssuer struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		CA struct {
			SecretName string `json:"secretName"`
		} `json:"ca"`
	} `json:"spec"`
}

// checkCertificate checks what a cert-manager Certificate needs to renew itself safely.
func checkCertificate(t *testing.T, what string, c certificate, usage string) {
	t.Helper()
	if c.APIVersion != "cert-manager.io/v1" || c.Kind != "Certificate" {
		t.Fatalf("%s: %s %s", what, c.APIVersion, c.Kind)
	}
	if c.Spec.SecretName == "" || c.Spec.CommonName == "" && len(c.Spec.DNSNames) == 0 {
		t.Errorf("%s: want a secretName and a name to certify", what)
	}
	d, err := time.ParseDuration(c.Spec.Duration)
	if err != nil {
		t.Fatalf("%s duration: %v", what, err)
	}
	rb, err := time.ParseDuration(c.Spec.RenewBefore)
	if err != nil {
		t.Fatalf("%s renewBefore: %v", what, err)
	}
	// Renewal must leave time to roll the new certificate out (a restart of Envoy, at worst).
	if rb < 7*24*time.Hour || rb >= d {
		t.Errorf("%s: renewBefore %v of a %v certificate: want at least a week, and less than the duration", what, rb, d)
	}
	if pk := c.Spec.PrivateKey; pk.RotationPolicy != "Always" || pk.Algorithm != "ECDSA" || pk.Size != 256 {
		t.Errorf("%s privateKey %+v: want ECDSA P-256, a new key at every renewal", what, pk)
	}
	if !slices.Contains(c.Spec.Usages, usage) || !slices.Contains(c.Spec.Usages, "digital signature") {
		t.Errorf("%s usages %v: want digital signature and %s", what, c.Spec.Usages, usage)
	}
	if ir := c.Spec.IssuerRef; ir.Group != "cert-manager.io" || ir.Kind != "ClusterIssuer" || ir.Name == "" {
		t.Errorf("%s issuerRef %+v: want a cert-manager ClusterIssuer (Envoy's certificate, in another namespace, comes from the same CA)", what, ir)
	}
}

// tlsDeployment is the overlay's Deployment, as kustomize builds it.
func tlsDeployment(t *testing.T, b *k8sBase, k kustomization) *appsv1.Deployment {
	t.Helper()
	if len(k.Patches) != 1 {
		t.Fatalf("%s: want one patch, of the Deployment", tlsOverlay)
	}
	p := k.Patches[0]
	if p.Target.Group != "apps" || p.Target.Version != "v1" || p.Target.Kind != "Deployment" || p.Target.Name != b.deployment.Name {
		t.Fatalf("%s: patch target %+v is not the base Deployment %s", tlsOverlay, p.Target, b.deployment.Name)
	}
	return only[appsv1.Deployment](t, kustomizeBuild(t, filesys.MakeFsOnDisk(), tlsOverlay))
}

func TestK8sTLSOverlay(t *testing.T) {
	b := loadK8s(t)
	k := loadKustomization(t, tlsOverlay)

	// The overlay is the base plus its own files (TestK8sKustomizationListsEveryManifest checks
	// that every one of them is listed).
	base := false
	for _, r := range k.Resources {
		base = base || path.Clean(path.Join(tlsOverlay, r)) == k8sBaseDir
	}
	if !base {
		t.Errorf("%s: resources %v do not include the base", tlsOverlay, k.Resources)
	}

	// The Certificate: in the base's namespace, for the name Envoy connects to.
	var cert certificate
	decodeStrict(t, "certificate.yaml", readFile(t, tlsOverlay+"/certificate.yaml"), &cert)
	checkCertificate(t, "certificate.yaml", cert, "server auth")
	if cert.Metadata.Namespace != b.kustomization.Namespace {
		t.Errorf("certificate.yaml: namespace %q, want %q", cert.Metadata.Namespace, b.kustomization.Namespace)
	}
	svc := headlessService(t)
	if fqdn := svc.Name + "." + svc.Namespace + ".svc.cluster.local"; !slices.Contains(cert.Spec.DNSNames, fqdn) {
		t.Errorf("certificate.yaml dnsNames %v lack the headless Service's name %s", cert.Spec.DNSNames, fqdn)
	}

	// The patched Deployment: the base's arguments kept, the TLS flags naming the Secret's
	// files in a whole-Secret mount (a subPath mount would never see a renewal).
	d := tlsDeployment(t, b, k)
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("patched Deployment: %d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	baseArgs := b.container(t).Args
	if len(c.Args) < len(baseArgs) || !slices.Equal(c.Args[:len(baseArgs)], baseArgs) {
		t.Errorf("patched args %v do not keep the base's %v", c.Args, baseArgs)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		if _, dup := volumes[v.Name]; dup {
			t.Errorf("volume %s twice", v.Name)
		}
		volumes[v.Name] = v
	}
	for flag, key := range map[string]string{"tls-cert": "tls.crt", "tls-key": "tls.key", "tls-client-ca": "ca.crt"} {
		file, ok := serverFlag(c, flag)
		if !ok {
			t.Errorf("patched container sets no --%s", flag)
			continue
		}
		if path.Base(file) != key {
			t.Errorf("--%s %s: want the Secret's key %s", flag, file, key)
		}
		var mounted bool
		for _, m := range c.VolumeMounts {
			v := volumes[m.Name]
			if m.MountPath == path.Dir(file) && m.SubPath == "" && m.ReadOnly && v.Secret != nil && v.Secret.SecretName == cert.Spec.SecretName && len(v.Secret.Items) == 0 {
				mounted = true
			}
		}
		if !mounted {
			t.Errorf("--%s %s: the Secret %s is not mounted whole, read-only, at %s", flag, file, cert.Spec.SecretName, path.Dir(file))
		}
	}

	// The kubelet's gRPC probes cannot speak TLS: the probes go to the admin port over HTTP.
	for what, want := range map[string]struct {
		probe *corev1.Probe
		path  string
	}{"readiness": {c.ReadinessProbe, "/readyz"}, "liveness": {c.LivenessProbe, "/healthz"}} {
		p := want.probe
		if p == nil || p.GRPC != nil || p.HTTPGet == nil || p.HTTPGet.Path != want.path || p.HTTPGet.Scheme != "" && p.HTTPGet.Scheme != corev1.URISchemeHTTP {
			t.Errorf("%s probe %+v: want HTTP GET %s", what, p, want.path)
			continue
		}
		if cp, ok := containerPort(c, p.HTTPGet.Port); !ok || cp.Name != "admin" {
			t.Errorf("%s probe port %s is not the admin container port", what, p.HTTPGet.Port.String())
		}
	}
	if _, set := serverFlag(c, "admin-addr"); set {
		t.Error("the probes need the admin listener on its default address")
	}
	// As in the base: liveness must not kill a draining pod.
	grace, err := time.ParseDuration(func() string { v, _ := serverFlag(c, "shutdown-grace"); return v }())
	if err != nil {
		t.Fatal(err)
	}
	if lp := c.LivenessProbe; time.Duration(lp.PeriodSeconds*lp.FailureThreshold)*time.Second < grace {
		t.Errorf("liveness fails after %v, before the %v drain ends", time.Duration(lp.PeriodSeconds*lp.FailureThreshold)*time.Second, grace)
	}
}

// TestK8sTLSReadmeIssuer checks the README's ClusterIssuer and Envoy client Certificate against
// the overlay: one CA for both ends.
func TestK8sTLSReadmeIssuer(t *testing.T) {
	var server certificate
	decodeStrict(t, "certificate.yaml", readFile(t, tlsOverlay+"/certificate.yaml"), &server)
	var issuers, clients int
	for _, block := range readmeYAMLBlocks(t, "README.md") {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(block), &tm); err != nil || tm.APIVersion != "cert-manager.io/v1" {
			continue
		}
		switch tm.Kind {
		case "ClusterIssuer":
			var ci clusterIssuer
			decodeStrict(t, "README ClusterIssuer", []byte(block), &ci)
			if ci.Metadata.Name != server.Spec.IssuerRef.Name || ci.Spec.CA.SecretName == "" {
				t.Errorf("README ClusterIssuer %s (CA secret %q): want the CA issuer %s of certificate.yaml", ci.Metadata.Name, ci.Spec.CA.SecretName, server.Spec.IssuerRef.Name)
			}
			issuers++
		case "Certificate":
			var c certificate
			decodeStrict(t, "README Certificate", []byte(block), &c)
			checkCertificate(t, "README Certificate", c, "client auth")
			if c.Spec.IssuerRef != server.Spec.IssuerRef {
				t.Errorf("README Certificate issuerRef %+v, want certificate.yaml's %+v", c.Spec.IssuerRef, server.Spec.IssuerRef)
			}
			clients++
		default:
			t.Errorf("README: unexpected cert-manager %s", tm.Kind)
		}
	}
	if issuers != 1 || clients != 1 {
		t.Errorf("README: %d ClusterIssuers and %d Certificates, want one of each", issuers, clients)
	}
}

// uncommentTLS returns envoy.yaml with its commented transport_socket block uncommented.
func uncommentTLS(t *testing.T) []byte {
	t.Helper()
	lines := strings.Split(string(readFile(t, "envoy.yaml")), "\n")
	start := -1
	for i, l := range lines {
		if strings.TrimSpace(l) == "# transport_socket:" {
			if start >= 0 {
				t.Fatal("envoy.yaml: two commented transport_socket blocks")
			}
			start = i
		}
	}
	if start < 0 {
		t.Fatal("envoy.yaml: no commented transport_socket block")
	}
	indent := lines[start][:len(lines[start])-len(strings.TrimLeft(lines[start], " "))]
	lines[start] = indent + "transport_socket:"
	for i := start + 1; i < len(lines) && strings.HasPrefix(lines[i], indent+"#  "); i++ {
		lines[i] = indent + lines[i][len(indent)+2:]
	}
	return []byte(strings.Join(lines, "\n"))
}

// TestEnvoyTLSVariant uncomments the TLS variant of the ext_proc cluster and decodes it as
// Envoy would: TLS to the name the server's certificate carries, trusting the CA of the
// Secret, with a client certificate.
func TestEnvoyTLSVariant(t *testing.T) {
	bs := &bootstrapv3.Bootstrap{}
	decodeProto(t, "envoy.yaml, TLS variant", uncommentTLS(t), bs)
	validate(t, "envoy.yaml, TLS variant", bs)

	var cl *clusterv3.Cluster
	for _, c := range bs.GetStaticResources().GetClusters() {
		if c.GetName() == "cors-extproc" {
			cl = c
		} else if c.GetTransportSocket() != nil {
			t.Errorf("cluster %s: transport_socket, want it on the cors-extproc cluster only", c.GetName())
		}
	}
	if cl == nil {
		t.Fatal("envoy.yaml: no cors-extproc cluster")
	}
	checkExtProcCluster(t, "envoy.yaml, TLS variant", cl)
	ts := cl.GetTransportSocket()
	if ts.GetName() != "envoy.transport_sockets.tls" {
		t.Fatalf("cors-extproc cluster transport_socket %q, want envoy.transport_sockets.tls", ts.GetName())
	}
	tc := &tlsv3.UpstreamTlsContext{}
	unmarshalAny(t, ts.GetTypedConfig(), tc)
	validate(t, "UpstreamTlsContext", tc)

	host, _ := soleAddress(t, cl)
	var cert certificate
	decodeStrict(t, "certificate.yaml", readFile(t, tlsOverlay+"/certificate.yaml"), &cert)
	if tc.GetSni() != host || !slices.Contains(cert.Spec.DNSNames, host) {
		t.Errorf("sni %q: want the cluster's address %s, a DNS name of certificate.yaml %v", tc.GetSni(), host, cert.Spec.DNSNames)
	}
	ctc := tc.GetCommonTlsContext()
	if !slices.Equal(ctc.GetAlpnProtocols(), []string{"h2"}) {
		t.Errorf("alpn_protocols %v, want [h2] (gRPC)", ctc.GetAlpnProtocols())
	}
	if v := ctc.GetTlsParams().GetTlsMinimumProtocolVersion(); v < tlsv3.TlsParameters_TLSv1_2 {
		t.Errorf("tls_minimum_protocol_version %v: the server accepts 1.2 and later only", v)
	}
	certs := ctc.GetTlsCertificates()
	if len(certs) != 1 || certs[0].GetCertificateChain().GetFilename() == "" || certs[0].GetPrivateKey().GetFilename() == "" {
		t.Errorf("tls_certificates %v: want one client certificate and key, from files", certs)
	}
	vc := ctc.GetValidationContext()
	if vc.GetTrustedCa().GetFilename() == "" {
		t.Error("validation_context: want trusted_ca from a file")
	}
	sans := vc.GetMatchTypedSubjectAltNames()
	if len(sans) != 1 || sans[0].GetSanType() != tlsv3.SubjectAltNameMatcher_DNS || sans[0].GetMatcher().GetExact() != host {
		t.Errorf("match_typed_subject_alt_names %v: want the DNS name %s exactly", sans, host)
	}
	// The files are one Secret's keys, in one directory.
	for _, f := range []string{certs[0].GetCertificateChain().GetFilename(), certs[0].GetPrivateKey().GetFilename(), vc.GetTrustedCa().GetFilename()} {
		if path.Dir(f) != path.Dir(vc.GetTrustedCa().GetFilename()) {
			t.Errorf("%s: want the client certificate, key and CA in one directory", f)
		}
	}

	// The commented block leaves the file as it is: plaintext.
	if c := loadEnvoy(t).cluster(t, "cors-extproc"); c.GetTransportSocket() != nil {
		t.Error("envoy.yaml: the TLS variant must stay commented out")
	}
}

// TestRealEnvoyMutualTLS runs the real server with the TLS overlay's flags and a real Envoy
// with envoy.yaml's TLS variant (its file names moved to a test CA's files), on every pinned
// release: a preflight gets cors-extproc's answer over mutual TLS. Then again without the
// variant's alpn_protocols, as Envoy Gateway's BackendTLSPolicy and Istio's DestinationRule
// configure their clusters: Envoy offers h2 by itself for an HTTP/2 cluster, which the gRPC
// server's ALPN check requires.
func TestRealEnvoyMutualTLS(t *testing.T) {
	bins := realenvoy.Binaries(t)
	variant := &bootstrapv3.Bootstrap{}
	decodeProto(t, "envoy.yaml, TLS variant", uncommentTLS(t), variant)
	var socket *corev3.TransportSocket
	for _, c := range variant.GetStaticResources().GetClusters() {
		if c.GetName() == "cors-extproc" {
			socket = c.GetTransportSocket()
		}
	}
	host, _ := soleAddress(t, loadEnvoy(t).cluster(t, "cors-extproc"))

	pki := servicetest.NewPKI(t)
	pki.Leaf(t, "tls", x509.ExtKeyUsageServerAuth, host) // named as the Secret's keys
	pki.Leaf(t, "client", x509.ExtKeyUsageClientAuth)
	service := servicetest.Start(t, servicetest.Build(t), append(slices.Clone(deploymentArgs),
		"--tls-cert", pki.Path("tls.crt"), "--tls-key", pki.Path("tls.key"), "--tls-client-ca", pki.Path("ca.crt"))...)

	preflight := envoyRouteCases[slices.IndexFunc(envoyRouteCases, func(c routeCase) bool { return c.name == "spa-api preflight" })]
	for _, alpn := range []bool{true, false} {
		for _, bin := range bins {
			t.Run(fmt.Sprintf("%s/alpn=%v", bin.Version, alpn), func(t *testing.T) {
				tc := &tlsv3.UpstreamTlsContext{}
				unmarshalAny(t, socket.GetTypedConfig(), tc)
				ctc := tc.GetCommonTlsContext()
				ctc.GetTlsCertificates()[0].CertificateChain = &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: pki.Path("client.crt")}}
				ctc.GetTlsCertificates()[0].PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: pki.Path("client.key")}}
				ctc.GetValidationContext().TrustedCa = &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: pki.Path("ca.crt")}}
				if !alpn {
					ctc.AlpnProtocols = nil
				}
				typed, err := anypb.New(tc)
				if err != nil {
					t.Fatal(err)
				}
				cfg := loadEnvoy(t)
				cfg.cluster(t, "cors-extproc").TransportSocket = &corev3.TransportSocket{Name: socket.GetName(),
					ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: typed}}
				s := startStack(t, bin, service, cfg, service.GRPCAddr)
				res := s.do(t, preflight, "tls")
				if cors := corsHeaders(res.Header); res.StatusCode != preflight.status || !sameHeaders(cors, preflight.cors) {
					t.Errorf("preflight over mutual TLS: %d %v, want %d %v", res.StatusCode, cors, preflight.status, preflight.cors)
				}
				if n := s.envoy.Counter(t, "cluster.cors-extproc.ssl.handshake"); n == 0 {
					t.Error("no TLS handshake with cors-extproc")
				}
			})
		}
	}
}
