package kongimport

import (
	"strconv"
	"strings"
)

// FormReport is the outcome of importing one plugin given as form parameters.
type FormReport struct {
	// Policy is nil when Errors is not empty.
	Policy   *Fields  `json:"policy,omitempty" yaml:"policy,omitempty"`
	Warnings []string `json:"warnings,omitempty" yaml:"warnings,omitempty"`
	Errors   []string `json:"errors,omitempty" yaml:"errors,omitempty"`
}

// listFields are the config fields Kong's schema types as arrays. Kong's admin API accepts them
// as repeated parameters, `config.origins[]=…` or `config.origins[N]=…`.
var listFields = map[string]bool{"origins": true, "methods": true, "headers": true, "exposed_headers": true}

// boolFields are the config fields Kong's schema types as booleans.
var boolFields = map[string]bool{"credentials": true, "private_network": true, "preflight_continue": true, "allow_origin_absent": true}

// Form imports one CORS plugin given as Kong admin API form parameters, "key=value" each, as
// in `curl -X POST …/plugins --data "name=cors" --data "config.origin=mockbin.com"`. Values are
// taken as written, not URL-decoded.
//
// Values are typed as Kong's admin API does (kong/api/arguments.lua): "true" and "false" are
// booleans, max_age a number, an empty value null, and an array field collects every value
// given for it. For methods, headers and exposed_headers a value is also split at commas and
// trimmed, as Kong 0.x did (`config.methods=GET, POST`) and as Kong's header value means
// anyway; origins are not split, since Kong 1.0 and later keep each value whole and a regex may
// hold a comma.
func Form(params []string, opts Options) *FormReport {
	r := &FormReport{}
	config := map[string]any{}
	for _, kv := range params {
		key, value, ok := strings.Cut(kv, "=")
		if !ok {
			r.Errors = append(r.Errors, strconv.Quote(kv)+": want key=value")
			continue
		}
		field, isConfig := strings.CutPrefix(key, "config.")
		switch {
		case isConfig:
			if i := strings.IndexByte(field, '['); i > 0 && strings.HasSuffix(field, "]") &&
				strings.Trim(field[i+1:len(field)-1], "0123456789") == "" {
				field = field[:i]
			}
			addFormValue(config, field, value)
		case key == "name":
			if value != "cors" {
				r.Errors = append(r.Errors, problem("name", value, `not the CORS plugin: only "cors" is imported`))
			}
		case key == "enabled" && value == "false":
			r.Errors = append(r.Errors, "enabled=false: a disabled plugin does nothing in Kong; there is no policy to import")
		case key == "consumer" || strings.HasPrefix(key, "consumer.") || strings.HasPrefix(key, "consumer_"):
			r.Errors = append(r.Errors, key+": Kong's CORS plugin cannot be scoped to a consumer "+
				"(its schema has consumer = typedefs.no_consumer)")
		default:
			r.Warnings = append(r.Warnings, key+": ignored: it says where or how Kong runs the plugin; "+
				"on Envoy, the route that refers to the policy decides where it applies")
		}
	}
	conv := convert(config, opts)
	r.Warnings = append(r.Warnings, conv.warnings...)
	r.Errors = append(r.Errors, conv.errs...)
	if r.Errors == nil {
		r.Policy = &conv.fields
	}
	return r
}

// addFormValue types one form value the way Kong's admin API does, by the field's schema type.
func addFormValue(config map[string]any, field, value string) {
	if listFields[field] {
		list, _ := config[field].([]any)
		if value != "" {
			config[field] = append(list, value)
		} else if list == nil {
			config[field] = nil
		}
		return
	}
	switch {
	case value == "":
		config[field] = nil
	case field == "max_age":
		if f, err := strconv.ParseFloat(value, 64); err == nil {
			config[field] = f
		} else {
			config[field] = value
		}
	case boolFields[field] && (value == "true" || value == "false"):
		config[field] = value == "true"
	default:
		config[field] = value
	}
}
