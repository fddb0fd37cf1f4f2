package envoyconfig

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
)

// kubernetesSites reads a Kubernetes resource. ok is false for anything that is not one of the
// kinds below, which the caller then walks as plain configuration.
func kubernetesSites(file string, obj map[string]any) (sites []*Site, ok bool, err error) {
	kind, _ := obj["kind"].(string)
	apiVersion, _ := obj["apiVersion"].(string)
	if kind == "" || apiVersion == "" {
		return nil, false, nil
	}
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	if ns, _ := meta["namespace"].(string); ns != "" {
		name = ns + "/" + name
	}
	group := apiVersion
	if i := strings.IndexByte(apiVersion, '/'); i >= 0 {
		group = apiVersion[:i]
	}
	switch {
	case kind == "List":
		items, _ := obj["items"].([]any)
		var errs []error
		for _, item := range items {
			found, err := walk(file, item)
			sites = append(sites, found...)
			errs = append(errs, err)
		}
		return sites, true, errors.Join(errs...)
	case kind == "ConfigMap" && apiVersion == "v1":
		return configMapSites(file, name, obj)
	case (kind == KindHTTPRoute || kind == KindGateway) && group == "gateway.networking.k8s.io":
		annotations, _ := meta["annotations"].(map[string]any)
		if v, ok := annotations[GatewayAnnotation].(string); ok {
			sites = append(sites, &Site{File: file, Kind: kind, Name: name, Annotation: v})
		}
		return sites, true, nil
	case kind == "EnvoyFilter" && group == "networking.istio.io":
		return envoyFilterSites(file, name, obj)
	}
	return nil, false, nil
}

// configMapSites reads the YAML and JSON files a ConfigMap holds (an Envoy bootstrap mounted
// from a ConfigMap, say); other keys are not configuration and are passed over.
func configMapSites(file, name string, obj map[string]any) ([]*Site, bool, error) {
	data, _ := obj["data"].(map[string]any)
	var (
		sites []*Site
		errs  []error
	)
	keys := make([]string, 0, len(data))
	for key := range data {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	for _, key := range keys {
		text, _ := data[key].(string)
		switch path.Ext(key) {
		case ".yaml", ".yml", ".json":
		default:
			continue
		}
		found, err := Read(fmt.Sprintf("%s: ConfigMap %s: %s", file, name, key), []byte(text))
		sites = append(sites, found...)
		errs = append(errs, err)
	}
	return sites, true, errors.Join(errs...)
}

// envoyFilterSites reads an Istio EnvoyFilter's patches of routes and virtual hosts, where a
// per-route x-cors-policy or route metadata is set (deploy/istio).
func envoyFilterSites(file, name string, obj map[string]any) ([]*Site, bool, error) {
	spec, _ := obj["spec"].(map[string]any)
	patches, _ := spec["configPatches"].([]any)
	var (
		sites []*Site
		errs  []error
	)
	for i, p := range patches {
		patch, _ := p.(map[string]any)
		applyTo, _ := patch["applyTo"].(string)
		body, _ := patch["patch"].(map[string]any)
		value, ok := body["value"].(map[string]any)
		if !ok {
			continue
		}
		match, _ := patch["match"].(map[string]any)
		rc, _ := match["routeConfiguration"].(map[string]any)
		vhost, _ := rc["vhost"].(map[string]any)
		vname, _ := vhost["name"].(string)
		route, _ := vhost["route"].(map[string]any)
		rname, _ := route["name"].(string)
		label := fmt.Sprintf("EnvoyFilter %s configPatches[%d]", name, i)
		var (
			s   *Site
			err error
		)
		switch applyTo {
		case "HTTP_ROUTE":
			switch {
			case vname != "" && rname != "":
				label = vname + "/" + rname
			case rname != "":
				label = rname
			}
			s, err = site(file, KindRoute, label, value)
		case "VIRTUAL_HOST":
			if vname != "" {
				label = vname
			}
			s, err = site(file, KindVirtualHost, label, value)
		case "ROUTE_CONFIGURATION":
			found, err := walk(file, value)
			sites = append(sites, found...)
			errs = append(errs, err)
			continue
		default:
			continue
		}
		errs = append(errs, err)
		if s != nil && (s.Metadata != nil || s.HasGRPCPolicy || s.ExtProcDisabled) {
			sites = append(sites, s)
		}
	}
	return sites, true, errors.Join(errs...)
}
