package envoytest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
)

// fakeServer answers each message with reply(msg); a nil reply sends nothing. It records every
// stream: its messages, its gRPC metadata and how it ended for the server.
type fakeServer struct {
	extprocv3.UnimplementedExternalProcessorServer
	reply func(*extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse
	// process, when set, replaces the reply loop.
	process func(extprocv3.ExternalProcessor_ProcessServer) error

	mu      sync.Mutex
	streams []stream
}

type stream struct {
	msgs []*extprocv3.ProcessingRequest
	md   metadata.MD
	end  error // what the server's Recv returned last: io.EOF, or a cancellation
}

func (f *fakeServer) Process(s extprocv3.ExternalProcessor_ProcessServer) error {
	if f.process != nil {
		return f.process(s)
	}
	st := stream{}
	st.md, _ = metadata.FromIncomingContext(s.Context())
	defer func() {
		f.mu.Lock()
		f.streams = append(f.streams, st)
		f.mu.Unlock()
	}()
	for {
		m, err := s.Recv()
		if err != nil {
			st.end = err
			if err == io.EOF {
				return nil
			}
			return err
		}
		st.msgs = append(st.msgs, m)
		if r := f.reply(m); r != nil {
			if err := s.Send(r); err != nil {
				return err
			}
		}
	}
}

// only returns the single recorded stream, waiting a little for the server to finish it.
func (f *fakeServer) only(t *testing.T) stream {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		f.mu.Lock()
		n := len(f.streams)
		f.mu.Unlock()
		if n > 0 {
			break
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.streams) != 1 {
		t.Fatalf("server saw %d streams, want 1", len(f.streams))
	}
	return f.streams[0]
}

func reqHeadersReply(c *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: c}}}
}

func respHeadersReply(c *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
		ResponseHeaders: &extprocv3.HeadersResponse{Response: c}}}
}

// continueAll is the CONTINUE-everything server.
func continueAll(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	switch m.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return reqHeadersReply(nil)
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return respHeadersReply(nil)
	}
	return nil
}

// mutating answers request_headers and response_headers with the given mutations.
func mutating(reqM, respM *extprocv3.HeaderMutation) func(*extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	return func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		if m.GetRequestHeaders() != nil {
			return reqHeadersReply(&extprocv3.CommonResponse{HeaderMutation: reqM})
		}
		return respHeadersReply(&extprocv3.CommonResponse{HeaderMutation: respM})
	}
}

func set(key, value string, appendField *bool) *corev3.HeaderValueOption {
	o := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, RawValue: []byte(value)}}
	if appendField != nil {
		//lint:ignore SA1019 contract §4 uses the deprecated append field on purpose.
		o.Append = wrapperspb.Bool(*appendField)
	}
	return o
}

var yes, no = true, false

func start(t *testing.T, f *fakeServer, cfg Config) *Envoy {
	t.Helper()
	return New(Serve(t, f), cfg)
}

func headersOf(hm *corev3.HeaderMap) Headers {
	var hs Headers
	for _, h := range hm.GetHeaders() {
		hs = append(hs, Header{Key: h.GetKey(), Value: string(h.GetRawValue())})
	}
	return hs
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestContinueAll(t *testing.T) {
	f := &fakeServer{reply: continueAll}
	envoy := start(t, f, Config{})
	req := Request{
		Method: "POST", Authority: "api.example.com", Path: "/items?x=1",
		Headers: Headers{{Key: "Origin", Value: "https://app.example.com"}, {Key: "accept", Value: "a"}, {Key: "accept", Value: "b"}},
	}
	upstream := func(got Request) Response {
		return Response{Status: 201, Headers: Headers{{Key: "Vary", Value: "Accept"}, {Key: "x-up", Value: "1"}}}
	}
	res, err := envoy.Do(context.Background(), Route{Name: "items"}, req, upstream)
	if err != nil {
		t.Fatal(err)
	}
	if !res.UpstreamCalled || !res.ResponsePhaseSent || res.Answered || res.Messages != 2 || res.ClosedByServer {
		t.Errorf("unexpected result %+v", res)
	}
	// The router adds x-envoy-upstream-service-time after the upstream's headers (recorded on
	// every pinned release, deploy/testdata/envoy-recordings).
	wantResp := Response{Status: 201, Headers: Headers{{Key: "vary", Value: "Accept"}, {Key: "x-up", Value: "1"}, {Key: "x-envoy-upstream-service-time", Value: "1"}}}
	if !reflect.DeepEqual(res.Response, wantResp) {
		t.Errorf("response %+v, want %+v", res.Response, wantResp)
	}
	if v, _ := res.UpstreamRequest.Get("origin"); v != "https://app.example.com" || res.UpstreamRequest.Scheme != "https" {
		t.Errorf("upstream request %+v", res.UpstreamRequest)
	}

	st := f.only(t)
	if st.end != io.EOF {
		t.Errorf("stream ended with %v for the server, want io.EOF (CloseSend)", st.end)
	}
	if len(st.msgs) != 2 {
		t.Fatalf("server got %d messages", len(st.msgs))
	}
	first, second := st.msgs[0], st.msgs[1]
	rh := first.GetRequestHeaders()
	if rh == nil || !rh.GetEndOfStream() {
		t.Fatalf("first message %v, want request_headers with end_of_stream", first)
	}
	// As recorded from every pinned Envoy: the pseudo-headers in the HTTP/1.1 codec's order
	// (not :method first, as this test said before), the client's headers, then what the
	// connection manager adds: x-forwarded-proto and a fresh x-request-id.
	wantHeaders := Headers{{Key: ":authority", Value: "api.example.com"}, {Key: ":path", Value: "/items?x=1"}, {Key: ":method", Value: "POST"},
		{Key: ":scheme", Value: "https"}, {Key: "origin", Value: "https://app.example.com"}, {Key: "accept", Value: "a"}, {Key: "accept", Value: "b"},
		{Key: "x-forwarded-proto", Value: "https"}, {Key: "x-request-id", Value: "(a UUID)"}}
	got := headersOf(rh.GetHeaders())
	if len(got) == len(wantHeaders) && uuidRE.MatchString(got[len(got)-1].Value) {
		got[len(got)-1].Value = "(a UUID)"
	}
	if !reflect.DeepEqual(got, wantHeaders) {
		t.Errorf("request headers %v, want %v", got, wantHeaders)
	}
	for _, h := range append(rh.GetHeaders().GetHeaders(), second.GetResponseHeaders().GetHeaders().GetHeaders()...) {
		if h.GetValue() != "" {
			t.Errorf("header %q has value %q; Envoy sends raw_value only", h.GetKey(), h.GetValue())
		}
	}
	if first.GetProtocolConfig() == nil || second.GetProtocolConfig() != nil {
		t.Errorf("protocol_config on first %v, second %v; want first only", first.GetProtocolConfig(), second.GetProtocolConfig())
	}
	if first.GetAttributes()[filterName] == nil || len(second.GetAttributes()) != 0 {
		t.Errorf("attributes on first %v, second %v; want first only", first.GetAttributes(), second.GetAttributes())
	}
	if first.GetMetadataContext() == nil || first.GetObservabilityMode() {
		t.Errorf("metadata_context %v, observability_mode %v", first.GetMetadataContext(), first.GetObservabilityMode())
	}
	wantResp2 := Headers{{Key: ":status", Value: "201"}, {Key: "vary", Value: "Accept"}, {Key: "x-up", Value: "1"}, {Key: "x-envoy-upstream-service-time", Value: "1"}}
	if got := headersOf(second.GetResponseHeaders().GetHeaders()); !reflect.DeepEqual(got, wantResp2) ||
		!second.GetResponseHeaders().GetEndOfStream() {
		t.Errorf("response_headers %v (end %v), want %v", got, second.GetResponseHeaders().GetEndOfStream(), wantResp2)
	}
}

func TestBodiesClearEndOfStream(t *testing.T) {
	f := &fakeServer{reply: continueAll}
	envoy := start(t, f, Config{})
	_, err := envoy.Do(context.Background(), Route{}, Request{Body: true},
		func(Request) Response { return Response{Body: true} })
	if err != nil {
		t.Fatal(err)
	}
	st := f.only(t)
	if st.msgs[0].GetRequestHeaders().GetEndOfStream() || st.msgs[1].GetResponseHeaders().GetEndOfStream() {
		t.Error("end_of_stream true on a message with a body")
	}
}

func TestRequestValidation(t *testing.T) {
	envoy := start(t, &fakeServer{reply: continueAll}, Config{})
	for _, hs := range []Headers{{{Key: "host", Value: "x"}}, {{Key: ":path", Value: "/"}}, {{Key: "", Value: "x"}}} {
		if _, err := envoy.Do(context.Background(), Route{}, Request{Headers: hs}, nil); err == nil {
			t.Errorf("request headers %v accepted", hs)
		}
	}
}

func TestAttributesAndGRPCMetadata(t *testing.T) {
	route := Route{
		Name:                "r1",
		Metadata:            envoyfilter.Metadata("cors", map[string]any{"origins": []string{"https://a.test"}, "max_age": 600}),
		VirtualHostMetadata: envoyfilter.Metadata("cors", map[string]any{"credentials": true}),
		GRPCMetadata:        map[string]string{"x-cors-policy": `{"origins":["*"]}`},
	}
	for _, format := range []envoyfilter.MetadataFormat{envoyfilter.OneLine, envoyfilter.MultiLine, envoyfilter.Debug1370, envoyfilter.OneLineTrailingSpace} {
		t.Run(format.String(), func(t *testing.T) {
			f := &fakeServer{reply: continueAll}
			envoy := start(t, f, Config{MetadataFormat: format})
			if _, err := envoy.Do(context.Background(), route, Request{}, nil); err != nil {
				t.Fatal(err)
			}
			st := f.only(t)
			attrs := st.msgs[0].GetAttributes()[filterName].GetFields()
			wantRoute, _ := envoyfilter.MetadataText(route.Metadata, format)
			wantVHost, _ := envoyfilter.MetadataText(route.VirtualHostMetadata, format)
			if attrs[envoyfilter.AttrRouteMetadata].GetStringValue() != wantRoute ||
				attrs[envoyfilter.AttrVirtualHostMetadata].GetStringValue() != wantVHost ||
				attrs[envoyfilter.AttrRouteName].GetStringValue() != "r1" || len(attrs) != 3 {
				t.Errorf("attributes %v", attrs)
			}
			if got := st.md.Get("x-cors-policy"); len(got) != 1 || got[0] != `{"origins":["*"]}` {
				t.Errorf("x-cors-policy metadata %v", got)
			}
			// What Envoy's gRPC client sends on every stream (recorded).
			if got := st.md.Get("x-envoy-internal"); len(got) != 1 || got[0] != "true" || len(st.md.Get("x-forwarded-for")) != 1 {
				t.Errorf("gRPC metadata %v: want x-envoy-internal and x-forwarded-for", st.md)
			}
		})
	}
}

func TestAttributesWithoutMetadataOrRoute(t *testing.T) {
	f := &fakeServer{reply: continueAll}
	envoy := start(t, f, Config{})
	ctx := context.Background()
	if _, err := envoy.Do(ctx, Route{}, Request{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := envoy.Do(ctx, Route{Unmatched: true}, Request{}, nil); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// A matched route without metadata: every attribute present, as empty text.
	attrs := f.streams[0].msgs[0].GetAttributes()[filterName].GetFields()
	if len(attrs) != 3 || attrs[envoyfilter.AttrRouteMetadata].GetStringValue() != "" || attrs[envoyfilter.AttrRouteName] == nil {
		t.Errorf("attributes of a route without metadata: %v", attrs)
	}
	// No route: the Struct is there, but empty.
	if attrs := f.streams[1].msgs[0].GetAttributes()[filterName]; attrs == nil || len(attrs.GetFields()) != 0 {
		t.Errorf("attributes without a route: %v", attrs)
	}
}

func TestHeaderMutations(t *testing.T) {
	reqM := &extprocv3.HeaderMutation{
		RemoveHeaders: []string{"x-gone", "x-reset", "host", ":path"},
		SetHeaders: []*corev3.HeaderValueOption{
			set("x-reset", "new", nil),          // removed first, then set
			set("accept", "c", &no),             // replaces both accept fields
			set("x-added", "1", &yes),           // append to nothing: added
			set(":path", "/rewritten", nil),     // :path may change
			set(":authority", "evil.test", nil), // ignored
			set(":method", "DELETE", nil),       // ignored
			set("x-envoy-original", "x", nil),   // ignored
			set("x-empty", "", nil),             // an empty value is fine
			{Header: nil},                       // skipped
		},
	}
	overwrite := set("vary", "Origin", &yes)
	overwrite.AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD // ignored
	respM := &extprocv3.HeaderMutation{
		RemoveHeaders: []string{"access-control-allow-origin"},
		SetHeaders: []*corev3.HeaderValueOption{
			overwrite,
			set("access-control-allow-origin", "https://a.test", nil),
			set(":status", "299", nil),
			set(":status", "99", nil), // below 200: ignored
		},
	}
	f := &fakeServer{reply: mutating(reqM, respM)}
	envoy := start(t, f, Config{})
	// The client's x-request-id: Envoy's connection manager keeps it and adds only
	// x-forwarded-proto.
	req := Request{Path: "/p", Headers: Headers{{Key: "accept", Value: "a"}, {Key: "x-gone", Value: "1"}, {Key: "accept", Value: "b"}, {Key: "x-reset", Value: "old"}, {Key: "x-request-id", Value: "id"}}}
	upstream := func(Request) Response {
		return Response{Headers: Headers{{Key: "vary", Value: "Accept"}, {Key: "access-control-allow-origin", Value: "*"}}}
	}
	res, err := envoy.Do(context.Background(), Route{}, req, upstream)
	if err != nil {
		t.Fatal(err)
	}
	wantReq := Request{Method: "GET", Scheme: "https", Authority: "example.com", Path: "/rewritten",
		Headers: Headers{{Key: "x-request-id", Value: "id"}, {Key: "x-forwarded-proto", Value: "https"}, {Key: "x-reset", Value: "new"}, {Key: "accept", Value: "c"}, {Key: "x-added", Value: "1"}, {Key: "x-empty", Value: ""}}}
	if !reflect.DeepEqual(res.UpstreamRequest, wantReq) {
		t.Errorf("upstream request\n got %+v\nwant %+v", res.UpstreamRequest, wantReq)
	}
	// vary is an inline header in Envoy: the appended value joins the upstream's.
	wantResp := Response{Status: 299, Headers: Headers{{Key: "vary", Value: "Accept,Origin"}, {Key: "x-envoy-upstream-service-time", Value: "1"},
		{Key: "access-control-allow-origin", Value: "https://a.test"}}}
	if !reflect.DeepEqual(res.Response, wantResp) {
		t.Errorf("response\n got %+v\nwant %+v", res.Response, wantResp)
	}
	if got := res.Response.Values("Vary"); !reflect.DeepEqual(got, []string{"Accept,Origin"}) {
		t.Errorf("Values(Vary) = %v", got)
	}
}

func TestBadMutations(t *testing.T) {
	valueOnly := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x-a", Value: "v"}}
	both := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x-a", Value: "v", RawValue: []byte("v")}}
	tooMany := &extprocv3.HeaderMutation{}
	for i := 0; i < 101; i++ {
		tooMany.SetHeaders = append(tooMany.SetHeaders, set(fmt.Sprintf("x-%d", i), "v", &yes))
	}
	cases := map[string]*extprocv3.HeaderMutation{
		"value only":        {SetHeaders: []*corev3.HeaderValueOption{valueOnly}},
		"value and raw":     {SetHeaders: []*corev3.HeaderValueOption{both}},
		"upper-case key":    {SetHeaders: []*corev3.HeaderValueOption{set("Vary", "Origin", &yes)}},
		"upper-case remove": {RemoveHeaders: []string{"Vary"}},
		"invalid key":       {SetHeaders: []*corev3.HeaderValueOption{set("x a", "v", nil)}},
		"invalid value":     {SetHeaders: []*corev3.HeaderValueOption{set("x-a", "v\r\nx-b: w", nil)}},
		"empty key":         {SetHeaders: []*corev3.HeaderValueOption{set("", "v", nil)}},
		"foreign pseudo":    {SetHeaders: []*corev3.HeaderValueOption{set(":path", "/", nil)}},
		"too many":          tooMany,
	}
	for name, m := range cases {
		t.Run(name, func(t *testing.T) {
			envoy := start(t, &fakeServer{reply: mutating(nil, m)}, Config{})
			res, err := envoy.Do(context.Background(), Route{}, Request{}, nil)
			if !errors.Is(err, ErrContract) {
				t.Fatalf("error %v, want ErrContract", err)
			}
			if res.Response.Status != 500 || !res.UpstreamCalled {
				t.Errorf("result %+v, want a 500 after the upstream", res)
			}
		})
	}
	t.Run("request phase", func(t *testing.T) {
		m := &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{valueOnly}}
		envoy := start(t, &fakeServer{reply: mutating(m, nil)}, Config{})
		res, err := envoy.Do(context.Background(), Route{}, Request{}, nil)
		if !errors.Is(err, ErrContract) || res.Response.Status != 500 || res.UpstreamCalled {
			t.Errorf("result %+v, %v; want 500 without upstream", res, err)
		}
	})
}

func TestWrongReplyKind(t *testing.T) {
	cases := map[string]func(*extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse{
		"response_headers to request_headers": func(*extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
			return respHeadersReply(nil)
		},
		"no oneof": func(*extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
			return &extprocv3.ProcessingResponse{}
		},
		"request_headers to response_headers": func(*extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
			return reqHeadersReply(nil)
		},
	}
	for name, reply := range cases {
		t.Run(name, func(t *testing.T) {
			envoy := start(t, &fakeServer{reply: reply}, Config{})
			res, err := envoy.Do(context.Background(), Route{}, Request{}, nil)
			if !errors.Is(err, ErrContract) || res.Response.Status != 500 {
				t.Errorf("result %+v, %v; want 500 and ErrContract", res, err)
			}
		})
	}
}

func TestSecondReply(t *testing.T) {
	reply := func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		if m.GetRequestHeaders() != nil {
			return reqHeadersReply(&extprocv3.CommonResponse{})
		}
		return respHeadersReply(nil)
	}
	f := &fakeServer{process: func(s extprocv3.ExternalProcessor_ProcessServer) error {
		for {
			m, err := s.Recv()
			if err != nil {
				return nil
			}
			r := reply(m)
			if err := s.Send(r); err != nil {
				return err
			}
			if m.GetResponseHeaders() != nil {
				if err := s.Send(r); err != nil { // once too often
					return err
				}
			}
		}
	}}
	envoy := start(t, f, Config{})
	if _, err := envoy.Do(context.Background(), Route{}, Request{}, nil); !errors.Is(err, ErrContract) {
		t.Errorf("error %v, want ErrContract for a second reply", err)
	}
}

func TestModeOverride(t *testing.T) {
	skip := func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		r := continueAll(m)
		r.ModeOverride = &procmodev3.ProcessingMode{ResponseHeaderMode: procmodev3.ProcessingMode_SKIP}
		return r
	}
	for _, allow := range []bool{true, false} {
		t.Run(fmt.Sprint("allow=", allow), func(t *testing.T) {
			f := &fakeServer{reply: skip}
			envoy := start(t, f, Config{AllowModeOverride: allow})
			res, err := envoy.Do(context.Background(), Route{}, Request{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.ResponsePhaseSent == allow || res.Messages != map[bool]int{true: 1, false: 2}[allow] {
				t.Errorf("result %+v with AllowModeOverride %v", res, allow)
			}
		})
	}
	t.Run("default response mode sends", func(t *testing.T) {
		f := &fakeServer{reply: func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
			r := continueAll(m)
			r.ModeOverride = &procmodev3.ProcessingMode{RequestHeaderMode: procmodev3.ProcessingMode_SKIP}
			return r
		}}
		res, err := start(t, f, Config{AllowModeOverride: true}).Do(context.Background(), Route{}, Request{}, nil)
		if err != nil || !res.ResponsePhaseSent {
			t.Errorf("result %+v, %v; want the response phase", res, err)
		}
	})
	// A field of mode_override left at DEFAULT keeps the filter's configured mode and drops a
	// route's own, as every pinned release does (deploy: the recordings and
	// TestRealEnvoyModeOverrideDefault).
	skipMode := &procmodev3.ProcessingMode{ResponseHeaderMode: procmodev3.ProcessingMode_SKIP}
	sendMode := &procmodev3.ProcessingMode{ResponseHeaderMode: procmodev3.ProcessingMode_SEND}
	for _, c := range []struct {
		name                 string
		filter, route, reply *procmodev3.ProcessingMode
		responsePhase        bool
	}{
		{"route skips", nil, skipMode, nil, false},
		{"route skips, override at DEFAULT", nil, skipMode, &procmodev3.ProcessingMode{}, true},
		{"filter skips", skipMode, nil, nil, false},
		{"filter skips, override at DEFAULT", skipMode, nil, &procmodev3.ProcessingMode{}, false},
		{"filter skips, override sends", skipMode, nil, sendMode, true},
		{"filter skips, route sends", skipMode, sendMode, nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeServer{reply: func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				r := continueAll(m)
				r.ModeOverride = c.reply
				return r
			}}
			envoy := start(t, f, Config{AllowModeOverride: true, ProcessingMode: c.filter})
			res, err := envoy.Do(context.Background(), Route{ProcessingMode: c.route}, Request{}, nil)
			if err != nil || res.ResponsePhaseSent != c.responsePhase || res.Messages != map[bool]int{false: 1, true: 2}[c.responsePhase] {
				t.Errorf("result %+v, %v; want the response phase %v", res, err, c.responsePhase)
			}
		})
	}
	t.Run("body mode not played", func(t *testing.T) {
		f := &fakeServer{reply: func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
			r := continueAll(m)
			r.ModeOverride = &procmodev3.ProcessingMode{ResponseBodyMode: procmodev3.ProcessingMode_BUFFERED}
			return r
		}}
		_, err := start(t, f, Config{AllowModeOverride: true}).Do(context.Background(), Route{}, Request{},
			func(Request) Response { return Response{Body: true} })
		if !errors.Is(err, ErrUnsupported) {
			t.Errorf("error %v, want ErrUnsupported", err)
		}
	})
}

func TestImmediateResponse(t *testing.T) {
	cases := []struct {
		name   string
		status *typev3.HttpStatus
		want   int
	}{
		{"204", &typev3.HttpStatus{Code: typev3.StatusCode_NoContent}, 204},
		{"unset", nil, 200},
		{"below 200", &typev3.HttpStatus{Code: typev3.StatusCode_Continue}, 200},
		{"403", &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}, 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeServer{reply: func(*extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
				return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
					ImmediateResponse: &extprocv3.ImmediateResponse{
						Status: c.status,
						Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
							set("access-control-allow-origin", "https://a.test", nil),
							set("vary", "Origin", nil),
						}},
					}}}
			}}
			envoy := start(t, f, Config{})
			called := false
			res, err := envoy.Do(context.Background(), Route{}, Request{Method: "OPTIONS"},
				func(Request) Response { called = true; return Response{} })
			if err != nil {
				t.Fatal(err)
			}
			want := Response{Status: c.want, Headers: Headers{{Key: "access-control-allow-origin", Value: "https://a.test"}, {Key: "vary", Value: "Origin"}}}
			if !reflect.DeepEqual(res.Response, want) || !res.Answered || called || res.UpstreamCalled ||
				res.ResponsePhaseSent || res.Messages != 1 {
				t.Errorf("result %+v, upstream called %v", res, called)
			}
			if n := len(f.only(t).msgs); n != 1 {
				t.Errorf("server got %d messages, want 1", n)
			}
		})
	}
}

func TestObservabilityMode(t *testing.T) {
	t.Run("silent server", func(t *testing.T) {
		f := &fakeServer{reply: func(*extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse { return nil }}
		envoy := start(t, f, Config{ObservabilityMode: true, EndStream: Reset})
		res, err := envoy.Do(context.Background(), Route{}, Request{},
			func(Request) Response { return Response{Status: 202, Headers: Headers{{Key: "x", Value: "y"}}} })
		if err != nil {
			t.Fatal(err)
		}
		if res.Response.Status != 202 || !res.UpstreamCalled || !res.ResponsePhaseSent || res.Messages != 2 {
			t.Errorf("result %+v", res)
		}
		st := f.only(t)
		if len(st.msgs) != 2 || !st.msgs[0].GetObservabilityMode() || !st.msgs[1].GetObservabilityMode() {
			t.Errorf("messages %v, want two with observability_mode", st.msgs)
		}
	})
	t.Run("replying server", func(t *testing.T) {
		envoy := start(t, &fakeServer{reply: continueAll}, Config{ObservabilityMode: true})
		res, err := envoy.Do(context.Background(), Route{}, Request{}, nil)
		if !errors.Is(err, ErrContract) {
			t.Errorf("error %v, want ErrContract", err)
		}
		if res.Response.Status != 200 {
			t.Errorf("response %+v, want the upstream's unmodified", res.Response)
		}
	})
}

func TestTimeout(t *testing.T) {
	f := &fakeServer{reply: func(*extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse { return nil }}
	envoy := start(t, f, Config{MessageTimeout: 30 * time.Millisecond})
	begin := time.Now()
	res, err := envoy.Do(context.Background(), Route{}, Request{}, nil)
	if !errors.Is(err, ErrTimeout) || res.Response.Status != 504 || res.UpstreamCalled {
		t.Errorf("result %+v, %v; want 504 and ErrTimeout", res, err)
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("timeout took %v", d)
	}
	if end := f.only(t).end; status.Code(end) != codes.Canceled {
		t.Errorf("server saw %v, want the stream cancelled", end)
	}
}

func TestOverrideMessageTimeoutIgnored(t *testing.T) {
	f := &fakeServer{reply: func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		return &extprocv3.ProcessingResponse{OverrideMessageTimeout: durationpb.New(time.Minute)}
	}}
	envoy := start(t, f, Config{MessageTimeout: 30 * time.Millisecond})
	if _, err := envoy.Do(context.Background(), Route{}, Request{}, nil); !errors.Is(err, ErrTimeout) {
		t.Errorf("error %v, want ErrTimeout", err)
	}
}

func TestGRPCError(t *testing.T) {
	f := &fakeServer{process: func(s extprocv3.ExternalProcessor_ProcessServer) error {
		if _, err := s.Recv(); err != nil {
			return err
		}
		return status.Error(codes.Internal, "boom")
	}}
	envoy := start(t, f, Config{})
	res, err := envoy.Do(context.Background(), Route{}, Request{}, nil)
	if !errors.Is(err, ErrStreamFailed) || res.Response.Status != 500 || res.UpstreamCalled {
		t.Errorf("result %+v, %v; want 500 and ErrStreamFailed", res, err)
	}
	if status.Code(err) != codes.Internal {
		t.Errorf("status %v, want Internal", status.Code(err))
	}
}

func TestServerClosesEarly(t *testing.T) {
	for _, phase := range []string{"request", "response"} {
		t.Run(phase, func(t *testing.T) {
			f := &fakeServer{process: func(s extprocv3.ExternalProcessor_ProcessServer) error {
				if _, err := s.Recv(); err != nil || phase == "request" {
					return err
				}
				if err := s.Send(reqHeadersReply(nil)); err != nil {
					return err
				}
				_, err := s.Recv()
				return err
			}}
			envoy := start(t, f, Config{})
			res, err := envoy.Do(context.Background(), Route{}, Request{},
				func(Request) Response { return Response{Status: 418} })
			if err != nil {
				t.Fatal(err)
			}
			if !res.ClosedByServer || !res.UpstreamCalled || res.Response.Status != 418 || res.Answered {
				t.Errorf("result %+v; want the request to go on unprocessed", res)
			}
			if phase == "request" && res.ResponsePhaseSent {
				t.Error("response_headers sent after the server closed the stream")
			}
		})
	}
}

func TestLocalReply(t *testing.T) {
	f := &fakeServer{reply: mutating(nil, &extprocv3.HeaderMutation{
		SetHeaders: []*corev3.HeaderValueOption{set("x-seen", "1", nil)},
	})}
	envoy := start(t, f, Config{})
	res, err := envoy.LocalReply(context.Background(), Route{Name: "r"}, Response{Status: 503, Headers: Headers{{Key: "x-a", Value: "b"}}})
	if err != nil {
		t.Fatal(err)
	}
	want := Response{Status: 503, Headers: Headers{{Key: "x-a", Value: "b"}, {Key: "x-seen", Value: "1"}}}
	if !reflect.DeepEqual(res.Response, want) || res.Messages != 1 || res.UpstreamCalled || !res.ResponsePhaseSent {
		t.Errorf("result %+v", res)
	}
	st := f.only(t)
	m := st.msgs[0]
	if m.GetResponseHeaders() == nil || m.GetProtocolConfig() == nil || len(m.GetAttributes()) != 0 {
		t.Errorf("first message %v; want response_headers with protocol_config and no attributes", m)
	}
}

// Envoy 1.36 sends local replies to no ext_proc server; 1.37 on send them (recorded,
// deploy/testdata/envoy-recordings), a router's without x-envoy-upstream-service-time.
func TestLocalReplies(t *testing.T) {
	local := func(Request) Response {
		return Response{Status: 503, Local: true, Body: true, Headers: Headers{{Key: "content-type", Value: "text/plain"}}}
	}
	for _, skip := range []bool{false, true} {
		t.Run(fmt.Sprint("skip=", skip), func(t *testing.T) {
			f := &fakeServer{reply: continueAll}
			envoy := start(t, f, Config{SkipLocalReplies: skip})
			res, err := envoy.Do(context.Background(), Route{}, Request{}, local)
			if err != nil {
				t.Fatal(err)
			}
			if res.UpstreamCalled || res.ResponsePhaseSent == skip || res.Messages != map[bool]int{false: 2, true: 1}[skip] {
				t.Errorf("router's local reply: result %+v", res)
			}
			want := Response{Status: 503, Local: true, Body: true, Headers: Headers{{Key: "content-type", Value: "text/plain"}}}
			if !reflect.DeepEqual(res.Response, want) {
				t.Errorf("router's local reply: response %+v, want %+v", res.Response, want)
			}
			res, err = envoy.LocalReply(context.Background(), Route{}, Response{Status: 403})
			if err != nil {
				t.Fatal(err)
			}
			if res.Response.Status != 403 || res.ResponsePhaseSent == skip || res.Messages != map[bool]int{false: 1, true: 0}[skip] {
				t.Errorf("a filter's local reply: result %+v", res)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.streams) != map[bool]int{false: 2, true: 1}[skip] {
				t.Errorf("%d streams", len(f.streams))
			}
		})
	}
}

func TestForRelease(t *testing.T) {
	for version, want := range map[string]Config{
		"1.36.4": {MetadataFormat: envoyfilter.OneLine, SkipLocalReplies: true},
		"1.37.0": {MetadataFormat: envoyfilter.Debug1370},
		"1.38.3": {MetadataFormat: envoyfilter.OneLineTrailingSpace},
		"1.40.0": {MetadataFormat: envoyfilter.OneLineTrailingSpace},
		"1.41.2": {MetadataFormat: envoyfilter.OneLineTrailingSpace},
	} {
		got, err := Config{AllowModeOverride: true}.ForRelease(version)
		want.AllowModeOverride = true
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ForRelease(%s) = %+v, %v; want %+v", version, got, err, want)
		}
	}
	for _, version := range []string{"1.35.0", "1.37.1", "2.0.0", "1.40"} {
		if _, err := (Config{}).ForRelease(version); err == nil {
			t.Errorf("ForRelease(%s): no error", version)
		}
	}
}

func TestEndStyles(t *testing.T) {
	for _, c := range []struct {
		style EndStyle
		want  func(error) bool
	}{
		{CloseSend, func(err error) bool { return err == io.EOF }},
		{Reset, func(err error) bool { return status.Code(err) == codes.Canceled }},
	} {
		f := &fakeServer{reply: continueAll}
		envoy := start(t, f, Config{EndStream: c.style})
		if _, err := envoy.Do(context.Background(), Route{}, Request{}, nil); err != nil {
			t.Fatal(err)
		}
		if end := f.only(t).end; !c.want(end) {
			t.Errorf("end style %v: server saw %v", c.style, end)
		}
	}
}

func TestConcurrentDo(t *testing.T) {
	echo := func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		if rh := m.GetRequestHeaders(); rh != nil {
			id, _ := headersOf(rh.GetHeaders()).Get("x-id")
			return reqHeadersReply(&extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
				SetHeaders: []*corev3.HeaderValueOption{set("x-echo", id, nil)},
			}})
		}
		return respHeadersReply(nil)
	}
	envoy := start(t, &fakeServer{reply: echo}, Config{MessageTimeout: 5 * time.Second})
	const n = 500
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprint(i)
			res, err := envoy.Do(context.Background(), Route{Name: id}, Request{Headers: Headers{{Key: "x-id", Value: id}}},
				func(r Request) Response {
					v, _ := r.Get("x-echo")
					return Response{Headers: Headers{{Key: "x-echo", Value: v}}}
				})
			if err != nil {
				errs <- err
				return
			}
			if v, _ := res.Response.Get("x-echo"); v != id {
				errs <- fmt.Errorf("request %s got x-echo %q", id, v)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestContextCancelled(t *testing.T) {
	f := &fakeServer{reply: func(*extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse { return nil }}
	envoy := start(t, f, Config{MessageTimeout: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := envoy.Do(ctx, Route{}, Request{}, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want the context's", err)
	}
}

func TestRequestAttributesConfig(t *testing.T) {
	f := &fakeServer{reply: continueAll}
	envoy := start(t, f, Config{RequestAttributes: []string{}})
	if _, err := envoy.Do(context.Background(), Route{Name: "r"}, Request{}, nil); err != nil {
		t.Fatal(err)
	}
	if attrs := f.only(t).msgs[0].GetAttributes(); attrs != nil {
		t.Errorf("attributes %v with none configured", attrs)
	}
	defer func() {
		if recover() == nil {
			t.Error("New accepted an attribute it does not play")
		}
	}()
	New(Serve(t, f), Config{RequestAttributes: []string{"request.path"}})
}

// Dynamic metadata in replies reaches the request's metadata only for receiving namespaces, as
// structs, merged field by field across replies.
func TestDynamicMetadata(t *testing.T) {
	st := func(fields map[string]any) *structpb.Value {
		return structpb.NewStructValue(envoyfilter.Struct(fields))
	}
	f := &fakeServer{reply: func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		r := continueAll(m)
		if m.GetRequestHeaders() != nil {
			r.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{
				"cors-extproc": st(map[string]any{"decision": "actual", "origin": "allowed"}),
				"other":        st(map[string]any{"x": "y"}),
				"scalar":       structpb.NewStringValue("dropped"),
			}}
		} else {
			r.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{
				"cors-extproc": st(map[string]any{"origin": "rejected", "phase": "response"}),
			}}
		}
		return r
	}}
	envoy := start(t, f, Config{ReceivingNamespaces: []string{"cors-extproc", "scalar"}})
	res, err := envoy.Do(context.Background(), Route{}, Request{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*structpb.Struct{"cors-extproc": envoyfilter.Struct(map[string]any{
		"decision": "actual", "origin": "rejected", "phase": "response"})}
	if len(res.DynamicMetadata) != 1 || !proto.Equal(res.DynamicMetadata["cors-extproc"], want["cors-extproc"]) {
		t.Fatalf("dynamic metadata %v, want %v", res.DynamicMetadata, want)
	}
}
