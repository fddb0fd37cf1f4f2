package kongimport

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Report is the outcome of importing a declarative file.
type Report struct {
	// Policies are the policies written, one per distinct plugin configuration, in document
	// order.
	Policies []*Policy `json:"policies" yaml:"policies"`
	// Routes are every route of the file, in document order, with the policy Kong would apply.
	Routes []Route `json:"routes" yaml:"routes"`
	// Skipped are the plugins left out on purpose: disabled ones.
	Skipped []string `json:"skipped,omitempty" yaml:"skipped,omitempty"`
	// Errors are the plugins that could not be migrated and the references that name nothing;
	// any error makes the command exit 1, after writing everything else.
	Errors []string `json:"errors,omitempty" yaml:"errors,omitempty"`
}

// Policy is one written policy and where it came from.
type Policy struct {
	Name   string `json:"name" yaml:"name"`
	Fields Fields `json:"policy" yaml:"policy"`
	// From describes every plugin with this configuration; the first one named the policy.
	From []string `json:"from" yaml:"from"`
	// Warnings say where this service behaves differently from Kong for this configuration.
	Warnings []string `json:"warnings,omitempty" yaml:"warnings,omitempty"`
}

// Route is one Kong route and the policy Kong's precedence gives it.
type Route struct {
	Route   string `json:"route" yaml:"route"`
	Service string `json:"service,omitempty" yaml:"service,omitempty"`
	// Policy is the policy's name; empty when no CORS plugin applies or the one that applies
	// could not be migrated (Error says so).
	Policy string `json:"policy,omitempty" yaml:"policy,omitempty"`
	// From describes the plugin that applies, as in Policy.From.
	From string `json:"from,omitempty" yaml:"from,omitempty"`
	// Metadata and Annotation attach the policy on Envoy: the route's metadata, or the Envoy
	// Gateway HTTPRoute annotation.
	Metadata   map[string]any    `json:"metadata,omitempty" yaml:"metadata,omitempty"`
	Annotation map[string]string `json:"annotation,omitempty" yaml:"annotation,omitempty"`
	Error      string            `json:"error,omitempty" yaml:"error,omitempty"`
}

// AnnotationKey is the Envoy Gateway HTTPRoute annotation naming a policy of the named-policy
// file.
const AnnotationKey = "gateway.envoyproxy.io/cors-policy"

// Warnings counts the warnings of every policy.
func (r *Report) Warnings() int {
	n := 0
	for _, p := range r.Policies {
		n += len(p.Warnings)
	}
	return n
}

// File imports a Kong declarative file. The error is for a file that cannot be read at all;
// problems with single plugins are in Report.Errors.
func File(data []byte, opts Options) (*Report, error) {
	d, err := parseDocument(data)
	if err != nil {
		return nil, err
	}
	r := &Report{Errors: d.errs}
	byConfig := map[string]*Policy{} // canonical JSON of the fields → policy
	byName := map[string]bool{}
	policyOf := make([]string, len(d.plugins)) // plugin index → policy name, "" if none
	failed := make([]bool, len(d.plugins))
	type scope struct{ route, service int }
	seen := map[scope]int{}
	for i := range d.plugins {
		p := &d.plugins[i]
		if p.Name != "cors" {
			continue
		}
		what := p.describe(d)
		switch {
		case p.Enabled != nil && !*p.Enabled:
			r.Skipped = append(r.Skipped, what+": disabled (enabled: false), so Kong does not run it")
			continue
		case p.consumer != "":
			r.Errors = append(r.Errors, what+": Kong's CORS plugin cannot be scoped to a consumer "+
				"(its schema has consumer = typedefs.no_consumer), so Kong rejects this file; skipped")
			continue
		case p.unresolved:
			continue
		}
		sc := scope{p.route, p.service}
		if j, dup := seen[sc]; dup {
			r.Errors = append(r.Errors, fmt.Sprintf("%s: a second enabled cors plugin for the same route "+
				"and service (Kong allows one per route, service and consumer); the one earlier in the "+
				"file (%s) is used", what, d.plugins[j].describe(d)))
			continue
		}
		seen[sc] = i
		conv := convert(p.Config, opts)
		if conv.errs != nil {
			failed[i] = true
			for _, e := range conv.errs {
				r.Errors = append(r.Errors, what+": "+e)
			}
			continue
		}
		key, err := json.Marshal(conv.fields)
		if err != nil {
			return nil, err
		}
		pol := byConfig[string(key)]
		if pol == nil {
			pol = &Policy{Name: uniqueName(byName, baseName(d, p)), Fields: conv.fields, Warnings: conv.warnings}
			byConfig[string(key)] = pol
			r.Policies = append(r.Policies, pol)
		}
		pol.From = append(pol.From, what)
		policyOf[i] = pol.Name
	}

	for ri, rt := range d.routes {
		out := Route{Route: rt.label}
		si := rt.service
		if si >= 0 {
			out.Service = d.serviceLabel(si)
		}
		// Kong's precedence for a plugin that cannot be scoped to a consumer: route and
		// service, then route, then service, then global (lookup_cfg in
		// kong/runloop/plugins_iterator.lua). A disabled plugin is not loaded into those
		// combinations at all, so it does not hide a less specific one.
		candidates := []scope{{ri, -1}, {-1, -1}}
		if si >= 0 {
			candidates = []scope{{ri, si}, {ri, -1}, {-1, si}, {-1, -1}}
		}
		winner := -1
		for _, c := range candidates {
			if j, ok := seen[c]; ok {
				winner = j
				break
			}
		}
		switch {
		case winner < 0:
		case failed[winner]:
			out.From = d.plugins[winner].describe(d)
			out.Error = "it could not be migrated (see the errors), so no policy is attached"
		default:
			name := policyOf[winner]
			out.Policy, out.From = name, d.plugins[winner].describe(d)
			out.Metadata = map[string]any{"filter_metadata": map[string]any{"cors": map[string]any{"ref": name}}}
			out.Annotation = map[string]string{AnnotationKey: name}
		}
		r.Routes = append(r.Routes, out)
	}
	return r, nil
}

// baseName names a policy after the plugin's scope: route-<route>, service-<service> or
// global.
func baseName(d *document, p *plugin) string {
	switch {
	case p.route >= 0:
		return "route-" + d.routes[p.route].label
	case p.service >= 0:
		return "service-" + d.serviceLabel(p.service)
	}
	return "global"
}

// uniqueName returns base, or base-2, base-3 … when a policy with another configuration took
// it (a route's own plugin next to its route-and-service plugin).
func uniqueName(taken map[string]bool, base string) string {
	name := base
	for n := 2; taken[name]; n++ {
		name = base + "-" + strconv.Itoa(n)
	}
	taken[name] = true
	return name
}
