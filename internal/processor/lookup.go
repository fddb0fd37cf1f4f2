package processor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
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
)

// Channel names the source a request's policy was found in (contract section 3).
type Channel uint8

const (
	ChannelNone                Channel = iota // no source names a policy: not a CORS route
	ChannelGRPCMetadata                       // the x-cors-policy gRPC metadata
	ChannelRouteMetadata                      // the route's metadata
	ChannelVirtualHostMetadata                // the virtual host's metadata
	ChannelDefault                            // the server's --default-policy
)

// Sources are the places one request's policy can come from, each resolved only if the lookup
// reaches it; a nil one is absent. The server fills them from an ext_proc stream, the operator
// tools (validate, explain) from Envoy configuration, and both go through Lookup, so that they
// cannot disagree on the order.
type Sources struct {
	// GRPCPolicy resolves the stream's x-cors-policy value. A value that is present always
	// names a policy, broken or not.
	GRPCPolicy func() Resolution
	// RouteMetadata and VirtualHostMetadata resolve the route's and the virtual host's
	// metadata; when one names no policy, the lookup goes on.
	RouteMetadata, VirtualHostMetadata func() Resolution
	// Default resolves the server's --default-policy.
	Default func() Resolution
}

// Lookup finds a request's policy in the order of contract section 3: x-cors-policy, the
// route's metadata, the virtual host's, the default policy. The first source that names a
// policy wins, whole; the channel says which. Its Policy is nil when none does.
func Lookup(s *Sources) (Resolution, Channel) {
	for i, source := range [...]func() Resolution{s.GRPCPolicy, s.RouteMetadata, s.VirtualHostMetadata, s.Default} {
		if source == nil {
			continue
		}
		if r := source(); r.Found {
			return r, Channel(i + 1)
		}
	}
	return Resolution{}, ChannelNone
}

// String is the channel's name in logs and metrics.
func (c Channel) String() string {
	switch c {
	case ChannelGRPCMetadata:
		return string(channelGRPCMetadata)
	case ChannelRouteMetadata:
		return string(channelRouteMetadata)
	case ChannelVirtualHostMetadata:
		return string(channelVirtualHostMeta)
	case ChannelDefault:
		return "default-policy"
	}
	return ""
}

// errorChannels are the channels a policy can fail to parse in, the label values of
// cors_extproc_policy_errors_total (the default policy comes from the validated named-policy
// file).
var errorChannels = []channel{channelGRPCMetadata, channelRouteMetadata, channelVirtualHostMeta}

// lookup finds the request's policy, and the channel it was found in, through Lookup, from the
// stream's metadata and the metadata text Envoy sends, each resolved through its cache. Its
// Policy is nil when the request is not on a CORS route. The policy set is loaded once, so a reload during the lookup
// cannot mix two sets.
func (s *Server) lookup(ctx context.Context, attrs *structpb.Struct) (Resolution, Channel) {
	set := s.set.Load()
	fields := attrs.GetFields()
	routeName := routeNameOf(attrs)
	var src Sources
	if v := metadata.ValueFromIncomingContext(ctx, grpcPolicyKey); len(v) > 0 {
		src.GRPCPolicy = func() Resolution {
			return s.resolve(set.jsonCache, v[0], channelGRPCMetadata, routeName, set.resolver.JSON)
		}
	}
	if text := fields[attrRouteMetadata].GetStringValue(); text != "" {
		src.RouteMetadata = func() Resolution {
			return s.resolve(set.textCache, text, channelRouteMetadata, routeName, set.resolver.MetadataText)
		}
	}
	if text := fields[attrVirtualHostMeta].GetStringValue(); text != "" {
		src.VirtualHostMetadata = func() Resolution {
			return s.resolve(set.textCache, text, channelVirtualHostMeta, routeName, set.resolver.MetadataText)
		}
	}
	src.Default = func() Resolution { return set.defaultPolicy }
	return Lookup(&src)
}

// routeNameOf is the route's name as Envoy sends it (xds.route_name), for logs.
func routeNameOf(attrs *structpb.Struct) string {
	return attrs.GetFields()[attrRouteName].GetStringValue()
}

// resolve returns the cached resolution of source, resolving and caching it on a miss. A broken
// policy is logged and counted once, by the stream that first cached it.
func (s *Server) resolve(c *policyCache, source string, ch channel, routeName string, resolveFn func(string) Resolution) Resolution {
	n := len(source)
	if n > s.limits.MaxSourceBytes && ch != channelGRPCMetadata {
		n = metadataTextSize(source)
	}
	if n > s.limits.MaxSourceBytes {
		// Not parsed, and cached under its hash: a cache of such keys would hold megabytes.
		sum := sha256.Sum256([]byte(source))
		source = "oversized:" + hex.EncodeToString(sum[:])
		resolveFn = func(string) Resolution {
			s.metrics.limitsExceeded[limitPolicyBytes].Inc()
			return unusable(string(ch), s.limits.SourceError(string(ch), n))
		}
	}
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

// unmarshalMetadataText parses Envoy's text-format Metadata, one line or several. Envoy 1.37.0
// prefixes the text with a goo.gle/debug... token and spaces, both picked at random once per
// Envoy process (recorded: goo.gle/debugonly, debugstr or debugproto, then one to three spaces,
// as in "goo.gle/debugproto  filter_metadata {...}" and "goo.gle/debugproto " for empty
// metadata; contract section 3): the token is stripped first, and nothing after it is empty
// metadata, a route without a policy. Unknown
// fields are ignored so that a newer Envoy's Metadata still parses.
func unmarshalMetadataText(text string, md *corev3.Metadata) error {
	return prototext.UnmarshalOptions{DiscardUnknown: true, Resolver: anyResolver{}}.Unmarshal([]byte(metadataTextBody(text)), md)
}

// metadataTextBody is metadata text without what Envoy puts around it: 1.37.0's debug token,
// whose name and following spaces vary from one Envoy process to the next, and whitespace at
// either end (1.38 and later end the line with a space).
func metadataTextBody(text string) string {
	t := strings.TrimSpace(text)
	if strings.HasPrefix(t, "goo.gle/debug") {
		end := strings.IndexAny(t, " \t\r\n")
		if end < 0 {
			return ""
		}
		t = strings.TrimSpace(t[end:])
	}
	return t
}

// metadataTextSize is the size --max-policy-bytes bounds: the text's body (metadataTextBody)
// with each run of whitespace counted as one space, which is the text on one line as Envoy 1.36
// prints it. The limit then does not depend on the Envoy release, and validate measures the
// same from configuration (MetadataTextSize).
func metadataTextSize(text string) int {
	n, space := 0, false
	for _, c := range []byte(metadataTextBody(text)) {
		switch c {
		case ' ', '\t', '\r', '\n':
			space = true
			continue
		}
		if space {
			n++
			space = false
		}
		n++
	}
	return n
}

// anyResolver resolves the types of google.protobuf.Any values in metadata text, such as a
// route's typed_filter_metadata for another filter. A type this binary does not know is read as
// an Empty, whose fields DiscardUnknown drops: the policy never lives there, and failing the
// whole text would make the route's CORS policy unusable for a reason unrelated to CORS.
type anyResolver struct{}

func (anyResolver) FindMessageByName(name protoreflect.FullName) (protoreflect.MessageType, error) {
	return protoregistry.GlobalTypes.FindMessageByName(name)
}

func (anyResolver) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	if mt, err := protoregistry.GlobalTypes.FindMessageByURL(url); err == nil {
		return mt, nil
	}
	return (&emptypb.Empty{}).ProtoReflect().Type(), nil
}

func (anyResolver) FindExtensionByName(field protoreflect.FullName) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByName(field)
}

func (anyResolver) FindExtensionByNumber(message protoreflect.FullName, field protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByNumber(message, field)
}
