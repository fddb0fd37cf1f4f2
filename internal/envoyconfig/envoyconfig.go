// Package envoyconfig finds, in Envoy configuration as operators keep it, every place where a
// route's CORS policy can be set, so that `cors-extproc validate` and `cors-extproc explain`
// can check and play them before the configuration is applied.
//
// It reads YAML or JSON, one document or several: an Envoy bootstrap, a RouteConfiguration, an
// xDS config dump, or Kubernetes resources holding them (a ConfigMap whose values are such
// files, a List), plus the Kubernetes resources that carry policies themselves: an HTTPRoute
// or Gateway with the Envoy Gateway annotation, and an Istio EnvoyFilter patching routes. The
// walk is structural (any object with `virtual_hosts` is a route table), so it needs none of
// Envoy's extension types and reads configuration of any Envoy release.
package envoyconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Kinds of Site.
const (
	KindVirtualHost = "virtual host"
	KindRoute       = "route"
	KindHTTPRoute   = "HTTPRoute"
	KindGateway     = "Gateway"
)

// GatewayAnnotation is the Kubernetes annotation Envoy Gateway copies into route and virtual
// host metadata as `cors-policy` (contract section 3, item 3).
const GatewayAnnotation = "gateway.envoyproxy.io/cors-policy"

// DefaultExtProcFilter is the usual name of the ext_proc filter, the key of its per-route
// configuration (ExtProcPerRoute) under typed_per_filter_config.
const DefaultExtProcFilter = "envoy.filters.http.ext_proc"

// Options say how to read configuration.
type Options struct {
	// ExtProcFilter is the name the ext_proc filter has in the HTTP filter chain, under which
	// routes set its per-route configuration; empty means DefaultExtProcFilter. Envoy Gateway,
	// for one, names it after its EnvoyExtensionPolicy.
	ExtProcFilter string
}

// Site is one route, virtual host or Kubernetes resource that can carry a CORS policy.
type Site struct {
	File string // where it was read
	Kind string // KindVirtualHost, KindRoute, KindHTTPRoute or KindGateway
	// Name identifies it: "vhost" or "vhost/route" for Envoy, "namespace/name" for Kubernetes.
	Name string
	// Metadata is the route's or virtual host's metadata as Envoy would send it (contract
	// section 3); nil when there is none.
	Metadata *corev3.Metadata
	// GRPCPolicy is the x-cors-policy value of the route's ExtProcPerRoute
	// grpc_initial_metadata, when HasGRPCPolicy.
	GRPCPolicy    string
	HasGRPCPolicy bool
	// ExtProcDisabled: ExtProcPerRoute disables ext_proc here, so no policy applies.
	ExtProcDisabled bool
	// Annotation is the Envoy Gateway annotation's value on an HTTPRoute or Gateway.
	Annotation string
	// VirtualHost is the Site of a route's virtual host (nil for others), whose metadata is
	// the fallback channel for the route.
	VirtualHost *Site
}

// Read returns the sites of every document in data, in document order. name labels the sites
// and errors.
func Read(name string, data []byte, o Options) ([]*Site, error) {
	if o.ExtProcFilter == "" {
		o.ExtProcFilter = DefaultExtProcFilter
	}
	docs, err := documents(name, data)
	var sites []*Site
	for _, doc := range docs {
		found, err := o.walk(name, doc)
		sites = append(sites, found...)
		if err != nil {
			return sites, err
		}
	}
	return sites, err
}

// documents decodes every YAML (or JSON) document of data; on an error, those before it.
func documents(name string, data []byte) ([]any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []any
	for i := 0; ; i++ {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, fmt.Errorf("%s: document %d: %w", name, i+1, err)
		}
		docs = append(docs, doc)
	}
}

// walk finds the sites in one decoded document.
func (o Options) walk(file string, doc any) ([]*Site, error) {
	var (
		sites []*Site
		errs  []error
	)
	eachObject(doc, func(v map[string]any) bool {
		if found, ok, err := o.kubernetesSites(file, v); ok {
			sites = append(sites, found...)
			if err != nil {
				errs = append(errs, err)
			}
			return true
		}
		vhosts, ok := v["virtual_hosts"].([]any)
		if !ok {
			return false
		}
		for _, vh := range vhosts {
			found, err := o.virtualHostSites(file, vh)
			sites = append(sites, found...)
			if err != nil {
				errs = append(errs, err)
			}
		}
		return true
	})
	return sites, errors.Join(errs...)
}

// eachObject calls take on every JSON object in v, outermost first; where take reports that it
// handled an object, the walk does not go into it. Read and ReadChains walk configuration this
// way, whatever shape holds it (a bootstrap, an xDS dump, a Kubernetes resource).
func eachObject(v any, take func(map[string]any) bool) {
	switch v := v.(type) {
	case map[string]any:
		if take(v) {
			return
		}
		for _, e := range v {
			eachObject(e, take)
		}
	case []any:
		for _, e := range v {
			eachObject(e, take)
		}
	}
}

// virtualHostSites returns a virtual host's site and those of its routes.
func (o Options) virtualHostSites(file string, v any) ([]*Site, error) {
	vh, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: a virtual_hosts entry is not an object", file)
	}
	vname, _ := vh["name"].(string)
	host, err := o.site(file, KindVirtualHost, vname, vh)
	if err != nil {
		return nil, err
	}
	sites := []*Site{host}
	var errs []error
	routes, _ := vh["routes"].([]any)
	for i, r := range routes {
		route, ok := r.(map[string]any)
		if !ok {
			errs = append(errs, fmt.Errorf("%s: virtual host %q: routes[%d] is not an object", file, vname, i))
			continue
		}
		rname, _ := route["name"].(string)
		if rname == "" {
			rname = fmt.Sprintf("routes[%d]", i)
		}
		s, err := o.site(file, KindRoute, vname+"/"+rname, route)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.VirtualHost = host
		sites = append(sites, s)
	}
	return sites, errors.Join(errs...)
}

// site reads the policy channels of a route or virtual host object.
func (o Options) site(file, kind, name string, obj map[string]any) (*Site, error) {
	s := &Site{File: file, Kind: kind, Name: name}
	if md, ok := obj["metadata"]; ok {
		var m corev3.Metadata
		if err := decodeProto(md, &m); err != nil {
			return s, fmt.Errorf("%s: %s %q: metadata: %w", file, kind, name, err)
		}
		s.Metadata = &m
	}
	perFilter, _ := obj["typed_per_filter_config"].(map[string]any)
	if cfg, ok := perFilter[o.ExtProcFilter].(map[string]any); ok {
		if d, _ := cfg["disabled"].(bool); d {
			s.ExtProcDisabled = true
		}
		overrides, _ := cfg["overrides"].(map[string]any)
		entries, _ := overrides["grpc_initial_metadata"].([]any)
		for i, e := range entries {
			var hv corev3.HeaderValue
			if err := decodeProto(e, &hv); err != nil {
				return s, fmt.Errorf("%s: %s %q: grpc_initial_metadata[%d]: %w", file, kind, name, i, err)
			}
			if strings.EqualFold(hv.GetKey(), "x-cors-policy") {
				s.GRPCPolicy, s.HasGRPCPolicy = hv.GetValue(), true
				if raw := hv.GetRawValue(); len(raw) > 0 {
					s.GRPCPolicy = string(raw)
				}
			}
		}
	}
	return s, nil
}

// decodeProto converts a decoded YAML value into a protobuf message the way Envoy reads its
// configuration (proto3 JSON mapping, unknown fields are errors).
func decodeProto(v any, m proto.Message) error {
	js, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return protojson.Unmarshal(js, m)
}
