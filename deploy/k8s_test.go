package deploy_test

import (
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// kustomization holds the fields of kustomize.config.k8s.io/v1beta1 Kustomization these files
// use; decoding it strictly rejects any other.
type kustomization struct {
	APIVersion         string   `json:"apiVersion"`
	Kind               string   `json:"kind"`
	Namespace          string   `json:"namespace,omitempty"`
	Resources          []string `json:"resources"`
	ConfigMapGenerator []struct {
		Name      string   `json:"name"`
		Namespace string   `json:"namespace,omitempty"`
		Files     []string `json:"files"`
		Options   struct {
			Labels map[string]string `json:"labels,omitempty"`
		} `json:"options,omitempty"`
	} `json:"configMapGenerator,omitempty"`
	Patches []struct {
		Path   string `json:"path"`
		Target struct {
			Group   string `json:"group"`
			Version string `json:"version"`
			Kind    string `json:"kind"`
			Name    string `json:"name"`
		} `json:"target"`
	} `json:"patches,omitempty"`
}

func loadKustomization(t *testing.T, dir string) kustomization {
	t.Helper()
	var k kustomization
	decodeStrict(t, dir+"/kustomization.yaml", readFile(t, dir+"/kustomization.yaml"), &k)
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Fatalf("%s/kustomization.yaml: apiVersion/kind %s/%s", dir, k.APIVersion, k.Kind)
	}
	return k
}

// k8sBase is deploy/k8s decoded into the Kubernetes API types.
type k8sBase struct {
	kustomization  kustomization
	namespace      *corev1.Namespace
	serviceAccount *corev1.ServiceAccount
	deployment     *appsv1.Deployment
	services       map[string]*corev1.Service
	pdb            *policyv1.PodDisruptionBudget
	hpa            *autoscalingv2.HorizontalPodAutoscaler
	networkPolicy  *networkingv1.NetworkPolicy
	namespaced     []metav1.Object
}

// k8sBaseDir is the kustomize base; the overlays live beside it, not inside it, since kustomize
// refuses an overlay within its own base ("cycle detected").
const k8sBaseDir = "k8s/base"

func loadK8s(t *testing.T) *k8sBase {
	t.Helper()
	b := &k8sBase{kustomization: loadKustomization(t, k8sBaseDir), services: map[string]*corev1.Service{}}
	for _, res := range b.kustomization.Resources {
		name := k8sBaseDir + "/" + res
		for _, doc := range yamlDocuments(t, name) {
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			switch gvk := tm.APIVersion + " " + tm.Kind; gvk {
			case "v1 Namespace":
				b.namespace = decodeObject[corev1.Namespace](t, name, doc)
			case "v1 ServiceAccount":
				b.serviceAccount = decodeObject[corev1.ServiceAccount](t, name, doc)
				b.namespaced = append(b.namespaced, b.serviceAccount)
			case "apps/v1 Deployment":
				b.deployment = decodeObject[appsv1.Deployment](t, name, doc)
				b.namespaced = append(b.namespaced, b.deployment)
			case "v1 Service":
				svc := decodeObject[corev1.Service](t, name, doc)
				b.services[svc.Name] = svc
				b.namespaced = append(b.namespaced, svc)
			case "policy/v1 PodDisruptionBudget":
				b.pdb = decodeObject[policyv1.PodDisruptionBudget](t, name, doc)
				b.namespaced = append(b.namespaced, b.pdb)
			case "autoscaling/v2 HorizontalPodAutoscaler":
				b.hpa = decodeObject[autoscalingv2.HorizontalPodAutoscaler](t, name, doc)
				b.namespaced = append(b.namespaced, b.hpa)
			case "networking.k8s.io/v1 NetworkPolicy":
				b.networkPolicy = decodeObject[networkingv1.NetworkPolicy](t, name, doc)
				b.namespaced = append(b.namespaced, b.networkPolicy)
			default:
				t.Fatalf("%s: unexpected %s", name, gvk)
			}
		}
	}
	if b.namespace == nil || b.serviceAccount == nil || b.deployment == nil || b.pdb == nil || b.hpa == nil || b.networkPolicy == nil || len(b.services) != 2 {
		t.Fatal("deploy/k8s must hold a Namespace, ServiceAccount, Deployment, two Services, PodDisruptionBudget, HorizontalPodAutoscaler and NetworkPolicy")
	}
	return b
}

func decodeObject[T any](t *testing.T, name string, doc []byte) *T {
	t.Helper()
	v := new(T)
	decodeStrict(t, name, doc, v)
	return v
}

// headlessService is the Service Envoy reaches cors-extproc through.
func headlessService(t *testing.T) *corev1.Service {
	t.Helper()
	for _, svc := range loadK8s(t).services {
		if svc.Spec.ClusterIP == corev1.ClusterIPNone {
			return svc
		}
	}
	t.Fatal("deploy/k8s: no headless Service")
	return nil
}

func (b *k8sBase) container(t *testing.T) corev1.Container {
	t.Helper()
	cs := b.deployment.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("want one container, got %d", len(cs))
	}
	return cs[0]
}

// serverFlag returns a cors-extproc flag's value as the container sets it, through args
// (--name=value) or the environment (CORS_EXTPROC_NAME).
func serverFlag(c corev1.Container, name string) (string, bool) {
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	env := "CORS_EXTPROC_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	for _, e := range c.Env {
		if e.Name == env {
			return e.Value, true
		}
	}
	return "", false
}

// containerPort resolves a Service targetPort, probe or NetworkPolicy port (name or number)
// on the container.
func containerPort(c corev1.Container, p intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

func TestK8sKustomizationListsEveryManifest(t *testing.T) {
	for _, dir := range []string{k8sBaseDir, "k8s/overlays/monitoring", tlsOverlay} {
		k := loadKustomization(t, dir)
		listed := map[string]bool{}
		for _, r := range k.Resources {
			if strings.HasPrefix(r, "..") {
				if _, err := os.Stat(filepath.FromSlash(path.Join(dir, r, "kustomization.yaml"))); err != nil {
					t.Errorf("%s: resource %s: %v", dir, r, err)
				}
				continue
			}
			listed[r] = true
		}
		for _, p := range k.Patches {
			listed[p.Path] = true
		}
		for _, g := range k.ConfigMapGenerator {
			for _, f := range g.Files {
				_, file, _ := strings.Cut(f, "=")
				if file == "" {
					file = f
				}
				listed[file] = true
			}
		}
		files, err := filepath.Glob(filepath.Join(filepath.FromSlash(dir), "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		json, _ := filepath.Glob(filepath.Join(filepath.FromSlash(dir), "*.json"))
		files = append(files, json...)
		slices.Sort(files)
		var present []string
		for _, f := range files {
			if base := filepath.Base(f); base != "kustomization.yaml" {
				present = append(present, base)
			}
		}
		var want []string
		for f := range listed {
			want = append(want, f)
		}
		slices.Sort(want)
		if !slices.Equal(present, want) {
			t.Errorf("%s: files %v, but kustomization.yaml lists %v", dir, present, want)
		}
	}
}

func TestK8sBase(t *testing.T) {
	b := loadK8s(t)
	ns := b.kustomization.Namespace
	if b.namespace.Name != ns {
		t.Errorf("Namespace %s, kustomization namespace %s", b.namespace.Name, ns)
	}
	for _, o := range b.namespaced {
		if o.GetNamespace() != ns {
			t.Errorf("%s: namespace %q, want %q", o.GetName(), o.GetNamespace(), ns)
		}
	}

	d := b.deployment
	pod := d.Spec.Template
	podLabels := labels.Set(pod.Labels)
	selects := func(what string, sel *metav1.LabelSelector) {
		t.Helper()
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil || s.Empty() || !s.Matches(podLabels) {
			t.Errorf("%s selector %v does not select the pods (%v, err %v)", what, sel, pod.Labels, err)
		}
	}
	selects("Deployment", d.Spec.Selector)
	selects("PodDisruptionBudget", b.pdb.Spec.Selector)
	selects("NetworkPolicy", &b.networkPolicy.Spec.PodSelector)
	for _, tsc := range pod.Spec.TopologySpreadConstraints {
		selects("topologySpreadConstraint "+tsc.TopologyKey, tsc.LabelSelector)
	}
	if len(pod.Spec.TopologySpreadConstraints) == 0 {
		t.Error("want topologySpreadConstraints")
	}
	// The HPA owns the replica count: a replicas field would reset it at every apply.
	if d.Spec.Replicas != nil {
		t.Errorf("Deployment sets replicas %d, which every kubectl apply would restore over the HorizontalPodAutoscaler's count", *d.Spec.Replicas)
	}
	if h := b.hpa.Spec; h.ScaleTargetRef.Kind != "Deployment" || h.ScaleTargetRef.Name != d.Name || h.MinReplicas == nil || *h.MinReplicas < 2 || h.MaxReplicas < *h.MinReplicas {
		t.Errorf("HorizontalPodAutoscaler %+v: want it on the Deployment, from 2 replicas", h)
	}
	if len(b.hpa.Spec.Metrics) != 1 || b.hpa.Spec.Metrics[0].Resource == nil || b.hpa.Spec.Metrics[0].Resource.Name != corev1.ResourceCPU {
		t.Error("HorizontalPodAutoscaler: want one CPU metric")
	}
	if pod.Spec.ServiceAccountName != b.serviceAccount.Name {
		t.Errorf("pods use ServiceAccount %q, want %q", pod.Spec.ServiceAccountName, b.serviceAccount.Name)
	}

	c := b.container(t)
	for _, svc := range b.services {
		if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
			t.Errorf("Service %s selector %v does not select the pods", svc.Name, svc.Spec.Selector)
		}
		for _, p := range svc.Spec.Ports {
			if _, ok := containerPort(c, p.TargetPort); !ok {
				t.Errorf("Service %s port %s: targetPort %s is not a container port", svc.Name, p.Name, p.TargetPort.String())
			}
		}
	}
	grpc := headlessService(t)
	if p := grpc.Spec.Ports; len(p) != 1 || p[0].Name != "grpc" || p[0].AppProtocol == nil || *p[0].AppProtocol != "grpc" {
		t.Errorf("headless Service %s ports %+v: want one port named grpc, appProtocol grpc", grpc.Name, p)
	}

	// The container ports are the server's listening addresses.
	for flag, port := range map[string]string{"grpc-addr": "grpc", "admin-addr": "admin"} {
		addr, set := serverFlag(c, flag)
		if !set {
			addr = map[string]string{"grpc-addr": ":9002", "admin-addr": ":9090"}[flag]
		}
		cp, ok := containerPort(c, intstr.FromString(port))
		if !ok || ":"+strconv.Itoa(int(cp.ContainerPort)) != addr[strings.LastIndex(addr, ":"):] {
			t.Errorf("container port %s %+v does not match --%s %s", port, cp, flag, addr)
		}
	}
	for what, probe := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if probe == nil || probe.GRPC == nil || probe.GRPC.Service != nil && *probe.GRPC.Service != "" {
			t.Errorf("%s probe: want the gRPC health service's overall status", what)
			continue
		}
		if cp, ok := containerPort(c, intstr.FromInt32(probe.GRPC.Port)); !ok || cp.Name != "grpc" {
			t.Errorf("%s probe port %d is not the grpc container port", what, probe.GRPC.Port)
		}
	}

	// Shutdown: the kubelet must wait for the drain, and liveness must not kill a draining pod.
	grace := 15 * time.Second
	if v, ok := serverFlag(c, "shutdown-grace"); ok {
		var err error
		if grace, err = time.ParseDuration(v); err != nil {
			t.Fatalf("--shutdown-grace %q: %v", v, err)
		}
	}
	tgp := pod.Spec.TerminationGracePeriodSeconds
	if tgp == nil || time.Duration(*tgp)*time.Second <= grace {
		t.Errorf("terminationGracePeriodSeconds must exceed --shutdown-grace %v", grace)
	}
	lp := c.LivenessProbe
	if window := time.Duration(lp.PeriodSeconds*lp.FailureThreshold) * time.Second; window < grace {
		t.Errorf("liveness fails after %v of NOT_SERVING, before the %v drain ends", window, grace)
	}

	// The named-policy file: --policies names the ConfigMap's key under the mount path.
	policies, ok := serverFlag(c, "policies")
	if !ok {
		t.Fatal("the container sets no --policies")
	}
	if len(b.kustomization.ConfigMapGenerator) != 1 || !slices.Contains(b.kustomization.ConfigMapGenerator[0].Files, path.Base(policies)) {
		t.Fatalf("configMapGenerator %+v must hold %s", b.kustomization.ConfigMapGenerator, path.Base(policies))
	}
	gen := b.kustomization.ConfigMapGenerator[0].Name
	var mounted bool
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == gen && m.MountPath == path.Dir(policies) && m.SubPath == "" {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("ConfigMap %s is not mounted at %s", gen, path.Dir(policies))
	}

	// Security and resources.
	psc, csc := pod.Spec.SecurityContext, c.SecurityContext
	switch {
	case psc == nil || csc == nil:
		t.Fatal("want pod and container securityContext")
	case psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0:
		t.Error("want runAsNonRoot with a numeric non-root runAsUser")
	case psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("want seccomp RuntimeDefault")
	case csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation:
		t.Error("want allowPrivilegeEscalation false")
	case csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem:
		t.Error("want readOnlyRootFilesystem")
	case csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) != 0:
		t.Error("want all capabilities dropped")
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("no %s request", r)
		}
		if _, ok := c.Resources.Limits[r]; !ok {
			t.Errorf("no %s limit", r)
		}
	}
	checkGoMemLimit(t, "deploy/k8s/base", c)
	if c.Image != publishedImage+":"+imageTag(t) {
		t.Errorf("container image %q, want %s:%s (the image deploy/README.md names)", c.Image, publishedImage, imageTag(t))
	}
}

// publishedImage is the image every deployment file and document names.
const publishedImage = "ghcr.io/cors-extproc/cors-extproc"

// imageTag is the release the deployment files run: the Helm chart's appVersion.
func imageTag(t *testing.T) string {
	t.Helper()
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(readFile(t, helmChartDir+"/Chart.yaml"), &chart); err != nil || chart.AppVersion == "" {
		t.Fatalf("%s/Chart.yaml: appVersion %q, %v", helmChartDir, chart.AppVersion, err)
	}
	return chart.AppVersion
}

// checkGoMemLimit checks that GOMEMLIMIT leaves the Go runtime headroom under the container's
// memory limit: the cgroup counts memory the runtime does not manage, and the runtime overshoots
// its soft limit briefly, so a GOMEMLIMIT at the limit itself would get the pod OOM-killed.
func checkGoMemLimit(t *testing.T, what string, c corev1.Container) {
	t.Helper()
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		t.Errorf("%s: no memory limit", what)
		return
	}
	var value string
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			if e.ValueFrom != nil {
				t.Errorf("%s: GOMEMLIMIT from %+v: the downward API gives the whole limit, without headroom", what, e.ValueFrom)
			}
			value = e.Value
		}
	}
	bytes, err := goMemLimitBytes(value)
	if err != nil {
		t.Errorf("%s: GOMEMLIMIT %q: %v", what, value, err)
		return
	}
	if ratio := float64(bytes) / float64(limit.Value()); ratio < 0.85 || ratio > 0.95 {
		t.Errorf("%s: GOMEMLIMIT %s is %.0f%% of the memory limit %s, want about 90%%", what, value, 100*ratio, limit.String())
	}
}

// goMemLimitBytes parses GOMEMLIMIT as the Go runtime does: a number of bytes with an optional
// B, KiB, MiB, GiB or TiB suffix.
func goMemLimitBytes(v string) (int64, error) {
	for i, unit := range []string{"TiB", "GiB", "MiB", "KiB", "B"} {
		if n, ok := strings.CutSuffix(v, unit); ok {
			x, err := strconv.ParseInt(n, 10, 64)
			return x << (10 * (4 - i)), err
		}
	}
	return strconv.ParseInt(v, 10, 64)
}

// TestK8sNetworkPolicy checks who may reach which port: the gRPC port from the gateways'
// namespaces (where Envoy Gateway runs its proxies by default, and Istio's ingress gateway as
// installed by default), the admin port from the monitoring namespace.
func TestK8sNetworkPolicy(t *testing.T) {
	b := loadK8s(t)
	c := b.container(t)
	allowed := map[string][]string{} // container port name -> namespaces
	for _, rule := range b.networkPolicy.Spec.Ingress {
		var namespaces []string
		for _, peer := range rule.From {
			if peer.NamespaceSelector == nil || peer.PodSelector != nil || peer.IPBlock != nil {
				t.Fatalf("NetworkPolicy peer %+v: want namespace selectors only", peer)
			}
			sel, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
			if err != nil {
				t.Fatal(err)
			}
			for _, ns := range []string{"envoy-gateway-system", "istio-system", "monitoring", "default", b.kustomization.Namespace} {
				if sel.Matches(labels.Set{"kubernetes.io/metadata.name": ns}) {
					namespaces = append(namespaces, ns)
				}
			}
		}
		for _, p := range rule.Ports {
			cp, ok := containerPort(c, *p.Port)
			if !ok {
				t.Fatalf("NetworkPolicy port %s is not a container port", p.Port.String())
			}
			allowed[cp.Name] = append(allowed[cp.Name], namespaces...)
		}
	}
	want := map[string][]string{
		"grpc":  {"envoy-gateway-system", "istio-system"},
		"admin": {"monitoring"},
	}
	for port, ns := range want {
		got := allowed[port]
		slices.Sort(got)
		slices.Sort(ns)
		if !slices.Equal(got, ns) {
			t.Errorf("NetworkPolicy lets %v reach port %s, want %v", got, port, ns)
		}
	}
}

// serviceMonitor holds the fields of the Prometheus Operator's monitoring.coreos.com/v1
// ServiceMonitor these files use. (Its Go types would bring the operator's module and its
// dependencies for one small object.)
type serviceMonitor struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// prometheusRule holds the fields of the Prometheus Operator's PrometheusRule the monitoring
// overlay uses; cmd/cors-extproc's TestMonitoringAlertingRules parses its rules with
// Prometheus's own parser.
type prometheusRule struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for,omitempty"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

func TestK8sServiceMonitorOverlay(t *testing.T) {
	b := loadK8s(t)
	var sm serviceMonitor
	decodeStrict(t, "servicemonitor.yaml", readFile(t, "k8s/overlays/monitoring/servicemonitor.yaml"), &sm)
	if sm.APIVersion != "monitoring.coreos.com/v1" || sm.Kind != "ServiceMonitor" {
		t.Fatalf("servicemonitor.yaml: %s %s", sm.APIVersion, sm.Kind)
	}
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	var matched []*corev1.Service
	for _, svc := range b.services {
		if sel.Matches(labels.Set(svc.Labels)) && slices.Contains(sm.Spec.NamespaceSelector.MatchNames, svc.Namespace) {
			matched = append(matched, svc)
		}
	}
	if len(matched) != 1 || matched[0].Spec.ClusterIP == corev1.ClusterIPNone {
		t.Fatalf("ServiceMonitor selects %d Services, want the metrics Service only", len(matched))
	}
	c := b.container(t)
	for _, ep := range sm.Spec.Endpoints {
		var found bool
		for _, p := range matched[0].Spec.Ports {
			if cp, ok := containerPort(c, p.TargetPort); ok && p.Name == ep.Port && cp.Name == "admin" {
				found = true
			}
		}
		if !found || ep.Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoint %+v: want /metrics on the Service port leading to the admin port", ep)
		}
		for _, d := range []string{ep.Interval, ep.ScrapeTimeout} {
			if _, err := time.ParseDuration(d); err != nil {
				t.Errorf("ServiceMonitor endpoint: %v", err)
			}
		}
	}
}

// Kustomize itself builds the base and every overlay (it refuses, for one, an overlay inside
// its own base), and every object it outputs decodes into its type.
func TestK8sKustomizeBuilds(t *testing.T) {
	for _, dir := range []string{k8sBaseDir, "k8s/overlays/monitoring", tlsOverlay} {
		objects := kustomizeBuild(t, filesys.MakeFsOnDisk(), filepath.FromSlash(dir))
		only[appsv1.Deployment](t, objects)
	}
}
