package processor

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cors-extproc/cors-extproc/internal/policy"
)

// Resolution is what one policy source (an x-cors-policy value, or a route's or virtual host's
// metadata) resolves to.
type Resolution struct {
	// Found is false when the source names no policy at all, so the lookup goes on to the next
	// channel (contract section 3); Policy is then nil.
	Found  bool
	Policy *policy.Policy
	// Name is the named policy the source referred to (ref or Envoy Gateway annotation); empty
	// for a policy spelled out in place.
	Name string
	// Where says where in the source the policy was found, e.g. "filter_metadata.cors".
	Where string
	// Warnings are those of a policy spelled out in place (a named policy's come with the
	// named-policy file).
	Warnings []policy.Warning
}

// Resolver turns policy sources into policies. The server and the operator tools (validate,
// explain) share it, so that they cannot disagree on what a route's configuration means.
type Resolver struct {
	// Namespace is the filter_metadata key holding a policy.
	Namespace string
	// Policies is the named-policy set that `ref` and Envoy Gateway annotations refer to.
	Policies map[string]*policy.Policy
	// Limits bound the policies compiled in place; the zero value means policy.DefaultLimits.
	Limits policy.Limits
}

// JSON resolves an x-cors-policy value: a JSON policy or `{"ref": NAME}`. A value that is
// present always names a policy, broken or not.
func (r *Resolver) JSON(text string) Resolution {
	m, err := policy.ParseJSON([]byte(text))
	if err != nil {
		return unusable(grpcPolicyKey, fmt.Errorf("%s: %w", grpcPolicyKey, err))
	}
	return r.resolveMap(m, grpcPolicyKey)
}

// MetadataText resolves the text-format Metadata Envoy sends for xds.route_metadata and
// xds.virtual_host_metadata. Text that cannot be parsed at all is an unusable policy for its
// route (semantics section 10).
func (r *Resolver) MetadataText(text string) Resolution {
	var md corev3.Metadata
	if err := unmarshalMetadataText(text, &md); err != nil {
		return unusable("metadata", fmt.Errorf("metadata text: %w", err))
	}
	return r.Metadata(&md)
}

// MetadataTextSize is the size of md in text format as Envoy sends it, less what the release
// puts around it (metadataTextBody): the size Limits.MaxSourceBytes bounds (contract section
// 3), so that validate judges a route's metadata as the server does.
func MetadataTextSize(md *corev3.Metadata) int {
	text, err := prototext.MarshalOptions{Multiline: true}.Marshal(md)
	if err != nil {
		return 0
	}
	// Envoy prints one line; Go's printer writes `name: {`, `{}` and may double a space where
	// Envoy's writes `name {` and `{ }`.
	one := strings.Join(strings.Fields(string(text)), " ")
	return len(strings.NewReplacer(": {}", " { }", ": {", " {").Replace(one))
}

// Metadata resolves a route's or virtual host's metadata: first filter_metadata[Namespace],
// then the Envoy Gateway resource annotation (contract section 3).
func (r *Resolver) Metadata(md *corev3.Metadata) Resolution {
	if st, ok := md.GetFilterMetadata()[r.Namespace]; ok {
		return r.resolveMap(st.AsMap(), "filter_metadata."+r.Namespace)
	}
	if name, ok := envoyGatewayPolicyName(md.GetFilterMetadata()[envoyGatewayNamespace]); ok {
		return r.Named(name, "filter_metadata."+envoyGatewayNamespace+" annotation "+envoyGatewayAnnotation)
	}
	return Resolution{}
}

// Named resolves a reference to the named-policy file, found at where. A name the file lacks
// is an unusable policy, and the lookup stops there (contract section 3).
func (r *Resolver) Named(name, where string) Resolution {
	if p, ok := r.Policies[name]; ok {
		return Resolution{Found: true, Policy: p, Name: name, Where: where}
	}
	res := unusable(where, fmt.Errorf("%s: policy %q is not in the named-policy file", where, name))
	res.Name = name
	return res
}

// resolveMap turns a policy map into a resolution: a ref names a policy of the named-policy
// file, anything else is compiled in place.
func (r *Resolver) resolveMap(m map[string]any, where string) Resolution {
	name, isRef, err := policy.RefName(m)
	switch {
	case err != nil:
		return unusable(where, fmt.Errorf("%s: %w", where, err))
	case isRef:
		return r.Named(name, where+".ref")
	}
	limits := r.Limits
	if limits == (policy.Limits{}) {
		limits = policy.DefaultLimits
	}
	p, warnings, err := limits.Compile(m)
	if err != nil {
		res := unusable(where, fmt.Errorf("%s: %w", where, err))
		res.Warnings = warnings
		return res
	}
	return Resolution{Found: true, Policy: p, Where: where, Warnings: warnings}
}

func unusable(where string, err error) Resolution {
	return Resolution{Found: true, Policy: policy.Unusable(err), Where: where}
}

// envoyGatewayPolicyName returns the cors-policy annotation of the first resource, in list
// order, that carries it (contract section 3, item 3).
func envoyGatewayPolicyName(st *structpb.Struct) (string, bool) {
	for _, res := range st.GetFields()["resources"].GetListValue().GetValues() {
		ann := res.GetStructValue().GetFields()["annotations"].GetStructValue()
		if v, ok := ann.GetFields()[envoyGatewayAnnotation]; ok {
			return v.GetStringValue(), true
		}
	}
	return "", false
}
