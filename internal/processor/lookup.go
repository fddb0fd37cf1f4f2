package processor

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cors-extproc/cors-extproc/internal/policy"
)

// Names Envoy and Envoy Gateway use for what the server reads (contract sections 2 and 3).
const (
	attributesKey          = "envoy.filters.http.ext_proc"
	attrRouteMetadata      = "xds.route_metadata"
	attrVirtualHostMeta    = "xds.virtual_host_metadata"
	attrRouteName          = "xds.route_name"
	grpcPolicyKey          = "x-cors-policy"
	envoyGatewayNamespace  = "envoy-gateway"
	envoyGatewayAnnotation = "cors-policy"
)

// channel names where a policy came from, for logs and metrics.
type channel string

const (
	channelGRPCMetadata    channel = "grpc-metadata"
	channelRouteMetadata   channel = "route-metadata"
	channelVirtualHostMeta channel = "virtual-host-metadata"
	channelDefault         channel = "default"
)

// lookup finds the request's policy in the order of contract section 3; the first channel that
// names a policy wins, whole. It returns nil when the request is not on a CORS route.
func (s *Server) lookup(ctx context.Context, attrs *structpb.Struct) *policy.Policy {
	var routeName string
	if attrs != nil {
		routeName = attrs.GetFields()[attrRouteName].GetStringValue()
	}
	if v := metadata.ValueFromIncomingContext(ctx, grpcPolicyKey); len(v) > 0 {
		return s.resolve(s.jsonCache, v[0], channelGRPCMetadata, routeName, s.resolveJSON).Policy
	}
	for _, a := range [...]struct {
		attr string
		ch   channel
	}{{attrRouteMetadata, channelRouteMetadata}, {attrVirtualHostMeta, channelVirtualHostMeta}} {
		v, ok := attrs.GetFields()[a.attr]
		if !ok {
			continue
		}
		text := v.GetStringValue()
		if text == "" {
			continue
		}
		if r := s.resolve(s.textCache, text, a.ch, routeName, s.resolveMetadataText); r.Found {
			return r.Policy
		}
	}
	return s.defaultPolicy
}

// resolve returns the cached resolution of source, resolving and caching it on a miss. A broken
// policy is logged and counted once, by the stream that first cached it.
func (s *Server) resolve(c *policyCache, source string, ch channel, routeName string, resolveFn func(string) resolution) resolution {
	if r, ok := c.get(source); ok {
		s.metrics.cacheHits.Inc()
		return r
	}
	s.metrics.cacheMisses.Inc()
	r, added, entries := c.add(source, resolveFn(source))
	s.metrics.cacheEntries.WithLabelValues(string(cacheKind(ch))).Set(float64(entries))
	if added && r.Found && r.Policy.Err() != nil {
		s.metrics.policyErrors.WithLabelValues(string(ch)).Inc()
		s.log.Error("unusable CORS policy: preflights get 403 and no CORS headers are granted on this route",
			"route", routeName, "channel", string(ch), "policy_ref", r.Name, "error", r.Policy.Err())
	}
	return r
}

// cacheKind groups channels by the cache that serves them.
func cacheKind(ch channel) string {
	if ch == channelGRPCMetadata {
		return "json"
	}
	return "metadata-text"
}

// resolveJSON resolves the x-cors-policy value: a JSON policy or `{"ref": NAME}`. A value that
// is present always names a policy, broken or not.
func (s *Server) resolveJSON(text string) resolution {
	m, err := policy.ParseJSON([]byte(text))
	if err != nil {
		return resolution{Found: true, Policy: policy.Unusable(fmt.Errorf("%s: %w", grpcPolicyKey, err))}
	}
	return s.resolveMap(m, grpcPolicyKey)
}

// resolveMetadataText resolves the text-format Metadata Envoy sends for xds.route_metadata and
// xds.virtual_host_metadata: first filter_metadata[namespace], then the Envoy Gateway resource
// annotation. Text that cannot be parsed at all is an unusable policy for its route (semantics
// section 10).
func (s *Server) resolveMetadataText(text string) resolution {
	var md corev3.Metadata
	if err := unmarshalMetadataText(text, &md); err != nil {
		return resolution{Found: true, Policy: policy.Unusable(fmt.Errorf("metadata text: %w", err))}
	}
	if st, ok := md.GetFilterMetadata()[s.namespace]; ok {
		return s.resolveMap(st.AsMap(), "filter_metadata."+s.namespace)
	}
	if name, ok := envoyGatewayPolicyName(md.GetFilterMetadata()[envoyGatewayNamespace]); ok {
		return s.named(name, "filter_metadata."+envoyGatewayNamespace+" annotation "+envoyGatewayAnnotation)
	}
	return resolution{}
}

// resolveMap turns a policy map into a resolution: a ref names a policy of the named-policy
// file, anything else is compiled in place.
func (s *Server) resolveMap(m map[string]any, where string) resolution {
	name, isRef, err := policy.RefName(m)
	switch {
	case err != nil:
		return resolution{Found: true, Policy: policy.Unusable(fmt.Errorf("%s: %w", where, err))}
	case isRef:
		return s.named(name, where+".ref")
	}
	p, _, err := policy.Compile(m)
	if err != nil {
		return resolution{Found: true, Policy: policy.Unusable(fmt.Errorf("%s: %w", where, err))}
	}
	return resolution{Found: true, Policy: p}
}

// named resolves a reference to the named-policy file. A name the file lacks is an unusable
// policy, and the lookup stops there (contract section 3).
func (s *Server) named(name, where string) resolution {
	if p, ok := s.policies[name]; ok {
		return resolution{Found: true, Policy: p, Name: name}
	}
	return resolution{Found: true, Name: name,
		Policy: policy.Unusable(fmt.Errorf("%s: policy %q is not in the named-policy file", where, name))}
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

var errEmptyMetadataText = errors.New("empty after the debug token")

// unmarshalMetadataText parses Envoy's text-format Metadata, one line or several. Envoy 1.37.0
// prefixes the text with a goo.gle/debugonly (or debugstr) token (contract section 3); it is
// stripped first. Unknown fields are ignored so that a newer Envoy's Metadata still parses.
func unmarshalMetadataText(text string, md *corev3.Metadata) error {
	t := strings.TrimSpace(text)
	if strings.HasPrefix(t, "goo.gle/debug") {
		end := strings.IndexAny(t, " \t\r\n")
		if end < 0 {
			return errEmptyMetadataText
		}
		t = t[end:]
	}
	return prototext.UnmarshalOptions{DiscardUnknown: true}.Unmarshal([]byte(t), md)
}
