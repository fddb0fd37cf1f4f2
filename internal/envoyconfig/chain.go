package envoyconfig

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Type URLs of the HTTP filters a chain check reads.
const (
	typeExtProc        = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
	typeHeaderMutation = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
	typeWithMatcher    = "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher"
	typeRouter         = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
)

// ResponseHeaders are the headers the server returns as dynamic metadata for Envoy's header
// filter (docs/envoy-extproc.md section 7), each with the append_action that filter must use:
// the three access-control-* headers replace the upstream's, vary is added beside it.
var ResponseHeaders = map[string]string{
	"access-control-allow-origin":      "OVERWRITE_IF_EXISTS_OR_ADD",
	"access-control-allow-credentials": "OVERWRITE_IF_EXISTS_OR_ADD",
	"access-control-expose-headers":    "OVERWRITE_IF_EXISTS_OR_ADD",
	"vary":                             "APPEND_IF_EXISTS_OR_ADD",
}

var dynamicMetadataRE = regexp.MustCompile(`^%DYNAMIC_METADATA\(([^:()]+):([^:()]+)\)%$`)

// Chain is one HTTP connection manager's filter chain as far as cors-extproc is concerned.
type Chain struct {
	File string
	// Name is the connection manager's stat_prefix.
	Name string
	// Filters are the HTTP filter names, in order.
	Filters []string
	// ExtProc is the index of the ext_proc filter, -1 without one; Router the router's.
	ExtProc, Router int
	// AllowModeOverride and Receiving are the ext_proc filter's allow_mode_override and
	// metadata_options.receiving_namespaces.untyped.
	AllowModeOverride bool
	Receiving         []string
	// Writes are the response header writes from dynamic metadata that header_mutation filters
	// make, by header name.
	Writes map[string][]HeaderWrite
}

// HeaderWrite is one response_mutations append of a header_mutation filter whose value is
// %DYNAMIC_METADATA(Namespace:Key)%.
type HeaderWrite struct {
	Filter    int // index in Chain.Filters
	Namespace string
	Key       string
	Action    string // append_action; "" is Envoy's default, APPEND_IF_EXISTS_OR_ADD
	// Matched: the header_mutation is wrapped in an ExtensionWithMatcher.
	Matched bool
}

// ReadChains returns every HTTP connection manager filter chain in data that has an ext_proc
// filter or a header_mutation filter writing from dynamic metadata. The walk is structural, as
// Read's; filter chains inside a ConfigMap's values or patched in by an Istio EnvoyFilter are
// not assembled.
func ReadChains(name string, data []byte) ([]*Chain, error) {
	docs, err := documents(name, data)
	return chains(name, docs), err
}

func chains(name string, docs []any) []*Chain {
	var chains []*Chain
	for _, d := range docs {
		eachObject(d, func(v map[string]any) bool {
			filters, ok := v["http_filters"].([]any)
			if !ok {
				return false
			}
			if c := chain(name, v, filters); c != nil {
				chains = append(chains, c)
			}
			return true
		})
	}
	return chains
}

func chain(file string, hcm map[string]any, filters []any) *Chain {
	c := &Chain{File: file, ExtProc: -1, Router: -1, Writes: map[string][]HeaderWrite{}}
	c.Name, _ = hcm["stat_prefix"].(string)
	relevant := false
	for i, f := range filters {
		fm, _ := f.(map[string]any)
		name, _ := fm["name"].(string)
		c.Filters = append(c.Filters, name)
		tc, _ := fm["typed_config"].(map[string]any)
		matched := false
		if at(tc, "@type") == typeWithMatcher {
			tc, _ = at(tc, "extension_config", "typed_config").(map[string]any)
			matched = true
		}
		switch at(tc, "@type") {
		case typeExtProc:
			relevant = true
			c.ExtProc = i
			c.AllowModeOverride, _ = tc["allow_mode_override"].(bool)
			for _, ns := range list(at(tc, "metadata_options", "receiving_namespaces", "untyped")) {
				if s, ok := ns.(string); ok {
					c.Receiving = append(c.Receiving, s)
				}
			}
		case typeRouter:
			c.Router = i
		case typeHeaderMutation:
			for _, m := range list(at(tc, "mutations", "response_mutations")) {
				key, _ := at(m, "append", "header", "key").(string)
				value, _ := at(m, "append", "header", "value").(string)
				action, _ := at(m, "append", "append_action").(string)
				sub := dynamicMetadataRE.FindStringSubmatch(value)
				if sub == nil {
					continue
				}
				relevant = true
				key = strings.ToLower(key)
				c.Writes[key] = append(c.Writes[key], HeaderWrite{Filter: i, Namespace: sub[1], Key: sub[2], Action: action, Matched: matched})
			}
		}
	}
	if !relevant {
		return nil
	}
	return c
}

// Check reports what is wrong with the chain for a server in one-trip mode (oneTrip) or
// two-phase mode whose response headers' metadata is in namespace ns (docs/envoy-extproc.md
// section 7). Errors make responses lose the CORS headers the policy grants; warnings cost
// round trips or leave Envoy's own replies undecorated on some releases.
func (c *Chain) Check(oneTrip bool, ns string) (errs, warnings []string) {
	if c.ExtProc < 0 {
		return []string{"header filters read cors-extproc's metadata, but the chain has no ext_proc filter"}, nil
	}
	var missing []string
	for _, header := range sortedKeys(ResponseHeaders) {
		ok := false
		for _, w := range c.Writes[header] {
			switch {
			case w.Namespace != ns || w.Key != header:
				errs = append(errs, fmt.Sprintf("filter %s writes %s from %s:%s; the server sends it as %s:%s", c.Filters[w.Filter], header, w.Namespace, w.Key, ns, header))
			case w.Filter < c.ExtProc:
				errs = append(errs, fmt.Sprintf("filter %s comes before ext_proc: on the response path it runs after ext_proc and Envoy's own replies of filters between them miss it; place it right after ext_proc", c.Filters[w.Filter]))
			case c.Router >= 0 && w.Filter > c.Router:
				errs = append(errs, fmt.Sprintf("filter %s comes after the router and never runs", c.Filters[w.Filter]))
			case (w.Action == "" && ResponseHeaders[header] != "APPEND_IF_EXISTS_OR_ADD") || (w.Action != "" && w.Action != ResponseHeaders[header]):
				errs = append(errs, fmt.Sprintf("filter %s writes %s with append_action %q, want %s", c.Filters[w.Filter], header, w.Action, ResponseHeaders[header]))
			case header == "vary" && !w.Matched:
				errs = append(errs, fmt.Sprintf("filter %s adds Vary: Origin even when the upstream's Vary lists it: wrap it in the ExtensionWithMatcher of the documented snippet", c.Filters[w.Filter]))
			default:
				ok = true
			}
		}
		if !ok && len(c.Writes[header]) == 0 {
			missing = append(missing, header)
		}
	}
	received := slices.Contains(c.Receiving, ns)
	switch {
	case oneTrip && len(missing) > 0:
		errs = append(errs, fmt.Sprintf("mode one-trip: no header filter writes %s from %s metadata after ext_proc, so responses lack them", strings.Join(missing, ", "), ns))
	case oneTrip && !received:
		errs = append(errs, fmt.Sprintf("mode one-trip: ext_proc's metadata_options.receiving_namespaces.untyped lacks %q, so Envoy drops the response headers", ns))
	case !oneTrip && len(missing) > 0:
		warnings = append(warnings, fmt.Sprintf("mode two-phase without a header filter for %s: Envoy 1.34 to 1.36 send their own replies (503, 504, direct_response, a 403 or 429 from a later filter) without CORS headers", strings.Join(missing, ", ")))
	case !oneTrip && !received:
		warnings = append(warnings, fmt.Sprintf("ext_proc's metadata_options.receiving_namespaces.untyped lacks %q: the header filters get nothing, and Envoy 1.34 to 1.36 send their own replies without CORS headers", ns))
	}
	if oneTrip && !c.AllowModeOverride {
		warnings = append(warnings, "mode one-trip: ext_proc's allow_mode_override is not true, so every request still costs two round trips")
	}
	return errs, warnings
}

// at follows keys through nested objects; nil when one is missing.
func at(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
