package envoytest

import (
	"regexp"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
)

// VaryListsOriginRegex is the regex of the one-trip snippet's Vary filter (docs/envoy-extproc.md
// section 7): Envoy's matcher skips the filter when the response's Vary, its fields joined with
// ",", matches it as a whole, i.e. already lists Origin or * (docs/cors-semantics.md section 4).
const VaryListsOriginRegex = `(?i)(.*,)?[ \t]*(origin|\*)[ \t]*(,.*)?`

var varyListsOrigin = regexp.MustCompile(`^(?:` + VaryListsOriginRegex + `)$`)

// HeaderFilter plays the header filters that follow ext_proc in the documented Envoy snippet
// (docs/envoy-extproc.md section 7): on every response after the request phase, the upstream's
// and Envoy's own replies alike, they write the headers that the request phase left in dynamic
// metadata. Each value is %DYNAMIC_METADATA(Namespace:header)%; an absent one formats as empty
// and Envoy then adds nothing.
type HeaderFilter struct {
	// Namespace is the dynamic metadata namespace the values are read from.
	Namespace string
}

// overwritten are the headers the snippet writes with OVERWRITE_IF_EXISTS_OR_ADD, in its order.
var overwritten = []string{"access-control-allow-origin", "access-control-allow-credentials", "access-control-expose-headers"}

// apply writes the headers from md, the request's dynamic metadata, into resp. The filters'
// actions do what ext_proc's header mutations do (recorded on every pinned Envoy,
// docs/envoy-extproc.md section 7): OVERWRITE_IF_EXISTS_OR_ADD is a set_headers entry (the
// response's fields of that name removed, the value added at the end), APPEND_IF_EXISTS_OR_ADD
// one with append (joined onto the upstream's Vary), so they are played as such a mutation. The
// Vary filter runs after the others on the response path (it comes before them in the filter
// chain), and not at all when the response's Vary already lists Origin or *.
func (f *HeaderFilter) apply(resp Response, md map[string]*structpb.Struct) (Response, error) {
	// %DYNAMIC_METADATA(Namespace:key)%: a string prints as it is (the server sends only
	// strings), anything absent as empty.
	value := func(key string) string { return md[f.Namespace].GetFields()[key].GetStringValue() }
	m := &extprocv3.HeaderMutation{}
	for _, key := range overwritten {
		if v := value(key); v != "" {
			m.SetHeaders = append(m.SetHeaders, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, RawValue: []byte(v)}})
		}
	}
	if v := value("vary"); v != "" && !varyListsOrigin.MatchString(strings.Join(resp.Headers.Values("vary"), ",")) {
		m.SetHeaders = append(m.SetHeaders, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "vary", RawValue: []byte(v)},
			//lint:ignore SA1019 the append flag is how ext_proc mutations append, as this filter does.
			Append: wrapperspb.Bool(true)})
	}
	fields, err := envoyfilter.ApplyMutation(responseFields(resp), m, envoyfilter.ResponsePhase)
	if err != nil {
		return resp, err
	}
	out := responseFromFields(fields, resp.Body)
	out.Local = resp.Local
	return out, nil
}
