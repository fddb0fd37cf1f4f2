package processor

import (
	"strings"
	"sync"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cors-extproc/cors-extproc/internal/policy"
)

// decisionMetadata builds the dynamic metadata that returns each decision to Envoy, so that an
// access log can show it (`%DYNAMIC_METADATA(cors-extproc:decision)%`). Envoy applies only the
// namespaces listed in the filter's metadata_options.receiving_namespaces.
//
// A decision's metadata depends only on the policy and the decision, never on the request's
// own text, so each distinct one is built once and shared by every reply that carries it
// (nothing writes to a message being sent). The map is bounded: when full it is emptied, which
// costs a rebuild of what is in use and keeps no stale policy alive.
type decisionMetadata struct {
	namespace string
	max       int
	mu        sync.RWMutex
	structs   map[decisionKey]*structpb.Struct
}

type decisionKey struct {
	policy     *policy.Policy
	name       string
	where      string
	kind       policy.Kind
	origin     policy.OriginResult
	matched    int
	reportOnly bool
}

func newDecisionMetadata(namespace string, max int) *decisionMetadata {
	return &decisionMetadata{namespace: namespace, max: max, structs: make(map[decisionKey]*structpb.Struct)}
}

// get returns the metadata of decision d under the resolved policy res.
func (m *decisionMetadata) get(res *Resolution, d *policy.RequestDecision, reportOnly bool) *structpb.Struct {
	k := decisionKey{policy: res.Policy, name: res.Name, where: res.Where, kind: d.Kind, origin: d.Origin,
		matched: d.Matched, reportOnly: reportOnly}
	m.mu.RLock()
	st, ok := m.structs[k]
	m.mu.RUnlock()
	if ok {
		return st
	}
	st = m.build(k)
	m.mu.Lock()
	if len(m.structs) >= m.max {
		clear(m.structs)
	}
	m.structs[k] = st
	m.mu.Unlock()
	return st
}

// build makes the metadata: the namespace holds the decision kind, the origin result, the
// origins element that matched, the policy's name (or where it was found) and the mode.
func (m *decisionMetadata) build(k decisionKey) *structpb.Struct {
	source := k.where
	if k.name != "" {
		source = k.name
	}
	fields := map[string]*structpb.Value{
		"decision":    structpb.NewStringValue(kindName(k.kind)),
		"origin":      structpb.NewStringValue(originResultName(k.origin)),
		"policy":      structpb.NewStringValue(source),
		"report_only": structpb.NewBoolValue(k.reportOnly),
	}
	if el := k.policy.Element(k.matched); el != "" {
		fields["matched"] = structpb.NewStringValue(el)
	}
	if k.policy.Err() != nil {
		fields["decision"] = structpb.NewStringValue("unusable_policy")
	}
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		m.namespace: structpb.NewStructValue(&structpb.Struct{Fields: fields}),
	}}
}

// headersMetadata builds the dynamic metadata of a request phase that carries the headers of
// its actual response, for Envoy's header filter (docs/envoy-extproc.md section 7): under its
// namespace, one string per header named after it (access-control-allow-origin,
// access-control-allow-credentials, access-control-expose-headers, and vary for the `Origin` to
// add beside the upstream's). A header the response does not get is absent, which the filter's
// %DYNAMIC_METADATA% formats as empty, and Envoy adds nothing for an empty value.
//
// Like decisionMetadata, each distinct result is built once and shared by every reply that
// carries it, in a map emptied when full: the values are the policy's, except an ACAO echoing
// the request Origin, and browsers send few distinct Origins to one policy.
type headersMetadata struct {
	namespace string
	max       int
	mu        sync.RWMutex
	structs   map[headersKey]*structpb.Struct
}

// headersKey is what a headers metadata Struct depends on: the decision's own metadata (nil
// without --dynamic-metadata), which is merged into the same namespace when it shares it, and
// the headers.
type headersKey struct {
	decision                   *structpb.Struct
	allowOrigin, exposeHeaders string
	credentials, vary          bool
}

func newHeadersMetadata(namespace string, max int) *headersMetadata {
	return &headersMetadata{namespace: namespace, max: max, structs: make(map[headersKey]*structpb.Struct)}
}

// get returns the metadata carrying rd's headers beside decision, the decision's own metadata
// (nil for none; it is shared, so it is not changed), or decision itself when rd sets nothing.
func (m *headersMetadata) get(rd *policy.ResponseDecision, decision *structpb.Struct) *structpb.Struct {
	k := headersKey{decision: decision, vary: rd.AppendVary}
	k.allowOrigin, _ = rd.Set.Get(policy.HeaderAllowOrigin)
	k.exposeHeaders, _ = rd.Set.Get(policy.HeaderExposeHeaders)
	_, k.credentials = rd.Set.Get(policy.HeaderAllowCredentials)
	if k.allowOrigin == "" && k.exposeHeaders == "" && !k.credentials && !k.vary {
		return decision
	}
	m.mu.RLock()
	st, ok := m.structs[k]
	m.mu.RUnlock()
	if ok {
		return st
	}
	// The ACAO may share the request's bytes (headerValue); the map keeps a copy of its own.
	k.allowOrigin = strings.Clone(k.allowOrigin)
	st = m.build(rd, decision)
	m.mu.Lock()
	if len(m.structs) >= m.max {
		clear(m.structs)
	}
	m.structs[k] = st
	m.mu.Unlock()
	return st
}

func (m *headersMetadata) build(rd *policy.ResponseDecision, decision *structpb.Struct) *structpb.Struct {
	inner := decision.GetFields()[m.namespace].GetStructValue().GetFields()
	fields := make(map[string]*structpb.Value, rd.Set.Len()+1+len(inner))
	for k, v := range inner {
		fields[k] = v
	}
	for i := range rd.Set.Len() {
		h := rd.Set.At(i)
		fields[h.Name] = structpb.NewStringValue(strings.Clone(h.Value))
	}
	if rd.AppendVary {
		fields[policy.HeaderVary] = structpb.NewStringValue(policy.VaryOrigin)
	}
	out := &structpb.Struct{Fields: make(map[string]*structpb.Value, 1+len(decision.GetFields()))}
	for k, v := range decision.GetFields() {
		out.Fields[k] = v
	}
	out.Fields[m.namespace] = structpb.NewStructValue(&structpb.Struct{Fields: fields})
	return out
}
