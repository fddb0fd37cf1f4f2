package processor

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
	"github.com/cors-extproc/cors-extproc/internal/envoytest"
)

// corsHeaders are the response fields the behaviour table asserts; any of them not listed in a
// case's want must be absent.
var corsHeaders = []string{
	"access-control-allow-origin", "access-control-allow-credentials", "access-control-allow-methods",
	"access-control-allow-headers", "access-control-expose-headers", "access-control-max-age",
	"access-control-allow-private-network", "vary",
}

// kv is one header field in the tables.
type kv = [2]string

// upstreamResponse is what the simulated upstream answers (status 0 is 200).
type upstreamResponse struct {
	status  int
	headers []kv
}

// behaviourCase is one HTTP exchange through Envoy and the server, end to end.
type behaviourCase struct {
	name     string
	policy   string // JSON object
	method   string // default GET
	headers  []kv   // request headers
	upstream upstreamResponse
	// status and want describe what the browser gets: want maps each field of corsHeaders to
	// all its values in order.
	status int
	want   map[string][]string
	// answered: the server answered at once and the upstream was not called.
	answered bool
	// skipped: the response phase was skipped through mode_override.
	skipped bool
}

const (
	app   = "https://app.example.com"
	evil  = "https://evil.example.net"
	other = "https://other.example.com"
)

var behaviourCases = []behaviourCase{
	// Semantics section 7 with section 4.1: allow all.
	{name: "allow-all preflight", policy: `{}`, method: "OPTIONS",
		headers: []kv{{"origin", app}, {"access-control-request-method", "PUT"}, {"access-control-request-headers", "x-a, x-b"}},
		status:  204, answered: true, want: map[string][]string{
			"access-control-allow-origin":  {"*"},
			"access-control-allow-methods": {"GET,HEAD,PUT,PATCH,POST,DELETE"},
			"access-control-allow-headers": {"x-a, x-b"},
		}},
	{name: "allow-all actual", policy: `{"origins":["*"]}`, headers: []kv{{"origin", app}},
		status: 200, want: map[string][]string{"access-control-allow-origin": {"*"}}},
	{name: "allow-all without origin", policy: `{}`,
		status: 200, want: map[string][]string{"access-control-allow-origin": {"*"}}},
	// Semantics section 4.3: a single literal is sent whatever the Origin.
	{name: "single literal, other origin", policy: `{"origins":["https://app.example.com"]}`,
		headers: []kv{{"origin", evil}},
		status:  200, want: map[string][]string{"access-control-allow-origin": {app}, "vary": {"Origin"}}},
	// Semantics sections 4.2 and 8: Vary beside the upstream's, never doubled.
	{name: "list match keeps upstream vary", policy: `{"origins":["https://other.example.com","https://app.example.com:443"]}`,
		headers:  []kv{{"origin", app}},
		upstream: upstreamResponse{200, []kv{{"vary", "Accept-Encoding"}}},
		status:   200, want: map[string][]string{"access-control-allow-origin": {app}, "vary": {"Accept-Encoding,Origin"}}},
	{name: "upstream vary already lists origin", policy: `{"origins":["https://other.example.com","https://app.example.com"]}`,
		headers:  []kv{{"origin", app}},
		upstream: upstreamResponse{200, []kv{{"vary", "accept-encoding, origin"}}},
		status:   200, want: map[string][]string{"access-control-allow-origin": {app}, "vary": {"accept-encoding, origin"}}},
	// Semantics section 4.5: a rejected origin loses the upstream's ACAO.
	{name: "rejected origin strips upstream ACAO", policy: `{"origins":["https://other.example.com","https://app.example.com"]}`,
		headers:  []kv{{"origin", evil}},
		upstream: upstreamResponse{200, []kv{{"access-control-allow-origin", "*"}}},
		status:   200, want: map[string][]string{"vary": {"Origin"}}},
	{name: "regex and wildcard subdomain", policy: `{"origins":["https://*.example.com","^https://api[0-9]+\\.test$"]}`,
		headers: []kv{{"origin", "https://a.b.example.com"}},
		status:  200, want: map[string][]string{"access-control-allow-origin": {"https://a.b.example.com"}, "vary": {"Origin"}}},
	{name: "comma-joined origin never matches", policy: `{"origins":["https://*.example.com","https://x.test"]}`,
		headers: []kv{{"origin", app + ", " + other}},
		status:  200, want: map[string][]string{"vary": {"Origin"}}},
	{name: "first of repeated origins counts", policy: `{"origins":["https://other.example.com","https://app.example.com"]}`,
		headers: []kv{{"origin", app}, {"origin", evil}},
		status:  200, want: map[string][]string{"access-control-allow-origin": {app}, "vary": {"Origin"}}},
	// Semantics sections 5 and 8: credentials, exposed headers.
	{name: "credentials and exposed headers", policy: `{"origins":["https://app.example.com","https://other.example.com"],"credentials":true,"exposed_headers":"x-total, x-page"}`,
		headers:  []kv{{"origin", app}},
		upstream: upstreamResponse{200, []kv{{"access-control-expose-headers", "x-upstream"}}},
		status:   200, want: map[string][]string{
			"access-control-allow-origin":      {app},
			"access-control-allow-credentials": {"true"},
			"access-control-expose-headers":    {"x-total,x-page"},
			"vary":                             {"Origin"},
		}},
	{name: "credentials with allow-all echo null origin", policy: `{"credentials":true}`,
		headers: []kv{{"origin", "null"}},
		status:  200, want: map[string][]string{
			"access-control-allow-origin":      {"null"},
			"access-control-allow-credentials": {"true"},
			"vary":                             {"Origin"},
		}},
	{name: "credentials with allow-all without origin varies", policy: `{"credentials":true}`,
		status: 200, want: map[string][]string{
			"access-control-allow-origin": {"*"},
			"vary":                        {"Origin"},
		}},
	// Semantics section 2: Envoy joins two Origin headers with a comma; the value is never echoed.
	{name: "credentials with allow-all never echo a joined origin", policy: `{"credentials":true}`,
		headers: []kv{{"origin", app + ", " + evil}},
		status:  200, want: map[string][]string{
			"access-control-allow-origin": {"*"},
			"vary":                        {"Origin"},
		}},
	// Semantics section 7: every preflight field.
	{name: "full preflight", policy: `{"origins":["https://app.example.com","https://other.example.com"],"methods":["GET","PUT"],"headers":["x-a","content-type"],"credentials":true,"max_age":600,"private_network":true,"preflight_status":200}`,
		method: "OPTIONS", headers: []kv{{"origin", app}, {"access-control-request-method", "PUT"},
			{"access-control-request-headers", "x-ignored"}, {"access-control-request-private-network", "true"}},
		status: 200, answered: true, want: map[string][]string{
			"access-control-allow-origin":          {app},
			"vary":                                 {"Origin"},
			"access-control-allow-credentials":     {"true"},
			"access-control-allow-headers":         {"x-a,content-type"},
			"access-control-allow-methods":         {"GET,PUT"},
			"access-control-max-age":               {"600"},
			"access-control-allow-private-network": {"true"},
		}},
	{name: "preflight from rejected origin still answered", policy: `{"origins":["https://app.example.com","https://other.example.com"],"methods":[]}`,
		method: "OPTIONS", headers: []kv{{"origin", evil}, {"access-control-request-method", "PUT"}},
		status: 204, answered: true, want: map[string][]string{"vary": {"Origin"}}},
	// Semantics section 6.
	{name: "preflight_continue goes upstream untouched", policy: `{"origins":["https://app.example.com","https://x.test"],"preflight_continue":true}`,
		method: "OPTIONS", headers: []kv{{"origin", app}, {"access-control-request-method", "PUT"}},
		upstream: upstreamResponse{200, []kv{{"access-control-allow-origin", "*"}}},
		status:   200, skipped: true, want: map[string][]string{"access-control-allow-origin": {"*"}}},
	{name: "OPTIONS without ACRM is an actual request", policy: `{"origins":["https://app.example.com","https://x.test"]}`,
		method: "OPTIONS", headers: []kv{{"origin", app}},
		status: 200, want: map[string][]string{"access-control-allow-origin": {app}, "vary": {"Origin"}}},
	{name: "no origin with allow_origin_absent false is untouched", policy: `{"origins":["https://app.example.com","https://x.test"],"allow_origin_absent":false}`,
		upstream: upstreamResponse{200, []kv{{"access-control-allow-origin", "https://up.test"}}},
		status:   200, skipped: true, want: map[string][]string{"access-control-allow-origin": {"https://up.test"}}},
	{name: "empty origin is absent", policy: `{"origins":["https://app.example.com","https://x.test"]}`,
		headers: []kv{{"origin", ""}},
		status:  200, want: map[string][]string{"vary": {"Origin"}}},
	{name: "error status from upstream decorated", policy: `{"origins":["https://app.example.com","https://x.test"]}`,
		headers:  []kv{{"origin", app}},
		upstream: upstreamResponse{status: 503},
		status:   503, want: map[string][]string{"access-control-allow-origin": {app}, "vary": {"Origin"}}},
	// Semantics section 10: an unusable policy.
	{name: "unusable policy preflight", policy: `{"origins":["https://(bad"],"max_age":-1}`, method: "OPTIONS",
		headers: []kv{{"origin", app}, {"access-control-request-method", "PUT"}},
		status:  403, answered: true},
	{name: "unusable policy actual", policy: `{"origins":["https://app.example.com"],"colour":"red"}`,
		headers:  []kv{{"origin", app}},
		upstream: upstreamResponse{200, []kv{{"access-control-allow-origin", "*"}}},
		status:   200},
	{name: "unusable policy without origin", policy: `{"credentials":"yes"}`,
		upstream: upstreamResponse{200, []kv{{"access-control-allow-origin", "*"}}},
		status:   200, skipped: true, want: map[string][]string{"access-control-allow-origin": {"*"}}},
}

// envoySetup is one way of deploying the server behind Envoy that the behaviour table runs
// through: the server's mode, and whether Envoy has the header filter of docs/envoy-extproc.md
// section 7 (which receives the headers' metadata namespace).
type envoySetup struct {
	name         string
	mode         Mode
	headerFilter bool
}

// headersNamespace is the namespace of the headers' metadata in these tests, the server's
// default.
const headersNamespace = "cors-extproc"

var envoySetups = []envoySetup{
	{name: "two-phase", mode: ModeTwoPhase},
	{name: "two-phase+header-filter", mode: ModeTwoPhase, headerFilter: true},
	{name: "one-trip", mode: ModeOneTrip, headerFilter: true},
}

// options are the server options of the setup.
func (e envoySetup) options() Options {
	return Options{Mode: e.mode, HeadersNamespace: headersNamespace}
}

// config is the Envoy filter configuration of the setup.
func (e envoySetup) config(format envoyfilter.MetadataFormat) envoytest.Config {
	c := envoytest.Config{AllowModeOverride: true, MetadataFormat: format, MessageTimeout: testMessageTimeout}
	if e.headerFilter {
		c.ReceivingNamespaces = []string{headersNamespace}
		c.HeaderFilter = &envoytest.HeaderFilter{Namespace: headersNamespace}
	}
	return c
}

// responsePhase reports whether the setup sends tc's response phase to the server: one-trip
// keeps it only where an upstream ACAO must be removed (no ACAO granted).
func (e envoySetup) responsePhase(tc behaviourCase) bool {
	if tc.answered || tc.skipped {
		return false
	}
	return e.mode == ModeTwoPhase || tc.want["access-control-allow-origin"] == nil
}

func TestBehaviourThroughEveryChannel(t *testing.T) {
	for _, setup := range envoySetups {
		t.Run(setup.name, func(t *testing.T) {
			for _, ch := range policyChannels {
				t.Run(ch.name, func(t *testing.T) {
					for _, tc := range behaviourCases {
						t.Run(tc.name, func(t *testing.T) {
							srv, ok := serverFor(t, ch, tc.policy, setup.options())
							if !ok {
								t.Skip("an invalid named-policy file stops the server at start (tested in cmd)")
							}
							envoy := envoytest.New(envoytest.Serve(t, srv), setup.config(ch.format))
							res := doCase(t, envoy, ch.route(t, tc.policy), tc)
							assertCase(t, tc, res)
							if !tc.answered {
								assert.Equal(t, setup.responsePhase(tc), res.ResponsePhaseSent, "response phase sent")
							}
						})
					}
				})
			}
		})
	}
}

func doCase(t *testing.T, envoy *envoytest.Envoy, route envoytest.Route, tc behaviourCase) envoytest.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	upstream := envoytest.Response{Status: tc.upstream.status}
	if upstream.Status == 0 {
		upstream.Status = 200
	}
	for _, f := range tc.upstream.headers {
		upstream.Headers = append(upstream.Headers, envoytest.Header{Key: f[0], Value: f[1]})
	}
	var reqHeaders envoytest.Headers
	for _, f := range tc.headers {
		reqHeaders = append(reqHeaders, envoytest.Header{Key: f[0], Value: f[1]})
	}
	res, err := envoy.Do(ctx, route, envoytest.Request{Method: tc.method, Headers: reqHeaders},
		func(envoytest.Request) envoytest.Response { return upstream })
	require.NoError(t, err)
	return res
}

func assertCase(t *testing.T, tc behaviourCase, res envoytest.Result) {
	t.Helper()
	assert.Equal(t, tc.status, res.Response.Status, "status")
	assert.Equal(t, tc.answered, res.Answered, "answered by the server")
	assert.Equal(t, !tc.answered, res.UpstreamCalled, "upstream called")
	for _, k := range corsHeaders {
		assert.Equal(t, tc.want[k], res.Response.Values(k), k)
	}
}

// localReplyCase is a request that Envoy answers itself after the request phase.
type localReplyCase struct {
	name    string
	policy  string // JSON object; "" for a route without a policy
	method  string
	headers []kv
	want    map[string][]string // the CORS headers the client gets with the header filter
}

var localReplyCases = []localReplyCase{
	{name: "allowed origin", policy: `{"origins":["https://other.example.com","https://app.example.com"],"credentials":true,"exposed_headers":["x-total"]}`,
		headers: []kv{{"origin", app}}, want: map[string][]string{
			"access-control-allow-origin":      {app},
			"access-control-allow-credentials": {"true"},
			"access-control-expose-headers":    {"x-total"},
			"vary":                             {"Origin"},
		}},
	{name: "allow all", policy: `{}`, headers: []kv{{"origin", app}},
		want: map[string][]string{"access-control-allow-origin": {"*"}}},
	// Semantics section 8 applies whatever the status, so a rejected origin gets Vary and ACAC but
	// never an ACAO.
	{name: "rejected origin", policy: `{"origins":["https://other.example.com","https://app.example.com"],"credentials":true}`,
		headers: []kv{{"origin", evil}}, want: map[string][]string{
			"access-control-allow-credentials": {"true"},
			"vary":                             {"Origin"},
		}},
	{name: "route without a policy", headers: []kv{{"origin", app}}},
	{name: "preflight passed upstream", policy: `{"preflight_continue":true}`, method: "OPTIONS",
		headers: []kv{{"origin", app}, {"access-control-request-method", "PUT"}}},
	{name: "report only", policy: `{"report_only":true}`, headers: []kv{{"origin", app}}},
	{name: "unusable policy", policy: `{"origins":["https://(bad"]}`, headers: []kv{{"origin", app}}},
}

// Envoy's own replies after the request phase (router 503 and 504, direct_response, a 403 or
// 429 from a filter after ext_proc). Envoy 1.36 sends them to no ext_proc server
// (envoytest.Config.SkipLocalReplies): with the header filter they get the CORS headers in both
// modes (semantics section 8), without it none. From 1.37 Envoy sends them to the response
// phase like an upstream's (recorded, deploy/testdata/envoy-recordings), so every setup
// decorates them.
func TestEnvoyOwnRepliesDecorated(t *testing.T) {
	for _, skipLocal := range []bool{true, false} {
		release := map[bool]string{true: "1.36", false: "1.37+"}[skipLocal]
		for _, setup := range envoySetups {
			for _, tc := range localReplyCases {
				for _, status := range []int{503, 504, 403, 429, 200} {
					t.Run(fmt.Sprintf("%s/%s/%s/%d", release, setup.name, tc.name, status), func(t *testing.T) {
						srv, err := New(setup.options())
						require.NoError(t, err)
						cfg := setup.config(envoyfilter.OneLine)
						cfg.SkipLocalReplies = skipLocal
						envoy := envoytest.New(envoytest.Serve(t, srv), cfg)
						route := envoytest.Route{Name: "r"}
						if tc.policy != "" {
							route.GRPCMetadata = map[string]string{"x-cors-policy": tc.policy}
						}
						var headers envoytest.Headers
						for _, f := range tc.headers {
							headers = append(headers, envoytest.Header{Key: f[0], Value: f[1]})
						}
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						defer cancel()
						res, err := envoy.Do(ctx, route, envoytest.Request{Method: tc.method, Headers: headers},
							func(envoytest.Request) envoytest.Response { return envoytest.Response{Status: status, Local: true} })
						require.NoError(t, err)
						assert.Equal(t, status, res.Response.Status)
						assert.False(t, res.UpstreamCalled)
						want := tc.want
						if skipLocal {
							assert.False(t, res.ResponsePhaseSent, "Envoy 1.36 does not send its own replies to ext_proc")
							if !setup.headerFilter {
								want = nil
							}
						}
						for _, k := range corsHeaders {
							assert.Equal(t, want[k], res.Response.Values(k), k)
						}
					})
				}
			}
		}
	}
}

// A one-trip server behind an Envoy that drops its headers' metadata (the namespace not in
// receiving_namespaces, or no header filter) grants no origin more than the policy does: a
// response whose origin the policy grants no ACAO still loses the upstream's (the response
// phase does it), and every CORS header is the policy's, the upstream's own, or none.
func TestOneTripMisconfiguredGrantsNoMore(t *testing.T) {
	broken := map[string]envoytest.Config{
		"namespace not received": {AllowModeOverride: true, MessageTimeout: testMessageTimeout,
			HeaderFilter: &envoytest.HeaderFilter{Namespace: headersNamespace}},
		"no header filter": {AllowModeOverride: true, MessageTimeout: testMessageTimeout,
			ReceivingNamespaces: []string{headersNamespace}},
	}
	ch := policyChannels[0]
	for name, cfg := range broken {
		for _, tc := range behaviourCases {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				srv, ok := serverFor(t, ch, tc.policy, Options{Mode: ModeOneTrip, HeadersNamespace: headersNamespace})
				require.True(t, ok)
				envoy := envoytest.New(envoytest.Serve(t, srv), cfg)
				res := doCase(t, envoy, ch.route(t, tc.policy), tc)
				assert.Equal(t, tc.status, res.Response.Status)
				upstream := map[string][]string{}
				for _, f := range tc.upstream.headers {
					upstream[f[0]] = append(upstream[f[0]], f[1])
				}
				for _, k := range corsHeaders {
					got := res.Response.Values(k)
					if got != nil && !assert.ObjectsAreEqual(tc.want[k], got) && !assert.ObjectsAreEqual(upstream[k], got) {
						t.Errorf("%s: %q is neither the policy's %q nor the upstream's %q", k, got, tc.want[k], upstream[k])
					}
				}
				if tc.want["access-control-allow-origin"] == nil {
					assert.Nil(t, res.Response.Values("access-control-allow-origin"), "an ACAO the policy does not grant")
				}
			})
		}
	}
}
