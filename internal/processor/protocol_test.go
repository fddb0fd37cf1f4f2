package processor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
	"github.com/cors-extproc/cors-extproc/internal/envoytest"
	"github.com/cors-extproc/cors-extproc/internal/policy"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// testMessageTimeout replaces Envoy's 200 ms per-message timeout in tests that do not test the
// timeout itself: under the race detector on a shared 2-core machine one exchange can take
// longer, which says nothing about the behaviour under test.
const testMessageTimeout = 5 * time.Second

func newEnvoy(t *testing.T, opts Options, cfg envoytest.Config) (*envoytest.Envoy, *Server) {
	t.Helper()
	if cfg.MessageTimeout == 0 {
		cfg.MessageTimeout = testMessageTimeout
	}
	srv, err := New(opts)
	require.NoError(t, err)
	return envoytest.New(envoytest.Serve(t, srv), cfg), srv
}

func corsRoute(fields map[string]any) envoytest.Route {
	return envoytest.Route{Name: "api", Metadata: envoyfilter.Metadata("cors", fields)}
}

var (
	actualFromApp = envoytest.Request{Headers: envoytest.Headers{{Key: "origin", Value: app}}}
	preflightApp  = envoytest.Request{Method: "OPTIONS", Headers: envoytest.Headers{
		{Key: "origin", Value: app}, {Key: "access-control-request-method", Value: "PUT"}}}
	appOnly = map[string]any{"origins": []string{app, other}}
)

// The first channel that names a policy wins, whole (contract section 3).
func TestLookupOrder(t *testing.T) {
	named, _, err := policy.ParseNamed([]byte(`
gateway: {origins: ["https://gateway.test", "https://x.test"]}
fallback: {origins: ["https://default.test", "https://x.test"]}
`))
	require.NoError(t, err)
	envoy, _ := newEnvoy(t, Options{Policies: named, DefaultPolicy: "fallback"}, envoytest.Config{AllowModeOverride: true})

	route := func(o string) map[string]any { return map[string]any{"origins": []string{o, "https://x.test"}} }
	grpcMeta := map[string]string{"x-cors-policy": `{"origins":["https://grpc.test","https://x.test"]}`}
	cases := []struct {
		name   string
		route  envoytest.Route
		origin string // the only one of the candidates the winning policy allows
	}{
		{"grpc metadata beats route metadata", envoytest.Route{GRPCMetadata: grpcMeta,
			Metadata: envoyfilter.Metadata("cors", route("https://route.test"))}, "https://grpc.test"},
		{"route namespace beats route Envoy Gateway annotation", envoytest.Route{
			Metadata: envoyfilter.MetadataNamespaces(map[string]map[string]any{
				"cors": route("https://route.test"), "envoy-gateway": envoyGatewayMetadata("gateway")})}, "https://route.test"},
		{"route beats virtual host", envoytest.Route{Metadata: envoyfilter.Metadata("cors", route("https://route.test")),
			VirtualHostMetadata: envoyfilter.Metadata("cors", route("https://vhost.test"))}, "https://route.test"},
		{"route Envoy Gateway annotation beats virtual host", envoytest.Route{
			Metadata:            envoyfilter.Metadata("envoy-gateway", envoyGatewayMetadata("gateway")),
			VirtualHostMetadata: envoyfilter.Metadata("cors", route("https://vhost.test"))}, "https://gateway.test"},
		{"virtual host beats default", envoytest.Route{
			VirtualHostMetadata: envoyfilter.Metadata("cors", route("https://vhost.test"))}, "https://vhost.test"},
		{"default when nothing names a policy", envoytest.Route{
			Metadata: envoyfilter.Metadata("other", route("https://route.test"))}, "https://default.test"},
	}
	candidates := []string{"https://grpc.test", "https://route.test", "https://gateway.test", "https://vhost.test", "https://default.test"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, o := range candidates {
				res, err := envoy.Do(testCtx(t), tc.route, envoytest.Request{Headers: envoytest.Headers{{Key: "origin", Value: o}}}, nil)
				require.NoError(t, err)
				acao, granted := res.Response.Get("access-control-allow-origin")
				if o == tc.origin {
					assert.Equal(t, o, acao, o)
				} else {
					assert.False(t, granted, "%s must not be granted, got %q", o, acao)
				}
			}
		})
	}
}

// A route without a policy is not a CORS route: CONTINUE, and the response phase is skipped
// (contract section 3, item 6, and section 4).
func TestNoPolicyIsNotCORS(t *testing.T) {
	for _, allow := range []bool{true, false} {
		t.Run(fmt.Sprintf("allow_mode_override=%v", allow), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			envoy, srv := newEnvoy(t, Options{Registerer: reg}, envoytest.Config{AllowModeOverride: allow})
			for _, route := range []envoytest.Route{{}, {Unmatched: true}, {Metadata: envoyfilter.Metadata("other", map[string]any{"a": 1})}} {
				res, err := envoy.Do(testCtx(t), route, preflightApp, func(envoytest.Request) envoytest.Response {
					return envoytest.Response{Status: 200, Headers: envoytest.Headers{{Key: "access-control-allow-origin", Value: "*"}}}
				})
				require.NoError(t, err)
				assert.True(t, res.UpstreamCalled)
				assert.Equal(t, allow == false, res.ResponsePhaseSent, "mode_override honoured only when allowed")
				assert.Equal(t, []string{"*"}, res.Response.Values("access-control-allow-origin"), "untouched")
			}
			assert.Equal(t, 3.0, testutil.ToFloat64(srv.metrics.decisions[decisionNotCORS]))
		})
	}
}

// With allow_mode_override off Envoy still sends response_headers after a pass decision; the
// server answers it with an empty CONTINUE (contract section 4).
func TestPassWithoutModeOverride(t *testing.T) {
	envoy, _ := newEnvoy(t, Options{}, envoytest.Config{})
	res, err := envoy.Do(testCtx(t), corsRoute(map[string]any{"origins": []string{app, other}, "preflight_continue": true}),
		preflightApp, func(envoytest.Request) envoytest.Response {
			return envoytest.Response{Status: 200, Headers: envoytest.Headers{{Key: "access-control-allow-origin", Value: "https://up.test"}}}
		})
	require.NoError(t, err)
	assert.True(t, res.ResponsePhaseSent)
	assert.Equal(t, []string{"https://up.test"}, res.Response.Values("access-control-allow-origin"))
}

// In observability mode the server sends nothing (envoytest fails a reply), but the decision is
// still counted.
func TestObservabilityMode(t *testing.T) {
	reg := prometheus.NewRegistry()
	envoy, srv := newEnvoy(t, Options{Registerer: reg}, envoytest.Config{ObservabilityMode: true})
	for _, req := range []envoytest.Request{preflightApp, actualFromApp} {
		res, err := envoy.Do(testCtx(t), corsRoute(appOnly), req, nil)
		require.NoError(t, err)
		assert.False(t, res.Answered)
		_, granted := res.Response.Get("access-control-allow-origin")
		assert.False(t, granted)
	}
	assert.Equal(t, 1.0, testutil.ToFloat64(srv.metrics.decisions[decisionPreflightAnswered]))
	assert.Equal(t, 1.0, testutil.ToFloat64(srv.metrics.decisions[decisionActual]))
}

// A local reply from a filter before ext_proc reaches the server as the stream's first
// message: CONTINUE, nothing changed (contract section 1).
func TestLocalReplyFirst(t *testing.T) {
	envoy, _ := newEnvoy(t, Options{}, envoytest.Config{AllowModeOverride: true})
	res, err := envoy.LocalReply(testCtx(t), corsRoute(appOnly), envoytest.Response{Status: 401,
		Headers: envoytest.Headers{{Key: "www-authenticate", Value: "Bearer"}}})
	require.NoError(t, err)
	assert.Equal(t, 401, res.Response.Status)
	assert.Equal(t, envoytest.Headers{{Key: "www-authenticate", Value: "Bearer"}}, res.Response.Headers)
}

// The stream ends quietly whichever way Envoy ends it.
func TestStreamEndStyles(t *testing.T) {
	for _, end := range []envoytest.EndStyle{envoytest.CloseSend, envoytest.Reset} {
		reg := prometheus.NewRegistry()
		envoy, srv := newEnvoy(t, Options{Registerer: reg}, envoytest.Config{AllowModeOverride: true, EndStream: end})
		for i := 0; i < 5; i++ {
			_, err := envoy.Do(testCtx(t), corsRoute(appOnly), actualFromApp, nil)
			require.NoError(t, err)
		}
		// The server notices the end after Do returns; give it time to count an error.
		assert.Never(t, func() bool { return testutil.ToFloat64(srv.metrics.streamErrors) > 0 },
			200*time.Millisecond, 10*time.Millisecond, "end style %d", end)
	}
}

// A broken policy on one route must not touch another route (semantics section 10), and is
// logged and counted once however many requests hit it.
func TestUnusablePolicyIsolatedAndLoggedOnce(t *testing.T) {
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	envoy, srv := newEnvoy(t, Options{Registerer: reg, Logger: slog.New(slog.NewJSONHandler(&logs, nil))},
		envoytest.Config{AllowModeOverride: true})
	broken := envoytest.Route{Name: "broken-route", Metadata: envoyfilter.Metadata("cors",
		map[string]any{"origins": []string{"https://(bad"}, "max_age": -5})}
	good := corsRoute(appOnly)

	for i := 0; i < 3; i++ {
		res, err := envoy.Do(testCtx(t), broken, preflightApp, nil)
		require.NoError(t, err)
		assert.Equal(t, 403, res.Response.Status)
		assert.Empty(t, res.Response.Headers)

		res, err = envoy.Do(testCtx(t), good, preflightApp, nil)
		require.NoError(t, err)
		assert.Equal(t, 204, res.Response.Status)
		assert.Equal(t, []string{app}, res.Response.Values("access-control-allow-origin"))

		res, err = envoy.Do(testCtx(t), broken, envoytest.Request{}, nil)
		require.NoError(t, err)
		assert.Equal(t, 200, res.Response.Status, "same-origin traffic keeps working")
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	require.Len(t, lines, 1, logs.String())
	assert.Contains(t, lines[0], `"route":"broken-route"`)
	assert.Contains(t, lines[0], `origins[0] \"https://(bad\": invalid regex`)
	assert.Contains(t, lines[0], `max_age`)
	assert.Equal(t, 1.0, testutil.ToFloat64(srv.metrics.policyErrors.WithLabelValues("route-metadata")))
}

// Each distinct source is compiled once; later requests hit the cache.
func TestPolicyCompiledOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	envoy, srv := newEnvoy(t, Options{Registerer: reg}, envoytest.Config{AllowModeOverride: true})
	for i := 0; i < 10; i++ {
		_, err := envoy.Do(testCtx(t), corsRoute(appOnly), actualFromApp, nil)
		require.NoError(t, err)
	}
	assert.Equal(t, 1.0, testutil.ToFloat64(srv.metrics.cacheMisses))
	assert.Equal(t, 9.0, testutil.ToFloat64(srv.metrics.cacheHits))
	assert.Equal(t, 1.0, testutil.ToFloat64(srv.metrics.cacheEntries.WithLabelValues("metadata-text")))
}

// The cache never holds more than its bound.
func TestPolicyCacheBound(t *testing.T) {
	reg := prometheus.NewRegistry()
	envoy, srv := newEnvoy(t, Options{Registerer: reg, CacheSize: 4}, envoytest.Config{AllowModeOverride: true})
	for i := 0; i < 20; i++ {
		o := fmt.Sprintf("https://%d.test", i)
		res, err := envoy.Do(testCtx(t), corsRoute(map[string]any{"origins": []string{o, other}}),
			envoytest.Request{Headers: envoytest.Headers{{Key: "origin", Value: o}}}, nil)
		require.NoError(t, err)
		assert.Equal(t, []string{o}, res.Response.Values("access-control-allow-origin"))
	}
	assert.Equal(t, 4.0, testutil.ToFloat64(srv.metrics.cacheEntries.WithLabelValues("metadata-text")))
	assert.Len(t, srv.set.Load().textCache.entries, 4)
}

// Envoy multiplexes many streams on one connection; each keeps its own request state.
func TestConcurrentStreams(t *testing.T) {
	envoy, _ := newEnvoy(t, Options{}, envoytest.Config{AllowModeOverride: true, MessageTimeout: 5 * time.Second})
	const streams = 500
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := fmt.Sprintf("https://s%d.example.com", i)
			route := corsRoute(map[string]any{"origins": []string{"https://*.example.com", "https://x.test"}})
			res, err := envoy.Do(context.Background(), route, envoytest.Request{Headers: envoytest.Headers{{Key: "origin", Value: o}}}, nil)
			if err != nil {
				errs <- err
				return
			}
			if got, _ := res.Response.Get("access-control-allow-origin"); got != o {
				errs <- fmt.Errorf("stream %d: ACAO %q, want %q", i, got, o)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Text Envoy could send but that does not parse is an unusable policy for its route; the
// 1.37.0 debug token is stripped (contract section 3).
func TestMetadataText(t *testing.T) {
	resolver := Resolver{Namespace: "cors"}
	for _, tc := range []struct {
		name, text string
		found      bool
		usable     bool
	}{
		{"one line", `filter_metadata { key: "cors" value { fields { key: "origins" value { list_value { values { string_value: "*" } } } } } }`, true, true},
		{"debug token", "goo.gle/debugstr   filter_metadata {\n  key: \"cors\"\n  value {\n  }\n}\n", true, true},
		{"other namespace only", `filter_metadata { key: "lua" value { } }`, false, false},
		{"garbage", `filter_metadata { key: "cors" value {`, true, false},
		{"debug token alone (Envoy 1.37.0's empty metadata)", "goo.gle/debugproto ", false, false},
		{"debug token as Envoy 1.37.0 sends it", `goo.gle/debugproto  filter_metadata { key: "cors" value { fields { key: "credentials" value { bool_value: true } } } }`, true, true},
		{"unknown field ignored", `some_future_field: 3 filter_metadata { key: "cors" value { } }`, true, true},
		{"typed metadata of an unknown type", `filter_metadata { key: "cors" value { } } typed_filter_metadata { key: "other.filter" value { [type.googleapis.com/acme.Unknown] { level: 3 name: "x" } } }`, true, true},
		{"typed metadata of a known type", `typed_filter_metadata { key: "x" value { [type.googleapis.com/google.protobuf.StringValue] { value: "v" } } } filter_metadata { key: "cors" value { } }`, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := resolver.MetadataText(tc.text)
			assert.Equal(t, tc.found, r.Found)
			if tc.found {
				assert.Equal(t, tc.usable, r.Policy.Err() == nil, "policy error: %v", r.Policy.Err())
			}
		})
	}
}

func TestNewRejectsUnknownDefault(t *testing.T) {
	_, err := New(Options{DefaultPolicy: "nope"})
	require.EqualError(t, err, `default policy "nope" is not in the named-policy file`)
}

// Header values are read from raw_value, falling back to value only when raw_value is empty
// (contract section 2); the first of repeated fields counts.
func TestReadRequest(t *testing.T) {
	r := ReadRequest([]*corev3.HeaderValue{
		{Key: ":method", RawValue: []byte("OPTIONS")},
		{Key: "origin", Value: "https://legacy.test"},
		{Key: "origin", RawValue: []byte("https://second.test")},
		{Key: "access-control-request-method", RawValue: []byte("")},
		{Key: "access-control-request-headers", RawValue: []byte("x-a")},
		{Key: "access-control-request-headers", RawValue: []byte("x-b")},
		{Key: "access-control-request-private-network", RawValue: []byte("true")},
	})
	assert.Equal(t, policy.Request{Method: "OPTIONS", Origin: "https://legacy.test", HasRequestMethod: true,
		RequestHeaders: "x-a", RequestPrivateNetwork: "true"}, r)
}

// A reload swaps the named-policy set whole: refs resolve against the new file at once (the
// old compiled sources are dropped), and a set lacking the default policy is refused.
func TestSetPolicies(t *testing.T) {
	parse := func(yaml string) map[string]*policy.Policy {
		named, _, err := policy.ParseNamed([]byte(yaml))
		require.NoError(t, err)
		return named
	}
	envoy, srv := newEnvoy(t, Options{Policies: parse(`p: {origins: ["https://old.test", "https://x.test"]}`), DefaultPolicy: "p"},
		envoytest.Config{AllowModeOverride: true})
	route := envoytest.Route{Metadata: envoyfilter.Metadata("cors", map[string]any{"ref": "p"})}
	granted := func(origin string) bool {
		res, err := envoy.Do(testCtx(t), route, envoytest.Request{Headers: envoytest.Headers{{Key: "origin", Value: origin}}}, nil)
		require.NoError(t, err)
		_, ok := res.Response.Get("access-control-allow-origin")
		return ok
	}
	assert.True(t, granted("https://old.test"))

	require.NoError(t, srv.SetPolicies(parse(`p: {origins: ["https://new.test", "https://x.test"]}`)))
	assert.False(t, granted("https://old.test"))
	assert.True(t, granted("https://new.test"))

	require.EqualError(t, srv.SetPolicies(parse(`q: {}`)), `default policy "p" is not in the named-policy file`)
	assert.True(t, granted("https://new.test"), "a refused set changes nothing")
}

// Report-only mode, by server option or policy field: the decision is counted as in enforcing
// mode, but the request and response pass untouched and the response phase is skipped.
func TestReportOnly(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   Options
		fields map[string]any
	}{
		{"server option", Options{ReportOnly: true}, map[string]any{"origins": []string{app, other}}},
		{"policy field", Options{}, map[string]any{"origins": []string{app, other}, "report_only": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Registerer = prometheus.NewRegistry()
			envoy, srv := newEnvoy(t, tc.opts, envoytest.Config{AllowModeOverride: true})
			upstream := func(envoytest.Request) envoytest.Response {
				return envoytest.Response{Status: 200, Headers: envoytest.Headers{{Key: "access-control-allow-origin", Value: "*"}}}
			}
			for _, req := range []envoytest.Request{preflightApp, {Headers: envoytest.Headers{{Key: "origin", Value: evil}}}} {
				res, err := envoy.Do(testCtx(t), corsRoute(tc.fields), req, upstream)
				require.NoError(t, err)
				assert.False(t, res.Answered)
				assert.False(t, res.ResponsePhaseSent)
				assert.Equal(t, envoytest.Headers{{Key: "access-control-allow-origin", Value: "*"},
					{Key: "x-envoy-upstream-service-time", Value: "1"}}, res.Response.Headers) // the router's own
			}
			assert.Equal(t, 1.0, testutil.ToFloat64(srv.metrics.decisions[decisionPreflightAnswered]))
			assert.Equal(t, 1.0, testutil.ToFloat64(srv.metrics.originRejected))
		})
	}
}

// Each decision reaches Envoy's dynamic metadata, for its access log; nothing is sent without a
// namespace.
func TestDynamicMetadata(t *testing.T) {
	named, _, err := policy.ParseNamed([]byte(`spa: {origins: ["https://app.example.com", "https://*.example.com"]}`))
	require.NoError(t, err)
	envoy, _ := newEnvoy(t, Options{Policies: named, DynamicMetadataNamespace: "cors-extproc"},
		envoytest.Config{AllowModeOverride: true, ReceivingNamespaces: []string{"cors-extproc"}})
	ref := envoytest.Route{Metadata: envoyfilter.Metadata("cors", map[string]any{"ref": "spa"})}
	inline := corsRoute(map[string]any{"origins": []string{"https://*.example.com", "https://x.test"}, "report_only": true})
	broken := corsRoute(map[string]any{"origins": "https://x.test"})
	for _, tc := range []struct {
		name  string
		route envoytest.Route
		req   envoytest.Request
		want  map[string]any
	}{
		{"preflight answered", ref, preflightApp, map[string]any{
			"decision": "preflight_answered", "origin": "allowed", "matched": app, "policy": "spa", "report_only": false}},
		{"actual by wildcard", ref, envoytest.Request{Headers: envoytest.Headers{{Key: "origin", Value: "https://b.example.com"}}}, map[string]any{
			"decision": "actual", "origin": "allowed", "matched": "https://*.example.com", "policy": "spa", "report_only": false}},
		{"rejected, report only", inline, envoytest.Request{Headers: envoytest.Headers{{Key: "origin", Value: evil}}}, map[string]any{
			"decision": "actual", "origin": "rejected", "policy": "filter_metadata.cors", "report_only": true}},
		{"no origin", ref, envoytest.Request{}, map[string]any{
			"decision": "actual", "origin": "absent", "policy": "spa", "report_only": false}},
		{"unusable policy", broken, preflightApp, map[string]any{
			"decision": "unusable_policy", "origin": "rejected", "policy": "filter_metadata.cors", "report_only": false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := envoy.Do(testCtx(t), tc.route, tc.req, nil)
			require.NoError(t, err)
			require.Contains(t, res.DynamicMetadata, "cors-extproc")
			assert.Equal(t, tc.want, res.DynamicMetadata["cors-extproc"].AsMap())
		})
	}

	plain, _ := newEnvoy(t, Options{}, envoytest.Config{AllowModeOverride: true, ReceivingNamespaces: []string{"cors-extproc"}})
	res, err := plain.Do(testCtx(t), corsRoute(appOnly), preflightApp, nil)
	require.NoError(t, err)
	assert.Nil(t, res.DynamicMetadata)
}

// Each limit holds at its bound; one byte past it the behaviour is the unusable policy's,
// counted and logged (the header limit at most once every logEvery).
func TestLimitsAtTheBound(t *testing.T) {
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	envoy, srv := newEnvoy(t, Options{Registerer: reg, Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
		Limits: Limits{MaxSourceBytes: 200, MaxHeaderValueBytes: 64}}, envoytest.Config{AllowModeOverride: true})

	padded := func(n int) string { // a valid x-cors-policy value of exactly n bytes
		base := `{"origins":["https://app.example.com","https://x.test"],"headers":"x-`
		return base + strings.Repeat("a", n-len(base)-2) + `"}`
	}
	viaGRPC := func(policyJSON string) envoytest.Route {
		return envoytest.Route{GRPCMetadata: map[string]string{"x-cors-policy": policyJSON}}
	}
	res, err := envoy.Do(testCtx(t), viaGRPC(padded(200)), preflightApp, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{app}, res.Response.Values("access-control-allow-origin"), "a source at the bound is used")
	res, err = envoy.Do(testCtx(t), viaGRPC(padded(201)), preflightApp, nil)
	require.NoError(t, err)
	assert.Equal(t, 403, res.Response.Status, "a source over the bound is an unusable policy")
	assert.Equal(t, 1.0, testutil.ToFloat64(srv.metrics.limitsExceeded[limitPolicyBytes]))
	for key := range srv.set.Load().jsonCache.entries {
		assert.LessOrEqual(t, len(key), 201, "no oversized key is cached")
	}

	origin := func(n int) string { return "https://" + strings.Repeat("a", n-len("https://.test")) + ".test" }
	route := corsRoute(map[string]any{"credentials": true})
	res, err = envoy.Do(testCtx(t), route, envoytest.Request{Headers: envoytest.Headers{{Key: "origin", Value: origin(64)}}}, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{origin(64)}, res.Response.Values("access-control-allow-origin"), "an Origin at the bound is echoed")
	for i := 0; i < 3; i++ {
		res, err = envoy.Do(testCtx(t), route, envoytest.Request{Headers: envoytest.Headers{{Key: "origin", Value: origin(65)}}},
			func(envoytest.Request) envoytest.Response {
				return envoytest.Response{Status: 200, Headers: envoytest.Headers{{Key: "access-control-allow-origin", Value: "*"}}}
			})
		require.NoError(t, err)
		assert.Empty(t, res.Response.Values("access-control-allow-origin"), "an Origin over the bound is granted nothing")
	}
	res, err = envoy.Do(testCtx(t), route, envoytest.Request{Method: "OPTIONS", Headers: envoytest.Headers{{Key: "origin", Value: app},
		{Key: "access-control-request-method", Value: "GET"}, {Key: "access-control-request-headers", Value: strings.Repeat("x", 65)}}}, nil)
	require.NoError(t, err)
	assert.Equal(t, 403, res.Response.Status, "an oversized access-control-request-headers is never echoed")
	assert.Equal(t, 4.0, testutil.ToFloat64(srv.metrics.limitsExceeded[limitHeaderValue]))
	assert.Equal(t, 1, strings.Count(logs.String(), "request header value over the limit"), logs.String())
}

// A request over the header limit is reported to the access log as what it is: a decision of
// the stand-in unusable policy.
func TestDynamicMetadataOverLimit(t *testing.T) {
	envoy, _ := newEnvoy(t, Options{DynamicMetadataNamespace: "cors-extproc", Limits: Limits{MaxHeaderValueBytes: 32}},
		envoytest.Config{AllowModeOverride: true, ReceivingNamespaces: []string{"cors-extproc"}})
	res, err := envoy.Do(testCtx(t), corsRoute(appOnly), envoytest.Request{Method: "OPTIONS", Headers: envoytest.Headers{
		{Key: "origin", Value: app}, {Key: "access-control-request-method", Value: strings.Repeat("X", 33)}}}, nil)
	require.NoError(t, err)
	assert.Equal(t, 403, res.Response.Status)
	assert.Equal(t, "unusable_policy", res.DynamicMetadata["cors-extproc"].AsMap()["decision"])
}

// The response headers go to Envoy as metadata in both modes (docs/envoy-extproc.md section 7):
// beside the decision when they share its namespace, in their own otherwise; one Struct per
// distinct result, shared by the replies that carry it, the map bounded by CacheSize.
func TestHeadersMetadata(t *testing.T) {
	route := corsRoute(map[string]any{"origins": []string{app, "https://*.example.com"}, "credentials": true, "exposed_headers": "x-a, x-b"})
	fromOrigin := func(o string) envoytest.Request {
		return envoytest.Request{Headers: envoytest.Headers{{Key: "origin", Value: o}}}
	}
	for _, mode := range []Mode{ModeTwoPhase, ModeOneTrip} {
		t.Run(mode.String(), func(t *testing.T) {
			envoy, srv := newEnvoy(t, Options{Mode: mode, HeadersNamespace: "cors-extproc", DynamicMetadataNamespace: "cors-extproc", CacheSize: 2},
				envoytest.Config{AllowModeOverride: true, ReceivingNamespaces: []string{"cors-extproc"}})
			res, err := envoy.Do(testCtx(t), route, fromOrigin(app), nil)
			require.NoError(t, err)
			assert.Equal(t, map[string]any{
				"decision": "actual", "origin": "allowed", "matched": app, "policy": "filter_metadata.cors", "report_only": false,
				"access-control-allow-origin": app, "access-control-allow-credentials": "true",
				"access-control-expose-headers": "x-a,x-b", "vary": "Origin",
			}, res.DynamicMetadata["cors-extproc"].AsMap())
			assert.Equal(t, mode == ModeTwoPhase, res.ResponsePhaseSent)

			res, err = envoy.Do(testCtx(t), route, fromOrigin(evil), nil)
			require.NoError(t, err)
			assert.Equal(t, map[string]any{
				"decision": "actual", "origin": "rejected", "policy": "filter_metadata.cors", "report_only": false,
				"access-control-allow-credentials": "true", "access-control-expose-headers": "x-a,x-b", "vary": "Origin",
			}, res.DynamicMetadata["cors-extproc"].AsMap(), "a rejected Origin: no ACAO")
			assert.True(t, res.ResponsePhaseSent, "only the response phase removes an upstream ACAO")

			for _, o := range []string{"https://a.example.com", "https://b.example.com", "https://c.example.com"} {
				_, err = envoy.Do(testCtx(t), route, fromOrigin(o), nil)
				require.NoError(t, err)
				assert.LessOrEqual(t, len(srv.headers.structs), 2, "bounded by CacheSize")
			}
		})
	}

	// In a namespace of their own, without the decision's.
	envoy, srv := newEnvoy(t, Options{Mode: ModeOneTrip, HeadersNamespace: "cors-headers"},
		envoytest.Config{AllowModeOverride: true, ReceivingNamespaces: []string{"cors-headers"}})
	res, err := envoy.Do(testCtx(t), corsRoute(map[string]any{}), fromOrigin(app), nil)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"access-control-allow-origin": "*"}, res.DynamicMetadata["cors-headers"].AsMap())
	require.Len(t, srv.headers.structs, 1)
	for _, st := range srv.headers.structs {
		_, err = envoy.Do(testCtx(t), corsRoute(map[string]any{}), fromOrigin(evil), nil)
		require.NoError(t, err)
		require.Len(t, srv.headers.structs, 1, "the same headers: the same Struct")
		assert.Same(t, st, srv.headers.structs[headersKey{allowOrigin: "*"}])
	}

	_, err = New(Options{Mode: ModeOneTrip})
	require.EqualError(t, err, "mode one-trip needs a namespace for the response headers' metadata")
}

// MetadataTextSize measures metadata as Envoy prints it on one line (the contract's example),
// so that validate's --max-policy-bytes judges a route as the server does (deploy's
// TestRealEnvoyMetadataTextSize holds it to every pinned Envoy).
func TestMetadataTextSize(t *testing.T) {
	for _, text := range []string{
		`filter_metadata { key: "cors" value { fields { key: "origins" value { list_value { values { string_value: "https://app.example.com" } } } } fields { key: "credentials" value { bool_value: true } } } }`,
		`filter_metadata { key: "cors" value { fields { key: "ref" value { string_value: "spa" } } } } filter_metadata { key: "lua" value { } }`,
	} {
		var md corev3.Metadata
		require.NoError(t, unmarshalMetadataText(text, &md))
		assert.Equal(t, len(text), MetadataTextSize(&md), text)
	}
}

// --max-policy-bytes bounds route metadata as it reads on one line, whatever Envoy puts around
// it or however many lines it prints it on: a route at the bound works under every form.
func TestMetadataSourceLimitIgnoresEnvoysForm(t *testing.T) {
	fields := map[string]any{"origins": []string{app}}
	md := envoyfilter.Metadata("cors", fields)
	size := MetadataTextSize(md)
	for _, format := range []envoyfilter.MetadataFormat{envoyfilter.OneLine, envoyfilter.MultiLine, envoyfilter.Debug1370} {
		for _, limit := range []int{size, size - 1} {
			envoy, _ := newEnvoy(t, Options{Limits: Limits{MaxSourceBytes: limit}},
				envoytest.Config{AllowModeOverride: true, MetadataFormat: format})
			res, err := envoy.Do(testCtx(t), envoytest.Route{Name: "r", Metadata: md}, preflightApp, nil)
			require.NoError(t, err)
			if limit == size {
				assert.Equal(t, 204, res.Response.Status, "format %v, limit %d: at the bound", format, limit)
			} else {
				assert.Equal(t, 403, res.Response.Status, "format %v, limit %d: over the bound", format, limit)
			}
		}
	}
}

// The debug line of each decision names the route and where its policy came from: the channel,
// and the named policy where there is one.
func TestDecisionLogNamesRouteAndSource(t *testing.T) {
	var logs bytes.Buffer
	spa, _, err := policy.ParseNamed([]byte("spa: {origins: [\"" + app + "\"]}\n"))
	require.NoError(t, err)
	envoy, _ := newEnvoy(t, Options{Policies: spa, DefaultPolicy: "spa",
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))},
		envoytest.Config{AllowModeOverride: true})
	for _, tc := range []struct {
		route                 envoytest.Route
		channel, policy, name string
	}{
		{corsRoute(appOnly), "route-metadata", "", "api"},
		{envoytest.Route{Name: "ref", Metadata: envoyfilter.Metadata("cors", map[string]any{"ref": "spa"})}, "route-metadata", "spa", "ref"},
		{envoytest.Route{Name: "vh", VirtualHostMetadata: envoyfilter.Metadata("cors", map[string]any{"ref": "spa"})}, "virtual-host-metadata", "spa", "vh"},
		{envoytest.Route{Name: "grpc", GRPCMetadata: map[string]string{"x-cors-policy": `{"origins": ["*"]}`}}, "grpc-metadata", "", "grpc"},
		{envoytest.Route{Name: "none"}, "default-policy", "spa", "none"},
	} {
		logs.Reset()
		_, err := envoy.Do(testCtx(t), tc.route, actualFromApp, nil)
		require.NoError(t, err)
		var line map[string]any
		require.NoError(t, json.Unmarshal(logs.Bytes(), &line), logs.String())
		assert.Equal(t, "cors decision", line["msg"])
		assert.Equal(t, tc.name, line["route"], tc.channel)
		assert.Equal(t, tc.channel, line["channel"], tc.name)
		assert.Equal(t, tc.policy, line["policy_ref"], tc.name)
	}
}

// Every metric series the README lists exists at zero before the first request, so that rates
// and alerts see the first error.
func TestMetricsExistAtStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, err := New(Options{Registerer: reg})
	require.NoError(t, err)
	for _, want := range []string{
		`cors_extproc_policy_errors_total{channel="grpc-metadata"} 0`,
		`cors_extproc_policy_errors_total{channel="route-metadata"} 0`,
		`cors_extproc_policy_errors_total{channel="virtual-host-metadata"} 0`,
		`cors_extproc_policy_cache_entries{cache="json"} 0`,
		`cors_extproc_policy_cache_entries{cache="metadata-text"} 0`,
		`cors_extproc_limits_exceeded_total{limit="header_value"} 0`,
		`cors_extproc_decisions_total{kind="not_cors"} 0`,
	} {
		name, _, _ := strings.Cut(want, "{")
		assert.Contains(t, gather(t, reg, name), want)
	}
}

// gather renders the named metric of reg in the text format.
func gather(t *testing.T, reg *prometheus.Registry, name string) string {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	var b strings.Builder
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			fmt.Fprintf(&b, "%s{%s} %g\n", name, strings.Join(labels, ","), v)
		}
	}
	return b.String()
}
