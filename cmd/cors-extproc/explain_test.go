package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
	"github.com/cors-extproc/cors-extproc/internal/envoytest"
	"github.com/cors-extproc/cors-extproc/internal/processor"
)

// explainCase is one request under one policy; the explain command and the server, played by
// the Envoy-playing client, must give the client the same response.
type explainCase struct {
	name     string
	policy   string
	method   string
	headers  [][2]string
	upstream [][2]string
	status   int // the upstream's; 0 is 200
}

var explainCases = []explainCase{
	{name: "preflight allowed", policy: `{"origins":["https://a.test","https://*.b.test"],"credentials":true,"max_age":60}`, method: "OPTIONS",
		headers: [][2]string{{"origin", "https://x.b.test"}, {"access-control-request-method", "PUT"}, {"access-control-request-headers", "x-a"}}},
	{name: "preflight rejected", policy: `{"origins":["https://a.test","https://c.test"]}`, method: "OPTIONS",
		headers: [][2]string{{"origin", "https://evil.test"}, {"access-control-request-method", "PUT"}}},
	{name: "actual allowed beside upstream vary", policy: `{"origins":["https://a.test","https://c.test"],"exposed_headers":["x-total"]}`,
		headers: [][2]string{{"origin", "https://a.test"}}, upstream: [][2]string{{"vary", "Accept-Encoding"}}},
	{name: "actual rejected strips upstream ACAO", policy: `{"origins":["https://a.test","https://c.test"]}`,
		headers: [][2]string{{"origin", "https://evil.test"}}, upstream: [][2]string{{"access-control-allow-origin", "*"}}, status: 503},
	{name: "credentials allow-all echo", policy: `{"credentials":true}`, headers: [][2]string{{"origin", "null"}}},
	{name: "no origin ignored", policy: `{"origins":["https://a.test","https://c.test"],"allow_origin_absent":false}`,
		upstream: [][2]string{{"access-control-allow-origin", "https://up.test"}}},
	{name: "preflight continue", policy: `{"preflight_continue":true}`, method: "OPTIONS",
		headers: [][2]string{{"origin", "https://a.test"}, {"access-control-request-method", "PUT"}}, upstream: [][2]string{{"allow", "GET"}}},
	{name: "report only", policy: `{"origins":["https://a.test","https://c.test"],"report_only":true}`,
		headers: [][2]string{{"origin", "https://evil.test"}}, upstream: [][2]string{{"access-control-allow-origin", "*"}}},
	{name: "unusable policy", policy: `{"origins":["https://(x"]}`, method: "OPTIONS",
		headers: [][2]string{{"origin", "https://a.test"}, {"access-control-request-method", "PUT"}}},
}

// clientGets reads the "the client gets:" section of explain's output.
func clientGets(t *testing.T, out string) (int, [][2]string) {
	t.Helper()
	_, section, ok := strings.Cut(out, "the client gets:\n")
	require.True(t, ok, out)
	status := 0
	var fields [][2]string
	for _, l := range strings.Split(strings.TrimSuffix(section, "\n"), "\n") {
		l = strings.TrimPrefix(l, "  ")
		if s, ok := strings.CutPrefix(l, "status "); ok {
			status, _ = strconv.Atoi(s)
			continue
		}
		k, v, _ := strings.Cut(l, ": ")
		fields = append(fields, [2]string{k, v})
	}
	return status, fields
}

// explain shows what the server sends: every case gives the client the same status and header
// fields, in the same order, whether the server answers a real stream (played by envoytest) or
// explain previews its replies (Server.Preview). Both apply the replies with the one
// envoyfilter.ApplyMutation, so what is compared is the replies, and the decisions behind them.
func TestExplainAgreesWithServer(t *testing.T) {
	srv, err := processor.New(processor.Options{})
	require.NoError(t, err)
	envoy := envoytest.New(envoytest.Serve(t, srv), envoytest.Config{AllowModeOverride: true, MessageTimeout: 5 * time.Second})
	for _, tc := range explainCases {
		t.Run(tc.name, func(t *testing.T) {
			var policy map[string]any
			require.NoError(t, json.Unmarshal([]byte(tc.policy), &policy))
			method := tc.method
			if method == "" {
				method = "GET"
			}
			status := tc.status
			if status == 0 {
				status = 200
			}
			req := envoytest.Request{Method: method}
			args := []string{"explain", "--policy", tc.policy, "-X", method, "--upstream-status", strconv.Itoa(status)}
			for _, h := range tc.headers {
				req.Headers = append(req.Headers, envoytest.Header{Key: h[0], Value: h[1]})
				args = append(args, "-H", h[0]+": "+h[1])
			}
			upstream := envoytest.Response{Status: status}
			for _, h := range tc.upstream {
				upstream.Headers = append(upstream.Headers, envoytest.Header{Key: h[0], Value: h[1]})
				args = append(args, "--upstream-header", h[0]+": "+h[1])
			}
			res, err := envoy.Do(context.Background(), envoytest.Route{Metadata: envoyfilter.Metadata("cors", policy)}, req,
				func(envoytest.Request) envoytest.Response { return upstream })
			require.NoError(t, err)
			var want [][2]string
			for _, h := range res.Response.Headers {
				// explain shows cors-extproc's work on the upstream's headers, not the router's.
				if h.Key != "x-envoy-upstream-service-time" {
					want = append(want, [2]string{h.Key, h.Value})
				}
			}

			out, _, err := runCommand(t, args...)
			require.NoError(t, err)
			gotStatus, got := clientGets(t, out)
			assert.Equal(t, res.Response.Status, gotStatus, out)
			assert.Equal(t, want, got, out)
		})
	}
}

func TestExplainOutput(t *testing.T) {
	out, _, err := runCommand(t, "explain", "--config", "testdata/routes.yaml", "--route", "good", "--policies", "testdata/policies.yaml",
		"-X", "OPTIONS", "-H", "Origin: https://evil.test", "-H", "Access-Control-Request-Method: PUT")
	require.NoError(t, err)
	assert.Equal(t, `policy: route api/good in testdata/routes.yaml: filter_metadata.cors.ref (named policy "spa")
request:
  :method: OPTIONS
  origin: https://evil.test
  access-control-request-method: PUT
steps (the sections are those of docs/cors-semantics.md):
  1. preflight: method OPTIONS with an Origin and access-control-request-method "PUT" (section 6)
  2. the Origin "https://evil.test" is normalized to "https://evil.test" (section 3)
  3. origins[0] "https://app.example.com" (literal, normalized "https://app.example.com"): does not match
  4. origins[1] "https://admin.example.com" (literal, normalized "https://admin.example.com"): does not match
  5. no element matches: no access-control-allow-origin, and any upstream one is removed (section 4.5)
  6. credentials is true: access-control-allow-credentials: true is sent, whether or not the Origin was allowed (section 5)
  7. the preflight is answered 204 with vary: Origin; access-control-allow-credentials: true; access-control-allow-methods: GET,HEAD,PUT,PATCH,POST,DELETE (section 7)
result: cors-extproc answers at once; the upstream is not called
the client gets:
  status 204
  vary: Origin
  access-control-allow-credentials: true
  access-control-allow-methods: GET,HEAD,PUT,PATCH,POST,DELETE
`, out)

	out, _, err = runCommand(t, "explain", "--config", "../../deploy/envoy.yaml", "--route", "api/internal")
	require.NoError(t, err)
	assert.Contains(t, out, "policy: route api/internal in ../../deploy/envoy.yaml: ext_proc disabled on the route\n")
	assert.Contains(t, out, "result: not a CORS route: the request and its response pass untouched\n")
}

func TestExplainUsage(t *testing.T) {
	_, _, err := runCommand(t, "explain", "--ref", "spa", "--route", "x", "-X", "", "extra")
	require.EqualError(t, err, `--ref "spa": needs --policies
--config and --route go together
-X "": must not be empty
unexpected arguments: extra`)
	_, _, err = runCommand(t, "explain")
	require.EqualError(t, err, "give exactly one policy source: --policy JSON, --ref NAME or --config FILE --route NAME")
	_, _, err = runCommand(t, "explain", "--policy", "{}", "-H", "no colon")
	require.EqualError(t, err, `-H "no colon": want 'Name: value'`)
	// The colon forgotten: no header named "origin https", and no request explained without an
	// Origin; every bad header is reported.
	out, _, err := runCommand(t, "explain", "--policy", "{}", "-H", "Origin https://a.example", "-H", "X-Ok: 1",
		"--upstream-header", "Vary: a\x01b")
	require.EqualError(t, err, `-H "Origin https://a.example": "origin https" is not a header name; want 'Name: value'
--upstream-header "Vary: a\x01b": the value holds a control character`)
	assert.Empty(t, out)
	_, _, err = runCommand(t, "explain", "--config", "testdata/routes.yaml", "--route", "nope")
	require.EqualError(t, err, `--route "nope": no such route or virtual host in testdata/routes.yaml`)
}
