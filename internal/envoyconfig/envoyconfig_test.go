package envoyconfig

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// summary is what a test compares of a site.
type summary struct {
	Kind, Name      string
	HasMetadata     bool
	Namespaces      []string
	GRPCPolicy      string
	ExtProcDisabled bool
	Annotation      string
	VirtualHost     string
}

func summarize(sites []*Site) []summary {
	out := make([]summary, len(sites))
	for i, s := range sites {
		out[i] = summary{Kind: s.Kind, Name: s.Name, HasMetadata: s.Metadata != nil, GRPCPolicy: s.GRPCPolicy,
			ExtProcDisabled: s.ExtProcDisabled, Annotation: s.Annotation}
		for ns := range s.Metadata.GetFilterMetadata() {
			out[i].Namespaces = append(out[i].Namespaces, ns)
		}
		if s.VirtualHost != nil {
			out[i].VirtualHost = s.VirtualHost.Name
		}
	}
	return out
}

func read(t *testing.T, name string) []*Site {
	t.Helper()
	data, err := os.ReadFile(name)
	require.NoError(t, err)
	sites, err := Read(name, data, Options{})
	require.NoError(t, err)
	return sites
}

// The deploy's bootstrap: every virtual host and route, with its channels.
func TestReadBootstrap(t *testing.T) {
	sites := read(t, "../../deploy/envoy.yaml")
	var names []string
	for _, s := range sites {
		names = append(names, s.Kind+" "+s.Name)
	}
	assert.Equal(t, []string{
		"virtual host api", "route api/public-api", "route api/spa-api", "route api/tenants",
		"route api/partners", "route api/legacy-preflight", "route api/legacy", "route api/reports", "route api/internal",
		"virtual host www", "route www/www-fonts", "route www/www-default",
	}, names)
	for _, s := range sites {
		if s.Kind == KindRoute {
			assert.Equal(t, s.Name[:len(s.VirtualHost.Name)], s.VirtualHost.Name)
		}
		if s.Name == "api/internal" {
			assert.True(t, s.ExtProcDisabled)
		}
		if s.Name == "api/spa-api" {
			require.NotNil(t, s.Metadata)
			assert.Contains(t, s.Metadata.GetFilterMetadata(), "cors")
		}
	}
}

func TestReadKubernetesAndIstio(t *testing.T) {
	route := read(t, "../../deploy/envoy-gateway/httproute.yaml")
	require.NotEmpty(t, route)
	assert.Equal(t, KindHTTPRoute, route[0].Kind)
	assert.NotEmpty(t, route[0].Annotation)

	filter := read(t, "../../deploy/istio/envoyfilter.yaml")
	var withPolicy int
	for _, s := range filter {
		if s.HasGRPCPolicy {
			withPolicy++
			assert.Contains(t, s.GRPCPolicy, "{")
		}
	}
	assert.Positive(t, withPolicy, "the EnvoyFilter sets x-cors-policy on some route")
}

func TestReadShapes(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []summary
	}{
		{"route configuration", `
name: local
virtual_hosts:
- name: vh
  domains: ["*"]
  metadata: {filter_metadata: {cors: {origins: ["https://a.test"]}}}
  routes:
  - match: {prefix: /}
    route: {cluster: c}
    typed_per_filter_config:
      envoy.filters.http.ext_proc:
        "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute
        overrides:
          grpc_initial_metadata:
          - key: x-cors-policy
            value: '{"ref":"spa"}'
`, []summary{
			{Kind: KindVirtualHost, Name: "vh", HasMetadata: true, Namespaces: []string{"cors"}},
			{Kind: KindRoute, Name: "vh/routes[0]", GRPCPolicy: `{"ref":"spa"}`, VirtualHost: "vh"},
		}},
		{"ConfigMap holding a bootstrap, in a List, JSON", `{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "envoy", "namespace": "edge"},
   "data": {"notes.txt": "virtual_hosts: [", "envoy.json": "{\"virtual_hosts\": [{\"name\": \"v\", \"routes\": [{\"name\": \"r\", \"metadata\": {\"filterMetadata\": {\"cors\": {\"ref\": \"x\"}}}}]}]}"}},
  {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "gw", "namespace": "edge",
   "annotations": {"gateway.envoyproxy.io/cors-policy": "public"}}}]}`, []summary{
			{Kind: KindVirtualHost, Name: "v"},
			{Kind: KindRoute, Name: "v/r", HasMetadata: true, Namespaces: []string{"cors"}, VirtualHost: "v"},
			{Kind: KindGateway, Name: "edge/gw", Annotation: "public"},
		}},
		{"raw_value is base64 in configuration", `
virtual_hosts:
- name: v
  routes:
  - name: r
    typed_per_filter_config:
      envoy.filters.http.ext_proc:
        overrides: {grpc_initial_metadata: [{key: X-Cors-Policy, raw_value: "e30="}]}
`, []summary{{Kind: KindVirtualHost, Name: "v"}, {Kind: KindRoute, Name: "v/r", GRPCPolicy: "{}", VirtualHost: "v"}}},
		{"two documents", "virtual_hosts: [{name: a}]\n---\nvirtual_hosts: [{name: b}]\n",
			[]summary{{Kind: KindVirtualHost, Name: "a"}, {Kind: KindVirtualHost, Name: "b"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sites, err := Read("test.yaml", []byte(tc.doc), Options{})
			require.NoError(t, err)
			assert.Equal(t, tc.want, summarize(sites))
		})
	}
}

func TestReadErrors(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"not YAML", "a: [", "test.yaml: document 1: yaml: line 1: did not find expected node content"},
		{"bad metadata", "virtual_hosts: [{name: v, metadata: {filter_metadata: {cors: 3}}}]",
			`test.yaml: virtual host "v": metadata: proto:`},
		{"virtual host not an object", "virtual_hosts: [3]", "test.yaml: a virtual_hosts entry is not an object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read("test.yaml", []byte(tc.doc), Options{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// The per-route configuration is read under the name the ext_proc filter has in the chain,
// which need not be the usual one; under another name it is another filter's.
func TestReadExtProcFilterName(t *testing.T) {
	doc := []byte(`
virtual_hosts:
- name: v
  routes:
  - name: r
    typed_per_filter_config:
      cors-ext:
        overrides: {grpc_initial_metadata: [{key: x-cors-policy, value: '{"ref":"spa"}'}]}
`)
	sites, err := Read("test.yaml", doc, Options{ExtProcFilter: "cors-ext"})
	require.NoError(t, err)
	assert.Equal(t, []summary{{Kind: KindVirtualHost, Name: "v"},
		{Kind: KindRoute, Name: "v/r", GRPCPolicy: `{"ref":"spa"}`, VirtualHost: "v"}}, summarize(sites))

	sites, err = Read("test.yaml", doc, Options{})
	require.NoError(t, err)
	assert.Equal(t, []summary{{Kind: KindVirtualHost, Name: "v"}, {Kind: KindRoute, Name: "v/r", VirtualHost: "v"}},
		summarize(sites))
}

// The named-policy file of rendered manifests is the ConfigMap key that a cors-extproc
// container's --policies path lies in, through its volume mount.
func TestPolicyFiles(t *testing.T) {
	manifests := `
apiVersion: v1
kind: ConfigMap
metadata: {name: pol-abc, namespace: cors}
data:
  policies.yaml: "spa: {}"
  other.yaml: "x: 1"
---
apiVersion: v1
kind: ConfigMap
metadata: {name: envoy, namespace: cors}
data: {envoy.yaml: "static_resources: {}"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cors-extproc, namespace: cors}
spec:
  template:
    spec:
      containers:
      - name: server
        args: [--dynamic-metadata, --policies, /etc/cors-extproc/policies.yaml]
        volumeMounts:
        - {name: policies, mountPath: /etc/cors-extproc}
        - {name: envoy, mountPath: /etc/envoy}
      volumes:
      - {name: policies, configMap: {name: pol-abc}}
      - {name: envoy, configMap: {name: envoy}}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: p}
  spec:
    containers:
    - name: c
      env: [{name: CORS_EXTPROC_POLICIES, value: /p/named.yaml}]
      volumeMounts: [{name: v, mountPath: /p/named.yaml, subPath: named.yaml}]
    volumes: [{name: v, configMap: {name: top, items: [{key: data.yaml, path: named.yaml}]}}]
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: top}
  data: {named.yaml: "wrong: {}", data.yaml: "right: {}"}
`
	files, err := PolicyFiles("-", []byte(manifests))
	require.NoError(t, err)
	assert.Equal(t, []PolicyFile{
		{Where: "-: ConfigMap cors/pol-abc: policies.yaml", Data: []byte("spa: {}")},
		{Where: "-: ConfigMap top: data.yaml", Data: []byte("right: {}")},
	}, files)
}
