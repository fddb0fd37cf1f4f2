package deploy_test

import (
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// The fixture testdata/envoygateway-xds.json is Envoy Gateway's own translation of
// deploy/envoy-gateway/ plus the Service of deploy/k8s: the listeners, routes and clusters its
// controller would push to the Gateway's Envoy. `make eg-translate` builds egctl at the pinned
// version and regenerates it by running this file's TestEnvoyGatewayTranslation with -egctl;
// without the flag (CI, `make test`) the test checks the fixture was made from the files as
// they are now.
//
// The translation differs from the files in what the fixture's "adjustments" list, each for a
// reason given where it is made: the input adds the quickstart's GatewayClass
// (egQuickstartGatewayClass) and a basic-auth probe (egAuthProbe), and gives the headless
// Service a loopback cluster IP (egLoopbackClusterIP); the output gets the annotations egctl
// drops, as the controller sets them (addControllerAnnotations).

var egctlBinary = flag.String("egctl", "", "regenerate "+egFixtureFile+" with this egctl binary (make eg-translate)")

const egFixtureFile = "testdata/envoygateway-xds.json"

// egTranslationInputs are the files the fixture is made from, relative to deploy/: every file
// of envoy-gateway/ and the Service of the Kubernetes base.
func egTranslationInputs(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("envoy-gateway/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("envoy-gateway/*.yaml: %v %v", files, err)
	}
	slices.Sort(files)
	return append(files, "k8s/base/service.yaml")
}

// egInputsHash is the SHA-256 of the input files' names and contents, in order.
func egInputsHash(t *testing.T, files []string) string {
	t.Helper()
	h := sha256.New()
	for _, f := range files {
		b := readFile(t, f)
		fmt.Fprintf(h, "%s\n%d\n", filepath.ToSlash(f), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// egFixture is the file `make eg-translate` writes.
type egFixture struct {
	GeneratedBy  string   `json:"generatedBy"`
	Egctl        string   `json:"egctl"`
	Inputs       []string `json:"inputs"`
	InputsSHA256 string   `json:"inputsSHA256"`
	// Adjustments says what the translation input and output differ from the files and from
	// egctl's own output by, and why.
	Adjustments []string `json:"adjustments"`
	// Xds is what egctl prints for the Gateway: an Envoy admin config dump in protojson.
	Xds map[string]any `json:"xds"`
}

// egPinnedVersion is EG_VERSION of the Makefile, the Envoy Gateway release the fixture comes from.
func egPinnedVersion(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^EG_VERSION\s*\?=\s*(\S+)$`).FindSubmatch(readFile(t, "../Makefile"))
	if m == nil {
		t.Fatal("Makefile: no EG_VERSION")
	}
	return string(m[1])
}

func loadEGFixture(t *testing.T) egFixture {
	t.Helper()
	var f egFixture
	if err := json.Unmarshal(readFile(t, egFixtureFile), &f); err != nil {
		t.Fatalf("%s: %v", egFixtureFile, err)
	}
	return f
}

// TestEnvoyGatewayTranslation regenerates the fixture when run with -egctl, and otherwise
// fails when the fixture was made from other files, or by another Envoy Gateway, than those
// of the repository now.
func TestEnvoyGatewayTranslation(t *testing.T) {
	inputs := egTranslationInputs(t)
	if *egctlBinary != "" {
		writeEGFixture(t, *egctlBinary, inputs)
	}
	f := loadEGFixture(t)
	if want := egPinnedVersion(t); f.Egctl != want {
		t.Errorf("%s was made by egctl %s, the Makefile pins %s: run make eg-translate", egFixtureFile, f.Egctl, want)
	}
	if !slices.Equal(f.Inputs, inputs) || f.InputsSHA256 != egInputsHash(t, inputs) {
		t.Errorf("%s is older than the files it came from (%s): run make eg-translate", egFixtureFile, strings.Join(inputs, ", "))
	}
}

// egLoopbackClusterIP replaces the headless Service's "None" in the translation input: egctl
// has no EndpointSlice input, so Envoy Gateway routes to the Service's cluster IP, and with
// none it refuses the EnvoyExtensionPolicy ("no ready endpoints"). The real-Envoy test replaces
// the endpoint anyway.
const egLoopbackClusterIP = "127.0.0.1"

// egQuickstartGatewayClass is the GatewayClass the Gateway names, as Envoy Gateway's
// quickstart installs it (deploy/README.md expects it); egctl needs one in its input.
const egQuickstartGatewayClass = `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: eg
spec:
  controllerName: gateway.envoyproxy.io/gatewayclass-controller
`

// egAuthProbe is added to the translation input so the fixture has an authentication filter
// for the EnvoyProxy's filterOrder to act on: basic authentication on the storefront
// HTTPRoute, user "probe" with password "probe". Envoy Gateway orders authentication filters
// before ext_proc by default, where they would reject preflights (which carry no credentials).
const egAuthProbe = `apiVersion: v1
kind: Secret
metadata:
  name: auth-probe
  namespace: demo
type: Opaque
data:
  .htpasswd: cHJvYmU6e1NIQX1xVW5GTUhFUG44cDJ0RmQySm54b2xuK29rZWM9 # probe:{SHA}qUnFMHEPn8p2tFd2Jnxoln+okec=
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata:
  name: auth-probe
  namespace: demo
spec:
  targetRefs:
  - group: gateway.networking.k8s.io
    kind: HTTPRoute
    name: storefront
  basicAuth:
    users:
      name: auth-probe
`

func writeEGFixture(t *testing.T, egctl string, inputs []string) {
	t.Helper()
	info, err := buildinfo.ReadFile(egctl)
	if err != nil {
		t.Fatalf("%s: %v", egctl, err)
	}
	if want := egPinnedVersion(t); info.Main.Version != want {
		t.Fatalf("%s is egctl %s, the Makefile pins %s", egctl, info.Main.Version, want)
	}

	docs := [][]byte{[]byte(egQuickstartGatewayClass), []byte(egAuthProbe)}
	annotations := map[egObjectKey]map[string]string{}
	for _, file := range inputs {
		for _, doc := range yamlDocuments(t, file) {
			var obj metav1.PartialObjectMetadata
			if err := yaml.Unmarshal(doc, &obj); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if obj.Kind == "Service" {
				if obj.Name != headlessService(t).Name {
					continue // only the ext_proc Service is an Envoy Gateway backend
				}
				doc = withLoopbackClusterIP(t, file, doc)
			}
			docs = append(docs, doc)
			annotations[egObjectKey{obj.Kind, obj.Namespace, obj.Name}] = obj.Annotations
		}
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "input.yaml")
	if err := os.WriteFile(in, bytes.Join(docs, []byte("\n---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(egctl, "x", "translate", "--from", "gateway-api", "--to", "gateway-api,xds",
		"-t", "all", "--add-missing-resources", "-o", "json", "-f", in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("egctl: %v\n%s", err, stderr.Bytes())
	}
	// The Gateway API resources with their status, beside "xds": one config dump per Gateway.
	var result map[string]json.RawMessage
	if err := json.Unmarshal(out, &result); err != nil {
		t.Fatalf("egctl output: %v", err)
	}
	var perGateway map[string]map[string]any
	if err := json.Unmarshal(result["xds"], &perGateway); err != nil || len(perGateway) != 1 {
		t.Fatalf("egctl: want the xDS of one Gateway, got %d (%v)", len(perGateway), err)
	}
	delete(result, "xds")
	checkEGStatuses(t, result)
	var xds map[string]any
	for _, x := range perGateway {
		xds = x
	}
	n := addControllerAnnotations(xds, annotations)
	if n == 0 {
		t.Fatal("no translated resource carries the annotations of its input object")
	}

	f := egFixture{
		GeneratedBy:  "make eg-translate",
		Egctl:        info.Main.Version,
		Inputs:       inputs,
		InputsSHA256: egInputsHash(t, inputs),
		Adjustments: []string{
			"input: the quickstart's GatewayClass eg (controller gateway.envoyproxy.io/gatewayclass-controller), which the Gateway names",
			"input: an authentication probe, basic auth (user probe, password probe) on the storefront HTTPRoute, so the EnvoyProxy's filterOrder has a filter to act on",
			"input: the headless Service " + headlessService(t).Namespace + "/" + headlessService(t).Name +
				" gets clusterIP " + egLoopbackClusterIP + " (egctl has no EndpointSlice input and routes to the cluster IP)",
			fmt.Sprintf("output: controller annotations: egctl's file loader drops annotations; the gateway.envoyproxy.io/* annotations of each input object, prefix removed, are set on the %d filter_metadata[\"envoy-gateway\"].resources[] entries naming it, as Envoy Gateway's controller sets them", n),
		},
		Xds: xds,
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(egFixtureFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(egFixtureFile, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", egFixtureFile)
}

func withLoopbackClusterIP(t *testing.T, file string, doc []byte) []byte {
	t.Helper()
	var svc corev1.Service
	if err := yaml.UnmarshalStrict(doc, &svc); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	svc.Spec.ClusterIP = egLoopbackClusterIP
	b, err := yaml.Marshal(&svc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkEGStatuses fails unless Envoy Gateway accepted every object it reports a status for: a
// fixture made from refused manifests would test nothing they do.
func checkEGStatuses(t *testing.T, resources map[string]json.RawMessage) {
	t.Helper()
	type object struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Status   json.RawMessage   `json:"status"`
	}
	for kind, raw := range resources {
		var objs []object
		if json.Unmarshal(raw, &objs) != nil {
			var o object
			if json.Unmarshal(raw, &o) != nil {
				continue
			}
			objs = []object{o}
		}
		for _, o := range objs {
			var conds []metav1.Condition
			collectConditions(o.Status, &conds)
			for _, c := range conds {
				if (c.Type == "Accepted" || c.Type == "ResolvedRefs" || c.Type == "Programmed") && c.Status != metav1.ConditionTrue {
					t.Errorf("Envoy Gateway: %s %s/%s: %s %s: %s", kind, o.Metadata.Namespace, o.Metadata.Name, c.Type, c.Reason, c.Message)
				}
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// collectConditions gathers every "conditions" list anywhere in a status.
func collectConditions(raw json.RawMessage, out *[]metav1.Condition) {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return
	}
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				if k == "conditions" {
					b, _ := json.Marshal(e)
					var cs []metav1.Condition
					if json.Unmarshal(b, &cs) == nil {
						*out = append(*out, cs...)
						continue
					}
				}
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(v)
}

type egObjectKey struct{ kind, namespace, name string }

// addControllerAnnotations is the one step that makes egctl's output what Envoy Gateway's
// controller pushes: egctl's file loader keeps no object's annotations, while the controller
// copies each object's gateway.envoyproxy.io/* annotations, prefix removed, into the metadata
// entry naming that object (filter_metadata["envoy-gateway"].resources[] on routes, virtual
// hosts, listeners and clusters, as "annotations", set only when there is one). It returns how
// many entries it annotated.
func addControllerAnnotations(v any, annotations map[egObjectKey]map[string]string) int {
	n := 0
	switch v := v.(type) {
	case map[string]any:
		if fm, ok := v["filterMetadata"].(map[string]any); ok {
			if eg, ok := fm["envoy-gateway"].(map[string]any); ok {
				resources, _ := eg["resources"].([]any)
				for _, r := range resources {
					res, ok := r.(map[string]any)
					if !ok {
						continue
					}
					kind, _ := res["kind"].(string)
					ns, _ := res["namespace"].(string)
					name, _ := res["name"].(string)
					if a := egAnnotations(annotations[egObjectKey{kind, ns, name}]); len(a) > 0 {
						res["annotations"] = a
						n++
					}
				}
			}
		}
		for _, e := range v {
			n += addControllerAnnotations(e, annotations)
		}
	case []any:
		for _, e := range v {
			n += addControllerAnnotations(e, annotations)
		}
	}
	return n
}

// egAnnotations returns the gateway.envoyproxy.io/ annotations with the prefix removed.
func egAnnotations(in map[string]string) map[string]any {
	out := map[string]any{}
	for k, v := range in {
		if name, ok := strings.CutPrefix(k, egAnnotationPrefix); ok {
			out[name] = v
		}
	}
	return out
}
