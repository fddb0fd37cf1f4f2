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
func (o Options) kubernetesSites(file string, obj map[string]any) (sites []*Site, ok bool, err error) {
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
			found, err := o.walk(file, item)
			sites = append(sites, found...)
			errs = append(errs, err)
		}
		return sites, true, errors.Join(errs...)
	case kind == "ConfigMap" && apiVersion == "v1":
		return o.configMapSites(file, name, obj)
	case (kind == KindHTTPRoute || kind == KindGateway) && group == "gateway.networking.k8s.io":
		annotations, _ := meta["annotations"].(map[string]any)
		if v, ok := annotations[GatewayAnnotation].(string); ok {
			sites = append(sites, &Site{File: file, Kind: kind, Name: name, Annotation: v})
		}
		return sites, true, nil
	case kind == "EnvoyFilter" && group == "networking.istio.io":
		return o.envoyFilterSites(file, name, obj)
	}
	return nil, false, nil
}

// configMapSites reads the YAML and JSON files a ConfigMap holds (an Envoy bootstrap mounted
// from a ConfigMap, say); other keys are not configuration and are passed over.
func (o Options) configMapSites(file, name string, obj map[string]any) ([]*Site, bool, error) {
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
		found, err := Read(fmt.Sprintf("%s: ConfigMap %s: %s", file, name, key), []byte(text), o)
		sites = append(sites, found...)
		errs = append(errs, err)
	}
	return sites, true, errors.Join(errs...)
}

// envoyFilterSites reads an Istio EnvoyFilter's patches of routes and virtual hosts, where a
// per-route x-cors-policy or route metadata is set (deploy/istio).
func (o Options) envoyFilterSites(file, name string, obj map[string]any) ([]*Site, bool, error) {
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
			s, err = o.site(file, KindRoute, label, value)
		case "VIRTUAL_HOST":
			if vname != "" {
				label = vname
			}
			s, err = o.site(file, KindVirtualHost, label, value)
		case "ROUTE_CONFIGURATION":
			found, err := o.walk(file, value)
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

// PolicyFile is a named-policy file found in Kubernetes manifests.
type PolicyFile struct {
	Where string // "FILE: ConfigMap NAMESPACE/NAME: KEY"
	Data  []byte
}

// PolicyFiles finds, in rendered manifests (`kubectl kustomize`, `helm template`), the
// named-policy files that cors-extproc workloads read: a container's --policies path (the flag
// or CORS_EXTPROC_POLICIES) that lies under the mount of a ConfigMap volume names a key of that
// ConfigMap, which must be in the same input. Resources that are not in data are passed over.
func PolicyFiles(name string, data []byte) ([]PolicyFile, error) {
	var objs []map[string]any
	var collect func(v any)
	collect = func(v any) {
		obj, ok := v.(map[string]any)
		if !ok {
			return
		}
		if obj["kind"] == "List" {
			items, _ := obj["items"].([]any)
			for _, item := range items {
				collect(item)
			}
			return
		}
		objs = append(objs, obj)
	}
	docs, err := documents(name, data)
	if err != nil {
		return nil, err
	}
	for _, doc := range docs {
		collect(doc)
	}
	configMaps := map[string]map[string]any{}
	for _, obj := range objs {
		if obj["kind"] == "ConfigMap" && obj["apiVersion"] == "v1" {
			configMaps[qualifiedName(obj)] = obj
		}
	}
	var files []PolicyFile
	seen := map[string]bool{}
	for _, obj := range objs {
		ns, _ := field(obj, "metadata", "namespace").(string)
		for _, ref := range policyMounts(podSpec(obj)) {
			cm, ok := configMaps[qualified(ns, ref.configMap)]
			text, isText := field(cm, "data", ref.key).(string)
			where := fmt.Sprintf("%s: ConfigMap %s: %s", name, qualified(ns, ref.configMap), ref.key)
			if !ok || !isText || seen[where] {
				continue
			}
			seen[where] = true
			files = append(files, PolicyFile{Where: where, Data: []byte(text)})
		}
	}
	return files, nil
}

// configMapKey is a key of a ConfigMap.
type configMapKey struct{ configMap, key string }

// podSpec returns the pod spec of a workload (Deployment, StatefulSet, DaemonSet, Job: under
// spec.template) or a Pod; nil for anything else.
func podSpec(obj map[string]any) map[string]any {
	if obj["kind"] == "Pod" {
		spec, _ := obj["spec"].(map[string]any)
		return spec
	}
	spec, _ := field(obj, "spec", "template", "spec").(map[string]any)
	return spec
}

// policyMounts returns the ConfigMap keys that the pod's containers name with --policies.
func policyMounts(spec map[string]any) []configMapKey {
	volumes := map[string]map[string]any{}
	list, _ := spec["volumes"].([]any)
	for _, v := range list {
		if vol, ok := v.(map[string]any); ok {
			if cm, ok := vol["configMap"].(map[string]any); ok {
				n, _ := vol["name"].(string)
				volumes[n] = cm
			}
		}
	}
	var out []configMapKey
	containers, _ := spec["containers"].([]any)
	for _, c := range containers {
		container, _ := c.(map[string]any)
		file := policiesFlag(container)
		if file == "" {
			continue
		}
		mounts, _ := container["volumeMounts"].([]any)
		for _, m := range mounts {
			mount, _ := m.(map[string]any)
			volName, _ := mount["name"].(string)
			mountPath, _ := mount["mountPath"].(string)
			subPath, _ := mount["subPath"].(string)
			cm, ok := volumes[volName]
			if !ok {
				continue
			}
			var rel string
			switch {
			case subPath != "" && mountPath == file:
				rel = subPath
			case subPath == "" && strings.HasPrefix(file, strings.TrimSuffix(mountPath, "/")+"/"):
				rel = strings.TrimPrefix(file, strings.TrimSuffix(mountPath, "/")+"/")
			default:
				continue
			}
			key := rel
			items, _ := cm["items"].([]any)
			for _, it := range items {
				item, _ := it.(map[string]any)
				if item["path"] == rel {
					key, _ = item["key"].(string)
				}
			}
			name, _ := cm["name"].(string)
			out = append(out, configMapKey{configMap: name, key: key})
		}
	}
	return out
}

// policiesFlag returns the --policies path a container gives cors-extproc, in its command, its
// args or its environment; "" when it gives none.
func policiesFlag(container map[string]any) string {
	var words []string
	for _, k := range []string{"command", "args"} {
		list, _ := container[k].([]any)
		for _, w := range list {
			s, _ := w.(string)
			words = append(words, s)
		}
	}
	for i, w := range words {
		w = strings.TrimLeft(w, "-")
		if v, ok := strings.CutPrefix(w, "policies="); ok && strings.HasPrefix(words[i], "-") {
			return v
		}
		if w == "policies" && strings.HasPrefix(words[i], "-") && i+1 < len(words) {
			return words[i+1]
		}
	}
	env, _ := container["env"].([]any)
	for _, e := range env {
		ev, _ := e.(map[string]any)
		if ev["name"] == "CORS_EXTPROC_POLICIES" {
			v, _ := ev["value"].(string)
			return v
		}
	}
	return ""
}

func field(obj map[string]any, path ...string) any {
	var v any = obj
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func qualifiedName(obj map[string]any) string {
	ns, _ := field(obj, "metadata", "namespace").(string)
	name, _ := field(obj, "metadata", "name").(string)
	return qualified(ns, name)
}

func qualified(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}
