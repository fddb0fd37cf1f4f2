package processor

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/cors-extproc/cors-extproc/internal/envoytest"
	"github.com/cors-extproc/cors-extproc/internal/policy"
)

// codecReplies are real replies of the processor: every kind it sends, with immediate
// responses, header mutations with removal and the append flag, and mode_override.
func codecReplies(t testing.TB) map[string]*extprocv3.ProcessingResponse {
	t.Helper()
	compile := func(fields map[string]any) *policy.Policy {
		p, _, err := policy.Compile(fields)
		require.NoError(t, err)
		return p
	}
	full := compile(map[string]any{"origins": []any{app, other}, "headers": []any{"content-type"},
		"exposed_headers": []any{"x-total"}, "credentials": true, "max_age": 600.0, "private_network": true})
	star := compile(map[string]any{"origins": []any{"*"}})
	preflight := policy.Request{Method: "OPTIONS", Origin: app, RequestMethod: "PUT", HasRequestMethod: true,
		RequestHeaders: "content-type", RequestPrivateNetwork: "true"}
	answer := full.Decide(&preflight)
	require.Equal(t, policy.ActionAnswer, answer.Action)
	rejected := full.Decide(&policy.Request{Method: "OPTIONS", Origin: "https://evil.test", RequestMethod: "PUT", HasRequestMethod: true})
	unusable := policy.Unusable(assert.AnError).Decide(&preflight)
	actual := policy.Request{Method: "GET", Origin: app}
	fullActual, starActual := full.Decide(&actual), star.Decide(&actual)
	decorateVary := full.Decorate(&fullActual, false)
	require.True(t, decorateVary.AppendVary)
	decorateStar := star.Decorate(&starActual, true)
	return map[string]*extprocv3.ProcessingResponse{
		"preflight answered":        immediateResponse(&answer),
		"preflight rejected":        immediateResponse(&rejected),
		"unusable policy 403":       immediateResponse(&unusable),
		"continue request":          replyContinueRequest,
		"continue and skip":         replyContinueAndSkip,
		"decorate with vary append": continueResponse(&decorateVary),
		"decorate star":             continueResponse(&decorateStar),
		"response continue":         replyContinueResponse,
		"request body":              replyRequestBody,
		"response body":             replyResponseBody,
		"request trailers":          replyRequestTrailers,
		"response trailers":         replyResponseTrailers,
		// Not shared: encoded, not sent as stored bytes, and left to proto.Marshal for the
		// order of its fields.
		"continue and skip, built": {
			Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{
				Response: &extprocv3.CommonResponse{}}},
			ModeOverride: proto.Clone(replyContinueAndSkip.GetModeOverride()).(*extprocfilterv3.ProcessingMode),
		},
	}
}

// A reply at or above gRPC's pooling threshold is encoded into a pooled buffer, identically.
func TestCodecLargeReply(t *testing.T) {
	value := make([]byte, 4096)
	for i := range value {
		value[i] = 'a'
	}
	reply := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
		ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{
			HeaderMutation: &extprocv3.HeaderMutation{RemoveHeaders: []string{string(value)}}}}}}
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(reply)
	require.NoError(t, err)
	got, err := Codec{}.Marshal(reply)
	require.NoError(t, err)
	defer got.Free()
	assert.True(t, bytes.Equal(want, got.Materialize()), "pooled encoding differs")
}

// Other messages (health, reflection) and split input buffers go the standard way.
func TestCodecOtherMessages(t *testing.T) {
	msg := &grpc_health_v1.HealthCheckResponse{Status: grpc_health_v1.HealthCheckResponse_SERVING}
	got, err := Codec{}.Marshal(msg)
	require.NoError(t, err)
	want, err := proto.Marshal(msg)
	require.NoError(t, err)
	assert.Equal(t, want, got.Materialize())

	var back grpc_health_v1.HealthCheckResponse
	split := mem.BufferSlice{mem.SliceBuffer(want[:1]), mem.SliceBuffer(want[1:])}
	require.NoError(t, Codec{}.Unmarshal(split, &back))
	assert.True(t, proto.Equal(msg, &back))

	_, err = Codec{}.Marshal("not a message")
	assert.Error(t, err)
	assert.Error(t, Codec{}.Unmarshal(split, new(int)))
}

// A server with the codec plays the protocol as before.
func TestCodecServer(t *testing.T) {
	srv, err := New(Options{})
	require.NoError(t, err)
	envoy := envoytest.New(envoytest.Serve(t, srv, grpc.ForceServerCodecV2(Codec{})), envoytest.Config{AllowModeOverride: true})
	res, err := envoy.Do(testCtx(t), corsRoute(appOnly), preflightApp, nil)
	require.NoError(t, err)
	assert.True(t, res.Answered)
	assert.Equal(t, []string{app}, res.Response.Values("access-control-allow-origin"))

	res, err = envoy.Do(testCtx(t), corsRoute(appOnly), actualFromApp, nil)
	require.NoError(t, err)
	assert.True(t, res.ResponsePhaseSent)
	assert.Equal(t, []string{app}, res.Response.Values("access-control-allow-origin"))
	assert.Equal(t, []string{"Origin"}, res.Response.Values("vary"))
}
