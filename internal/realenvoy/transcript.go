package realenvoy

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Transcript is a recorded Stream as test data: every message Envoy sent and the server's reply
// as protojson trees (the .proto's field names; header values as text, not base64), with the
// values that change from one request to the next replaced by placeholders. Nothing is dropped:
// a header keeps its place and its name, so order and presence are compared too. Two
// transcripts are equal when their JSON is.
type Transcript struct {
	// GRPCMetadata is the stream's initial metadata, without the keys gRPC itself adds.
	GRPCMetadata map[string][]string `json:"grpc_metadata,omitempty"`
	Messages     []Exchange          `json:"messages"`
}

// Exchange is one message Envoy sent and the server's reply to it (absent when none was sent,
// as in observability mode).
type Exchange struct {
	Envoy  any `json:"envoy"`
	Server any `json:"server,omitempty"`
}

// PerRequestHeaders are the HTTP headers whose values change with every request (Envoy's
// generated request id, the clock, Envoy's timing of the upstream), each with the placeholder
// that stands for its value in a Transcript.
var PerRequestHeaders = map[string]string{
	"x-request-id":                  "<request id>",
	"date":                          "<date>",
	"x-envoy-upstream-service-time": "<ms>",
	TagHeader:                       "<tag>",
}

// PerHostMetadata are the gRPC metadata keys of an ext_proc stream whose values depend on the
// machine: Envoy's gRPC client sends x-forwarded-for with the address Envoy takes as its own.
var PerHostMetadata = map[string]string{
	"x-forwarded-for": "<envoy's address>",
}

// DebugMarker is the placeholder for the token, and the spaces after it, that Envoy 1.37.0
// puts in front of the metadata text it sends (contract section 3). Its protobuf library
// picks both at random once per process: goo.gle/debugonly, goo.gle/debugstr or
// goo.gle/debugproto, followed by one to three spaces (one more before a non-empty text).
const DebugMarker = "<goo.gle/debug marker> "

var debugMarkerRE = regexp.MustCompile(`^goo\.gle/debug(?:only|str|proto) +`)

// Transcribe turns recorded streams into transcripts.
func Transcribe(streams []*Stream) ([]Transcript, error) {
	out := make([]Transcript, 0, len(streams))
	for _, s := range streams {
		t := Transcript{Messages: make([]Exchange, len(s.Requests))}
		for k, vs := range s.Metadata {
			if t.GRPCMetadata == nil {
				t.GRPCMetadata = map[string][]string{}
			}
			if p, ok := PerHostMetadata[k]; ok {
				vs = []string{p}
			}
			t.GRPCMetadata[k] = vs
		}
		for i, req := range s.Requests {
			var err error
			if t.Messages[i].Envoy, err = tree(req); err != nil {
				return nil, err
			}
			if i < len(s.Responses) && s.Responses[i] != nil {
				if t.Messages[i].Server, err = tree(s.Responses[i]); err != nil {
					return nil, err
				}
			}
		}
		out = append(out, t)
	}
	return out, nil
}

var jsonOptions = protojson.MarshalOptions{UseProtoNames: true}

// tree is m as a JSON tree, normalized.
func tree(m proto.Message) (any, error) {
	m = proto.Clone(m)
	if req, ok := m.(*extprocv3.ProcessingRequest); ok {
		for _, attrs := range req.GetAttributes() {
			for _, v := range attrs.GetFields() {
				if sv, ok := v.GetKind().(*structpb.Value_StringValue); ok {
					sv.StringValue = debugMarkerRE.ReplaceAllLiteralString(sv.StringValue, DebugMarker)
				}
			}
		}
		for _, h := range slices.Concat(req.GetRequestHeaders().GetHeaders().GetHeaders(),
			req.GetResponseHeaders().GetHeaders().GetHeaders()) {
			if p, ok := PerRequestHeaders[h.GetKey()]; ok {
				h.RawValue = []byte(p)
			}
		}
	}
	raw, err := jsonOptions.Marshal(m)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	return rawValuesAsText(v)
}

// rawValuesAsText decodes every "raw_value" (bytes, so base64 in protojson) into its text, for
// a reader.
func rawValuesAsText(v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok && k == "raw_value" {
				b, err := base64.StdEncoding.DecodeString(s)
				if err != nil {
					return nil, fmt.Errorf("raw_value %q: %v", s, err)
				}
				x[k] = string(b)
				continue
			}
			var err error
			if x[k], err = rawValuesAsText(e); err != nil {
				return nil, err
			}
		}
	case []any:
		for i, e := range x {
			var err error
			if x[i], err = rawValuesAsText(e); err != nil {
				return nil, err
			}
		}
	}
	return v, nil
}
