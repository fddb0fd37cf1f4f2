package kongimport_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
	"github.com/cors-extproc/cors-extproc/internal/envoytest"
	"github.com/cors-extproc/cors-extproc/internal/kongimport"
	"github.com/cors-extproc/cors-extproc/internal/policy"
	"github.com/cors-extproc/cors-extproc/internal/processor"
)

// TestRoundTripBehavesLikeKong imports the decK fixtures with --kong-compatible, loads the
// named-policy file as the server does, attaches each route's policy by `ref` the way the
// report says, and plays requests through the ext_proc server. The expectations are what Kong
// 3.11's handler.lua answers for the same plugin (docs/cors-semantics.md section 9): preflights answered 200 with
// Kong's methods, ACAO, Vary and credentials as Kong sets them.
func TestRoundTripBehavesLikeKong(t *testing.T) {
	type kv = [2]string
	kongMethods := "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT"
	cases := []struct {
		file, route string
		method      string
		headers     []kv
		upstream    []kv
		status      int
		answered    bool
		want        map[string]string // "" means absent
	}{
		// Route plugin over service plugin: "orders" has its own; methods unset → Kong's nine.
		{file: "deck-3.0.yaml", route: "orders", method: "OPTIONS",
			headers: []kv{{"origin", "https://admin.shop.example.com"}, {"access-control-request-method", "PUT"}, {"access-control-request-headers", "x-a"}},
			status:  200, answered: true, want: map[string]string{
				"access-control-allow-origin": "https://admin.shop.example.com", "vary": "Origin",
				"access-control-allow-credentials": "true", "access-control-allow-methods": kongMethods,
				"access-control-allow-headers": "x-a", "access-control-max-age": "600",
			}},
		// Service plugin for a route without one; the disabled route plugin of "legacy" does
		// not hide it either.
		{file: "deck-3.0.yaml", route: "legacy", method: "OPTIONS",
			headers: []kv{{"origin", "https://shop.example.com"}, {"access-control-request-method", "POST"}},
			status:  200, answered: true, want: map[string]string{
				"access-control-allow-origin": "https://shop.example.com", "vary": "Origin",
				"access-control-allow-credentials": "true", "access-control-allow-methods": "GET,POST,OPTIONS",
				"access-control-allow-headers": "Content-Type,Authorization", "access-control-max-age": "3600",
			}},
		// A rejected origin: the upstream's ACAO is removed, credentials still sent (Kong's
		// configure_credentials does so whenever not all origins are allowed).
		{file: "deck-3.0.yaml", route: "catalog",
			headers:  []kv{{"origin", "https://evil.example"}},
			upstream: []kv{{"access-control-allow-origin", "*"}},
			status:   200, want: map[string]string{
				"access-control-allow-origin": "", "vary": "Origin", "access-control-allow-credentials": "true",
			}},
		// Global plugin, all origins.
		{file: "deck-3.0.yaml", route: "invoices",
			headers: []kv{{"origin", "https://any.example"}},
			status:  200, want: map[string]string{"access-control-allow-origin": "*", "vary": ""}},
		{file: "deck-3.0.yaml", route: "payments", method: "OPTIONS",
			headers: []kv{{"origin", "https://any.example"}, {"access-control-request-method", "DELETE"}},
			status:  200, answered: true, want: map[string]string{
				"access-control-allow-origin": "*", "access-control-allow-methods": kongMethods,
			}},
		// Route-and-service plugin; preflight_continue passes preflights upstream untouched.
		{file: "deck-1.1.yaml", route: "api-admin",
			headers: []kv{{"origin", "https://admin.example.com"}},
			status:  200, want: map[string]string{
				"access-control-allow-origin": "https://admin.example.com", "access-control-allow-credentials": "true",
			}},
		{file: "deck-1.1.yaml", route: "assets", method: "OPTIONS",
			headers:  []kv{{"origin", "https://any.example"}, {"access-control-request-method", "GET"}},
			upstream: []kv{{"allow", "GET"}},
			status:   200, want: map[string]string{"access-control-allow-origin": "", "access-control-allow-methods": ""}},
		// db_export: allow_origin_absent false leaves a request without Origin alone; the
		// regex element matches a subdomain.
		{file: "db-export-3.0.yaml", route: "orders-api",
			upstream: []kv{{"access-control-allow-origin", "https://upstream.example"}},
			status:   200, want: map[string]string{"access-control-allow-origin": "https://upstream.example", "vary": ""}},
		{file: "db-export-3.0.yaml", route: "orders-api",
			headers: []kv{{"origin", "https://eu.orders.example.com"}},
			status:  200, want: map[string]string{
				"access-control-allow-origin": "https://eu.orders.example.com", "vary": "Origin",
				"access-control-expose-headers": "X-Total-Count", "access-control-allow-credentials": "true",
			}},
	}

	envoys := map[string]*envoytest.Envoy{}
	routes := map[string]map[string]string{} // file → route → policy name
	for _, file := range []string{"deck-3.0.yaml", "deck-1.1.yaml", "db-export-3.0.yaml"} {
		data, err := os.ReadFile("testdata/" + file)
		require.NoError(t, err)
		report, err := kongimport.File(data, kongimport.Options{KongCompatible: true})
		require.NoError(t, err)
		out, err := report.PolicyFile()
		require.NoError(t, err)
		named, _, err := policy.ParseNamed(out)
		require.NoError(t, err, file)
		srv, err := processor.New(processor.Options{Policies: named})
		require.NoError(t, err)
		envoys[file] = envoytest.New(envoytest.Serve(t, srv), envoytest.Config{AllowModeOverride: true})
		routes[file] = map[string]string{}
		for _, r := range report.Routes {
			routes[file][r.Route] = r.Policy
		}
	}

	for _, c := range cases {
		t.Run(c.file+" "+c.route+" "+c.method, func(t *testing.T) {
			name := routes[c.file][c.route]
			require.NotEmpty(t, name, "route %s has a policy", c.route)
			route := envoytest.Route{Name: c.route, Metadata: envoyfilter.Metadata("cors", map[string]any{"ref": name})}
			req := envoytest.Request{Method: c.method}
			for _, h := range c.headers {
				req.Headers = append(req.Headers, envoytest.Header{Key: h[0], Value: h[1]})
			}
			upstream := func(envoytest.Request) envoytest.Response {
				var resp envoytest.Response
				for _, h := range c.upstream {
					resp.Headers = append(resp.Headers, envoytest.Header{Key: h[0], Value: h[1]})
				}
				return resp
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			res, err := envoys[c.file].Do(ctx, route, req, upstream)
			require.NoError(t, err)
			assert.Equal(t, c.status, res.Response.Status)
			assert.Equal(t, c.answered, res.Answered)
			for k, want := range c.want {
				got, ok := res.Response.Get(k)
				if want == "" {
					assert.False(t, ok, "%s: want absent, got %q", k, got)
				} else {
					assert.Equal(t, want, got, k)
				}
			}
		})
	}
}
