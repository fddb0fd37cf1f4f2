package processor

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cors-extproc/cors-extproc/internal/policy"
)

// headerValue returns a header field's value. Envoy fills raw_value and leaves value empty since
// 1.27; value is read only when raw_value is empty (contract section 2).
//
// raw_value is copied into a string: sharing its bytes through unsafe.String saved no CPU per
// request that `make bench-envoy` could resolve (BENCHMARKS.md, "Low-level speed work").
func headerValue(h *corev3.HeaderValue) string {
	if b := h.GetRawValue(); len(b) > 0 {
		return string(b)
	}
	return h.GetValue()
}

// ReadRequest picks out what the policy reads from request headers as Envoy sends them. Keys
// arrive lower-cased; of a repeated header the first value counts (semantics section 2).
func ReadRequest(headers []*corev3.HeaderValue) policy.Request {
	var (
		r                                policy.Request
		seenMethod, seenOrigin, seenACRH bool
		seenACRPN                        bool
	)
	for _, h := range headers {
		switch h.GetKey() {
		case ":method":
			if !seenMethod {
				r.Method, seenMethod = headerValue(h), true
			}
		case policy.HeaderOrigin:
			if !seenOrigin {
				r.Origin, seenOrigin = headerValue(h), true
			}
		case policy.HeaderRequestMethod:
			if !r.HasRequestMethod {
				r.RequestMethod, r.HasRequestMethod = headerValue(h), true
			}
		case policy.HeaderRequestHeaders:
			if !seenACRH {
				r.RequestHeaders, seenACRH = headerValue(h), true
			}
		case policy.HeaderRequestPrivateNetwork:
			if !seenACRPN {
				r.RequestPrivateNetwork, seenACRPN = headerValue(h), true
			}
		}
	}
	return r
}

// UpstreamVaryListsOrigin reports whether any of the upstream's Vary fields already lists
// Origin or *, in which case `Vary: Origin` is not added again (semantics sections 4 and 9.7).
func UpstreamVaryListsOrigin(headers []*corev3.HeaderValue) bool {
	for _, h := range headers {
		if h.GetKey() == policy.HeaderVary && policy.VaryListsOrigin(headerValue(h)) {
			return true
		}
	}
	return false
}

// maxHeaderFields bounds the header fields of one reply: every slot policy.Headers has, plus
// the appended Vary.
const maxHeaderFields = 9

// headerFields holds the set_headers of one reply in one block of memory, so that a reply
// costs two allocations (its block and its values) rather than three per header field.
type headerFields struct {
	list    [maxHeaderFields]*corev3.HeaderValueOption
	options [maxHeaderFields]corev3.HeaderValueOption
	values  [maxHeaderFields]corev3.HeaderValue
}

// appendTrue is the append flag of the Vary mutation, shared by every reply: nothing writes to
// a message being sent.
var appendTrue = wrapperspb.Bool(true)

// set fills f with the decision headers as replacing mutations, followed by `vary: Origin`
// appended beside the upstream's when appendVary is set, and returns the set_headers list.
// Values go in raw_value only: Envoy ignores value in mutations (contract section 4). All the
// values share one buffer.
func (f *headerFields) set(h *policy.Headers, appendVary bool) []*corev3.HeaderValueOption {
	n := h.Len()
	size := 0
	for i := range n {
		size += len(h.At(i).Value)
	}
	if appendVary {
		size += len(policy.VaryOrigin)
	}
	buf := make([]byte, 0, size)
	add := func(i int, name, value string) {
		start := len(buf)
		buf = append(buf, value...)
		f.values[i].Key, f.values[i].RawValue = name, buf[start:len(buf):len(buf)]
		f.options[i].Header = &f.values[i]
		f.list[i] = &f.options[i]
	}
	for i := range n {
		field := h.At(i)
		add(i, field.Name, field.Value)
	}
	if appendVary {
		add(n, policy.HeaderVary, policy.VaryOrigin)
		//lint:ignore SA1019 ext_proc honours only the deprecated append flag, not append_action (contract section 4).
		f.options[n].Append = appendTrue
		n++
	}
	return f.list[:n:n]
}

// immediateReply is an immediate_response with everything it points to, allocated at once.
type immediateReply struct {
	response extprocv3.ProcessingResponse
	oneof    extprocv3.ProcessingResponse_ImmediateResponse
	answer   extprocv3.ImmediateResponse
	status   typev3.HttpStatus
	mutation extprocv3.HeaderMutation
	fields   headerFields
}

// immediateResponse answers the request at once (a preflight, semantics section 7, or the 403
// of an unusable policy, section 10). Envoy sends no response_headers after it.
func immediateResponse(d *policy.RequestDecision) *extprocv3.ProcessingResponse {
	r := &immediateReply{}
	r.status.Code = typev3.StatusCode(d.Status)
	r.mutation.SetHeaders = r.fields.set(&d.Headers, false)
	r.answer.Status, r.answer.Headers = &r.status, &r.mutation
	r.oneof.ImmediateResponse = &r.answer
	r.response.Response = &r.oneof
	return &r.response
}

// continueReply is a request_headers CONTINUE with everything it points to, allocated at once.
type continueReply struct {
	response extprocv3.ProcessingResponse
	oneof    extprocv3.ProcessingResponse_RequestHeaders
	headers  extprocv3.HeadersResponse
	common   extprocv3.CommonResponse
}

// continueRequest lets the request go upstream, skipping the response phase when skip is set
// (see replyContinueAndSkip), with the decision's dynamic metadata md. Without metadata the
// reply is one of the shared ones.
func continueRequest(skip bool, md *structpb.Struct) *extprocv3.ProcessingResponse {
	switch {
	case md == nil && skip:
		return replyContinueAndSkip
	case md == nil:
		return replyContinueRequest
	}
	r := &continueReply{}
	r.headers.Response = &r.common
	r.oneof.RequestHeaders = &r.headers
	r.response.Response = &r.oneof
	r.response.DynamicMetadata = md
	if skip {
		r.response.ModeOverride = replyContinueAndSkip.ModeOverride
	}
	return &r.response
}

// The replies that carry nothing of the request are built once and shared by every stream:
// neither the processor nor gRPC writes to a message it sends (gRPC's proto codec only reads it;
// the size it caches is stored atomically).
var (
	// replyContinueRequest lets the request go upstream and keeps the response phase, which
	// has work to do.
	replyContinueRequest = &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{
			Response: &extprocv3.CommonResponse{},
		}},
	}
	// replyContinueAndSkip lets the request go upstream and tells Envoy not to send
	// response_headers, saving a round trip. Envoy honours mode_override only with
	// allow_mode_override; otherwise the response phase arrives anyway and gets an empty
	// CONTINUE (contract section 4).
	replyContinueAndSkip = &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{
			Response: &extprocv3.CommonResponse{},
		}},
		ModeOverride: &extprocfilterv3.ProcessingMode{ResponseHeaderMode: extprocfilterv3.ProcessingMode_SKIP},
	}
	// replyContinueResponse changes nothing in the response.
	replyContinueResponse = &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{
			Response: &extprocv3.CommonResponse{},
		}},
	}
	// The empty CONTINUEs of the events the server has nothing to do with (contract section 4).
	replyRequestBody = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{}}}
	replyResponseBody = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
		ResponseBody: &extprocv3.BodyResponse{}}}
	replyRequestTrailers = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
		RequestTrailers: &extprocv3.TrailersResponse{}}}
	replyResponseTrailers = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
		ResponseTrailers: &extprocv3.TrailersResponse{}}}
)

// removeAllowOrigin is the removal list of a decoration, shared by every reply: nothing writes
// to a message being sent.
var removeAllowOrigin = []string{policy.HeaderAllowOrigin}

// decorationReply is a response_headers reply with a header mutation and everything it points
// to, allocated at once.
type decorationReply struct {
	response extprocv3.ProcessingResponse
	oneof    extprocv3.ProcessingResponse_ResponseHeaders
	headers  extprocv3.HeadersResponse
	common   extprocv3.CommonResponse
	mutation extprocv3.HeaderMutation
	fields   headerFields
}

// continueResponse applies the decoration of an actual response (semantics section 8): an
// upstream ACAO is removed (Envoy applies removals before sets), fields are replaced, and Vary
// alone is appended beside the upstream's, with the append flag Envoy honours (contract
// section 4: append_action is ignored in ext_proc mutations).
func continueResponse(d *policy.ResponseDecision) *extprocv3.ProcessingResponse {
	if d == nil || d.Empty() {
		return replyContinueResponse
	}
	r := &decorationReply{}
	if d.RemoveAllowOrigin {
		r.mutation.RemoveHeaders = removeAllowOrigin
	}
	r.mutation.SetHeaders = r.fields.set(&d.Set, d.AppendVary)
	r.common.HeaderMutation = &r.mutation
	r.headers.Response = &r.common
	r.oneof.ResponseHeaders = &r.headers
	r.response.Response = &r.oneof
	return &r.response
}
