package processor

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cors-extproc/cors-extproc/internal/policy"
)

// headerValue returns a header field's value. Envoy fills raw_value and leaves value empty since
// 1.27; value is read only when raw_value is empty (contract section 2).
func headerValue(h *corev3.HeaderValue) string {
	if len(h.GetRawValue()) > 0 {
		return string(h.GetRawValue())
	}
	return h.GetValue()
}

// readRequest picks out what the policy reads. Keys arrive lower-cased; of a repeated header the
// first value counts (semantics section 2).
func readRequest(headers []*corev3.HeaderValue) policy.Request {
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

// upstreamVaryListsOrigin reports whether any of the upstream's Vary fields already lists
// Origin or *, in which case `Vary: Origin` is not added again (semantics sections 4 and 9.7).
func upstreamVaryListsOrigin(headers []*corev3.HeaderValue) bool {
	for _, h := range headers {
		if h.GetKey() == policy.HeaderVary && policy.VaryListsOrigin(headerValue(h)) {
			return true
		}
	}
	return false
}

// setHeaders converts decision headers into replacing mutations. Values go in raw_value only:
// Envoy ignores value in mutations (contract section 4).
func setHeaders(h *policy.Headers, extra int) []*corev3.HeaderValueOption {
	out := make([]*corev3.HeaderValueOption, 0, h.Len()+extra)
	for i := 0; i < h.Len(); i++ {
		f := h.At(i)
		out = append(out, &corev3.HeaderValueOption{
			Header: &corev3.HeaderValue{Key: f.Name, RawValue: []byte(f.Value)},
		})
	}
	return out
}

// immediateResponse answers the request at once (a preflight, semantics section 7, or the 403
// of an unusable policy, section 10). Envoy sends no response_headers after it.
func immediateResponse(d *policy.RequestDecision) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
			Headers: &extprocv3.HeaderMutation{SetHeaders: setHeaders(&d.Headers, 0)},
		}},
	}
}

// The replies that carry nothing of the request are built once and shared by every stream:
// neither the processor nor gRPC writes to a message it sends (Codec and the standard codec only
// read it; the size the standard codec caches is stored atomically), and Codec sends them as
// bytes encoded once (staticReplies).
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

// continueResponse applies the decoration of an actual response (semantics section 8): an
// upstream ACAO is removed (Envoy applies removals before sets), fields are replaced, and Vary
// alone is appended beside the upstream's, with the append flag Envoy honours (contract
// section 4: append_action is ignored in ext_proc mutations).
func continueResponse(d *policy.ResponseDecision) *extprocv3.ProcessingResponse {
	if d == nil || d.Empty() {
		return replyContinueResponse
	}
	m := &extprocv3.HeaderMutation{}
	if d.RemoveAllowOrigin {
		m.RemoveHeaders = []string{policy.HeaderAllowOrigin}
	}
	extra := 0
	if d.AppendVary {
		extra = 1
	}
	m.SetHeaders = setHeaders(&d.Set, extra)
	if d.AppendVary {
		m.SetHeaders = append(m.SetHeaders, &corev3.HeaderValueOption{
			Header: &corev3.HeaderValue{Key: policy.HeaderVary, RawValue: []byte(policy.VaryOrigin)},
			//lint:ignore SA1019 ext_proc honours only the deprecated append flag, not append_action (contract section 4).
			Append: wrapperspb.Bool(true),
		})
	}
	return &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{
			Response: &extprocv3.CommonResponse{HeaderMutation: m},
		}},
	}
}
