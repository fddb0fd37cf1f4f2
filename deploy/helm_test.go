package deploy_test

import (
	"encoding/json"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	chartloader "helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"helm.sh/helm/v4/pkg/strvals"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	k8snetworkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/cors-extproc/cors-extproc/internal/policy"
)

// helmChartDir is the Helm chart, relative to deploy/.
const helmChartDir = "helm/cors-extproc"

// helmRender renders a chart as `helm template RELEASE CHART --namespace NAMESPACE` does, with
// Helm's own library (values coalesced with the chart's, checked against its schema, then
// rendered), and decodes every object strictly into its type. It also returns the NOTES.txt
// Helm prints after an install.
func helmRender(t *testing.T, chartDir, release, namespace string, values map[string]any) ([]manifest, string, error) {
	t.Helper()
	ch, err := chartloader.Load(chartDir)
	if err != nil {
		t.Fatalf("load %s: %v", chartDir, err)
	}
	top, err := chartutil.ToRenderValues(ch, values, common.ReleaseOptions{Name: release, Namespace: namespace, IsInstall: true, Revision: 1}, nil)
	if err != nil {
		return nil, "", err
	}
	files, err := engine.Render(ch, top)
	if err != nil {
		return nil, "", err
	}
	var out []manifest
	var notes string
	for _, name := range slices.Sorted(maps.Keys(files)) {
		switch path.Ext(name) {
		case ".yaml":
			out = append(out, decodeManifests(t, "helm template "+name, []byte(files[name]))...)
		case ".txt":
			notes += files[name]
		}
	}
	return out, notes, nil
}

// mustRender renders the chart and fails the test on an error.
func mustRender(t *testing.T, set ...string) []manifest {
	t.Helper()
	ms, _, err := helmRender(t, helmChartDir, "cors-extproc", "cors-extproc", helmValues(t, set...))
	if err != nil {
		t.Fatalf("helm template --set %v: %v", set, err)
	}
	return ms
}

// helmValues parses --set arguments as Helm's command line does.
func helmValues(t *testing.T, set ...string) map[string]any {
	t.Helper()
	values := map[string]any{}
	for _, s := range set {
		if err := strvals.ParseInto(s, values); err != nil {
			t.Fatalf("--set %s: %v", s, err)
		}
	}
	return values
}

// helmLint runs `helm lint` with Helm's library and fails on any warning or error.
func helmLint(t *testing.T, chartDir string, values map[string]any) {
	t.Helper()
	result := lint.RunAll(chartDir, values, "cors-extproc")
	for _, m := range result.Messages {
		if m.Severity >= support.WarningSev {
			t.Errorf("helm lint %s %v: %v", chartDir, values, m)
		}
	}
}

// chartCombinations are value sets a platform team uses; each must lint and render.
var chartCombinations = [][]string{
	nil,
	{"autoscaling.enabled=false", "replicaCount=3"},
	{"tls.enabled=true"},
	{"tls.enabled=true", "tls.certManager.enabled=false", "tls.existingSecret=my-tls", "tls.clientAuth=false"},
	{"serviceMonitor.enabled=true", "serviceMonitor.labels.release=prometheus"},
	{"networkPolicy.envoyNamespaces={gateways,envoy}", "networkPolicy.metricsNamespaces=null"},
	{"networkPolicy.enabled=false", "podDisruptionBudget.enabled=false"},
	{"resources.limits.memory=1Gi", "extraArgs={--default-policy=reporting}", "extraEnv[0].name=GODEBUG", "extraEnv[0].value=x509negativeserial=1"},
	{"goMemLimit=900MiB", "resources.limits.memory=1000M"},
	{"image.repository=registry.example.com/cors-extproc", "image.tag=1.2.3", "image.pullPolicy=Always"},
}

func TestHelmChartLintsAndRenders(t *testing.T) {
	for _, set := range chartCombinations {
		helmLint(t, helmChartDir, helmValues(t, set...))
		objects := mustRender(t, set...)
		d := only[appsv1.Deployment](t, objects)
		c := d.Spec.Template.Spec.Containers[0]
		checkGoMemLimit(t, "helm --set "+strings.Join(set, ","), c)
		checkSelectors(t, objects)
	}
}

// Values the chart cannot turn into a working release are refused with a message that names them.
func TestHelmChartRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"tls.enabled=true", "tls.certManager.enabled=false"}, "tls.enabled needs tls.certManager.enabled or tls.existingSecret"},
		{[]string{"resources.limits.memory=1G"}, `resources.limits.memory "1G": give it in Mi or Gi, or set goMemLimit`},
		{[]string{"replicas=3"}, "additional properties 'replicas' not allowed"},
		{[]string{"networkPolicy.envoyNamespaces=null"}, "networkPolicy.envoyNamespaces"},
	} {
		_, _, err := helmRender(t, helmChartDir, "cors-extproc", "cors-extproc", helmValues(t, tc.set...))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %v: error %v, want one saying %q", tc.set, err, tc.want)
		}
	}
}

// The chart with its default values renders the kustomize base, but the Namespace (Helm's
// --create-namespace makes it): the same kinds and names, and the same specs (ports, probes,
// security settings, resources, arguments, policies) once the labels, which Helm extends with
// the release's, are set aside. Each side's selectors are checked to select its own pods.
func TestHelmDefaultIsTheKustomizeBase(t *testing.T) {
	compareRenders(t, kustomizeBuild(t, filesys.MakeFsOnDisk(), k8sBaseDir), mustRender(t), "Namespace /cors-extproc")
}

// With TLS on, the chart renders what the TLS overlay does.
func TestHelmTLSIsTheTLSOverlay(t *testing.T) {
	compareRenders(t, kustomizeBuild(t, filesys.MakeFsOnDisk(), tlsOverlay), mustRender(t, "tls.enabled=true"), "Namespace /cors-extproc")
}

// With the ServiceMonitor on, the chart renders what the monitoring overlay does, its
// ServiceMonitor included. The overlay's alerting rules and Grafana dashboard are not in the
// chart (yet): they are left out of the comparison.
func TestHelmServiceMonitorIsTheMonitoringOverlay(t *testing.T) {
	var kustomized []manifest
	for _, m := range kustomizeBuild(t, filesys.MakeFsOnDisk(), "k8s/overlays/monitoring") {
		if m.Kind != "PrometheusRule" && !(m.Kind == "ConfigMap" && strings.HasPrefix(m.meta.Name, "cors-extproc-grafana-dashboard-")) {
			kustomized = append(kustomized, m)
		}
	}
	compareRenders(t, kustomized, mustRender(t, "serviceMonitor.enabled=true"), "Namespace /cors-extproc")
}

// compareRenders compares two sets of objects as described above; skip names the kustomize
// objects the chart does not render.
func compareRenders(t *testing.T, kustomized, helm []manifest, skip ...string) {
	t.Helper()
	checkSelectors(t, kustomized)
	checkSelectors(t, helm)
	// kustomize suffixes the generated ConfigMap's name with a hash of its content.
	hashed := regexp.MustCompile(`^(.*-policies)-[a-z0-9]{10}$`)
	var renames []string
	for _, m := range kustomized {
		if sub := hashed.FindStringSubmatch(m.meta.Name); m.Kind == "ConfigMap" && sub != nil {
			renames = append(renames, `"`+sub[0]+`"`, `"`+sub[1]+`"`)
		}
	}
	k := normalized(t, kustomized, strings.NewReplacer(renames...))
	h := normalized(t, helm, strings.NewReplacer())
	for _, key := range skip {
		delete(k, key)
	}
	if !slices.Equal(slices.Sorted(maps.Keys(k)), slices.Sorted(maps.Keys(h))) {
		t.Fatalf("kustomize renders %v,\nthe chart %v", slices.Sorted(maps.Keys(k)), slices.Sorted(maps.Keys(h)))
	}
	for key := range k {
		if diff := cmp.Diff(k[key], h[key]); diff != "" {
			t.Errorf("%s differs between kustomize and the chart (-kustomize +helm):\n%s", key, diff)
		}
	}
}

// normalized returns each object as generic JSON, keyed by kind and name, without what Helm
// adds or replaces by design: labels, annotations, selectors (checked by checkSelectors) and the
// pod template's metadata.
func normalized(t *testing.T, ms []manifest, rename *strings.Replacer) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, m := range ms {
		js, err := json.Marshal(m.obj)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(rename.Replace(string(js))), &v); err != nil {
			t.Fatal(err)
		}
		for _, p := range [][]string{
			{"metadata", "labels"}, {"metadata", "annotations"}, {"metadata", "creationTimestamp"},
			{"spec", "selector"}, {"spec", "podSelector"}, {"spec", "template", "metadata"},
		} {
			deleteAt(v, p)
		}
		if tmpl, ok := dig(v, "spec", "template", "spec").(map[string]any); ok {
			for _, c := range tmpl["topologySpreadConstraints"].([]any) {
				delete(c.(map[string]any), "labelSelector")
			}
		}
		delete(v, "status")
		out[m.Kind+" "+m.meta.Namespace+"/"+strings.Trim(rename.Replace(`"`+m.meta.Name+`"`), `"`)] = v
	}
	return out
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func deleteAt(v map[string]any, p []string) {
	if parent, ok := dig(v, p[:len(p)-1]...).(map[string]any); ok {
		delete(parent, p[len(p)-1])
	}
}

// checkSelectors checks that every selector of a render selects its pods, and only the
// Deployment's: the Services, PodDisruptionBudget, NetworkPolicy and spread constraints, and the
// ServiceMonitor selects the metrics Service.
func checkSelectors(t *testing.T, ms []manifest) {
	t.Helper()
	d := only[appsv1.Deployment](t, ms)
	pods := labels.Set(d.Spec.Template.Labels)
	selects := func(what string, sel *metav1.LabelSelector) {
		t.Helper()
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil || s.Empty() || !s.Matches(pods) {
			t.Errorf("%s: %s selector %v does not select the pods %v (%v)", ms[0].source, what, sel, pods, err)
		}
	}
	selects("Deployment", d.Spec.Selector)
	for _, c := range d.Spec.Template.Spec.TopologySpreadConstraints {
		selects("topologySpreadConstraint", c.LabelSelector)
	}
	var metrics []*corev1.Service
	for _, m := range ms {
		switch o := m.obj.(type) {
		case *corev1.Service:
			selects("Service "+o.Name, metav1.SetAsLabelSelector(o.Spec.Selector))
			if o.Spec.ClusterIP != corev1.ClusterIPNone {
				metrics = append(metrics, o)
			}
		case *policyv1.PodDisruptionBudget:
			selects("PodDisruptionBudget", o.Spec.Selector)
		case *k8snetworkingv1.NetworkPolicy:
			selects("NetworkPolicy", &o.Spec.PodSelector)
		case *autoscalingv2.HorizontalPodAutoscaler:
			if o.Spec.ScaleTargetRef.Name != d.Name || d.Spec.Replicas != nil {
				t.Errorf("%s: the HorizontalPodAutoscaler scales %s; the Deployment %s must leave replicas to it (replicas %v)", m.source, o.Spec.ScaleTargetRef.Name, d.Name, d.Spec.Replicas)
			}
		case *serviceMonitor:
			s, err := metav1.LabelSelectorAsSelector(&o.Spec.Selector)
			if err != nil || len(metrics) != 1 || !s.Matches(labels.Set(metrics[0].Labels)) {
				t.Errorf("%s: ServiceMonitor selector %v does not select the metrics Service", m.source, o.Spec.Selector)
			}
		}
	}
}

// The chart's default named policies are the kustomize base's file (a link to it, so there is
// one copy), and a policies value replaces them with a file the server accepts.
func TestHelmPolicies(t *testing.T) {
	cm := only[corev1.ConfigMap](t, mustRender(t))
	if got, want := cm.Data["policies.yaml"], string(readFile(t, k8sBaseDir+"/policies.yaml")); got != want {
		t.Errorf("default policies.yaml differs from %s/policies.yaml", k8sBaseDir)
	}
	objects := mustRender(t, "policies.api.origins={https://app.example.com}", "policies.api.credentials=true", "policies.api.max_age=600")
	cm = only[corev1.ConfigMap](t, objects)
	named, warnings, err := policy.ParseNamed([]byte(cm.Data["policies.yaml"]))
	if err != nil || len(warnings) != 0 || len(named) != 1 || named["api"] == nil || named["api"].Err() != nil {
		t.Fatalf("policies value rendered as %q: %v %v %v", cm.Data["policies.yaml"], named, warnings, err)
	}
	// The pod template changes with the policies, so the Deployment rolls.
	before := only[appsv1.Deployment](t, mustRender(t)).Spec.Template.Annotations
	after := only[appsv1.Deployment](t, objects).Spec.Template.Annotations
	if before["checksum/policies"] == "" || before["checksum/policies"] == after["checksum/policies"] {
		t.Errorf("checksum/policies %q and %q: want the pod template to change with the policies", before["checksum/policies"], after["checksum/policies"])
	}
}

// The values that change the Deployment do what values.yaml says.
func TestHelmValues(t *testing.T) {
	d := only[appsv1.Deployment](t, mustRender(t, "autoscaling.enabled=false", "replicaCount=3"))
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("autoscaling off: replicas %v, want 3", d.Spec.Replicas)
	}

	objects := mustRender(t, "tls.enabled=true", "tls.certManager.enabled=false", "tls.existingSecret=my-tls", "tls.clientAuth=false")
	d = only[appsv1.Deployment](t, objects)
	c := d.Spec.Template.Spec.Containers[0]
	if _, ok := serverFlag(c, "tls-client-ca"); ok {
		t.Error("tls.clientAuth false still sets --tls-client-ca")
	}
	if _, ok := serverFlag(c, "tls-cert"); !ok {
		t.Error("tls.enabled sets no --tls-cert")
	}
	var secret string
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			secret = v.Secret.SecretName
		}
	}
	if secret != "my-tls" {
		t.Errorf("tls.existingSecret my-tls: the pods mount the Secret %q", secret)
	}
	for _, m := range objects {
		if m.Kind == "Certificate" {
			t.Error("tls.certManager.enabled false still renders a Certificate")
		}
	}

	d = only[appsv1.Deployment](t, mustRender(t, "resources.limits.memory=1Gi", "extraArgs={--default-policy=reporting}", "extraEnv[0].name=GODEBUG", "extraEnv[0].value=x509negativeserial=1"))
	c = d.Spec.Template.Spec.Containers[0]
	if v, _ := serverFlag(c, "default-policy"); v != "reporting" || c.Args[0] != "--policies=/etc/cors-extproc/policies.yaml" {
		t.Errorf("extraArgs: args %v", c.Args)
	}
	if env := c.Env; len(env) != 2 || env[0].Name != "GOMEMLIMIT" || env[0].Value != "921MiB" || env[1].Name != "GODEBUG" {
		t.Errorf("1Gi limit and extraEnv: env %+v, want GOMEMLIMIT 921MiB then GODEBUG", env)
	}

	np := only[k8snetworkingv1.NetworkPolicy](t, mustRender(t, "networkPolicy.envoyNamespaces={gateways,envoy}", "networkPolicy.metricsNamespaces=null"))
	if len(np.Spec.Ingress) != 1 || !slices.Equal(np.Spec.Ingress[0].From[0].NamespaceSelector.MatchExpressions[0].Values, []string{"gateways", "envoy"}) {
		t.Errorf("networkPolicy namespaces: ingress %+v", np.Spec.Ingress)
	}

	// Another release name: every object is named after it, and references follow.
	objects, notes, err := helmRender(t, helmChartDir, "edge", "gateways", helmValues(t, "tls.enabled=true"))
	if err != nil {
		t.Fatal(err)
	}
	// What Helm prints after the install: the address Envoy needs, and that TLS needs the Envoys
	// switched too.
	if !strings.Contains(notes, "edge-cors-extproc.gateways.svc.cluster.local:9002") || !strings.Contains(notes, "TLS only") {
		t.Errorf("NOTES.txt with TLS in release edge:\n%s", notes)
	}
	if _, notes, _ := helmRender(t, helmChartDir, "cors-extproc", "cors-extproc", nil); strings.Contains(notes, "TLS") {
		t.Errorf("NOTES.txt without TLS speaks of it:\n%s", notes)
	}
	cert := only[certificate](t, objects)
	d = only[appsv1.Deployment](t, objects)
	if d.Name != "edge-cors-extproc" || cert.Spec.DNSNames[0] != "edge-cors-extproc.gateways.svc.cluster.local" || d.Spec.Template.Spec.ServiceAccountName != d.Name {
		t.Errorf("release edge in gateways: Deployment %s, certificate for %v", d.Name, cert.Spec.DNSNames)
	}
	for _, m := range objects {
		if m.meta.Namespace != "gateways" {
			t.Errorf("%s: namespace %q, want the release's", m.key(), m.meta.Namespace)
		}
	}
}
