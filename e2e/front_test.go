package e2e

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cors-extproc/cors-extproc/internal/envoytest"
)

// front stands where Envoy stands in a deployment: between the browser and the service, and in
// front of the upstream API. The suite plays its cases through each front (e2e_test.go): the
// envoytest front, Envoy played in Go, and a real Envoy (envoyfront_test.go).
type front interface {
	// served returns what the front, the service and the upstream did with each request whose
	// path starts with prefix, in the order the requests arrived.
	served(prefix string) []served
	// faults lists every failure of the exchange with the service over the whole run.
	faults(t *testing.T) []string
	// ownReplies says whether the front makes Envoy's own replies (ownReply).
	ownReplies() bool
}

// served is one HTTP request as the front side saw it: never what the browser got, which
// Chromium itself reports (wire_test.go).
type served struct {
	Route, Method, Host, Path string
	// Preflight: OPTIONS with Access-Control-Request-Method (and, from a browser, an Origin).
	Preflight bool
	// Answered: the service answered at once (immediate_response); the upstream was not asked.
	Answered bool
	// UpstreamCalled: the request reached the upstream; UpstreamHeader is what it answered.
	UpstreamCalled bool
	UpstreamHeader envoytest.Headers
	// Err says how the exchange with the service failed. Envoy would then answer 500 or 504, or
	// with failure_mode_allow pass the request on without CORS processing.
	Err string
}

// route is one Envoy route as the fronts play it: what ext_proc sees of the route, and the
// upstream service behind it.
type route struct {
	envoy    envoytest.Route
	upstream http.Handler
	// reply: Envoy answers the route itself (real Envoy only).
	reply ownReply
}

// routeTable picks a route by host name, as Envoy's virtual hosts do: each API host has its
// route, any other host gets site.
type routeTable struct {
	routes map[string]route
	site   route
}

func (rt routeTable) pick(host string) route {
	if r, ok := rt.routes[hostname(host)]; ok {
		return r
	}
	return rt.site
}

// envoytestFront is the test-only HTTP front that plays Envoy: for each browser request it does
// what Envoy does with the ext_proc filter in its chain. It is built on the envoytest client so
// that the exchange with the service is the one docs/envoy-extproc.md describes (request_headers
// with the route's attributes, immediate_response or CONTINUE, response_headers), not an
// approximation of it. It is fast and needs no Envoy; the real-Envoy front holds it to Envoy.
type envoytestFront struct {
	envoy  *envoytest.Envoy
	routes routeTable

	mu  sync.Mutex
	log []served
}

// ServeHTTP plays Envoy for one request. envoytest carries headers only, so the request body
// is read here and handed to the upstream, and the upstream's body is kept beside the envoytest
// call and written back when the upstream was called.
func (f *envoytestFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := f.routes.pick(r.Host)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := envoytest.Request{
		Method:    r.Method,
		Scheme:    "http",
		Authority: r.Host,
		Path:      r.URL.RequestURI(),
		Headers:   toEnvoy(r.Header),
		Body:      len(body) > 0,
	}

	var upstream upstreamResponse
	res, doErr := f.envoy.Do(r.Context(), rt.envoy, req, func(ur envoytest.Request) envoytest.Response {
		upstream = serveUpstream(rt.upstream, ur, body)
		return envoytest.Response{Status: upstream.status, Headers: toEnvoy(upstream.header), Body: len(upstream.body) > 0}
	})

	sv := served{
		Route:          rt.envoy.Name,
		Method:         r.Method,
		Host:           r.Host,
		Path:           r.URL.RequestURI(),
		Preflight:      isPreflight(r.Method, r.Header),
		Answered:       res.Answered,
		UpstreamCalled: res.UpstreamCalled,
	}
	if res.UpstreamCalled {
		sv.UpstreamHeader = toEnvoy(upstream.header)
	}
	if doErr != nil {
		sv.Err = doErr.Error()
	}
	f.mu.Lock()
	f.log = append(f.log, sv)
	f.mu.Unlock()

	for _, h := range res.Response.Headers {
		if h.Key != "content-length" {
			w.Header().Add(h.Key, h.Value)
		}
	}
	w.WriteHeader(res.Response.Status)
	switch {
	case res.Answered:
		_, _ = io.WriteString(w, res.LocalReplyBody)
	case res.UpstreamCalled:
		_, _ = w.Write(upstream.body)
	}
}

func (f *envoytestFront) served(prefix string) []served {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []served
	for _, sv := range f.log {
		if strings.HasPrefix(sv.Path, prefix) {
			out = append(out, sv)
		}
	}
	return out
}

// faults are the exchanges envoytest reported broken: the service broke the ext_proc contract,
// or the stream failed.
func (f *envoytestFront) faults(*testing.T) []string {
	var out []string
	for _, sv := range f.served("") {
		if sv.Err != "" {
			out = append(out, sv.Method+" "+sv.Host+sv.Path+": "+sv.Err)
		}
	}
	return out
}

// ownReplies: envoytest plays the ext_proc filter alone, not the router, RBAC or rate limit
// filters that make Envoy's own replies.
func (f *envoytestFront) ownReplies() bool { return false }

// preflightsPerRoute counts the preflights a front saw, per route.
func preflightsPerRoute(f front) map[string]int {
	n := map[string]int{}
	for _, sv := range f.served("") {
		if sv.Preflight {
			n[sv.Route]++
		}
	}
	return n
}

// isPreflight tells a CORS preflight: OPTIONS with Access-Control-Request-Method.
func isPreflight(method string, h http.Header) bool {
	return method == http.MethodOptions && h.Get("Access-Control-Request-Method") != ""
}

// upstreamResponse is what the upstream handler answered.
type upstreamResponse struct {
	status int
	header http.Header
	body   []byte
}

// serveUpstream runs the upstream handler in-process on the request as the upstream would get
// it from Envoy (after the service's request-phase mutation, if any).
func serveUpstream(h http.Handler, ur envoytest.Request, body []byte) upstreamResponse {
	req := httptest.NewRequest(ur.Method, ur.Path, bytes.NewReader(body))
	req.Host = ur.Authority
	for _, f := range ur.Headers {
		req.Header.Add(f.Key, f.Value)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := rec.Result()
	b, _ := io.ReadAll(res.Body)
	return upstreamResponse{status: res.StatusCode, header: res.Header, body: b}
}

// toEnvoy turns a Go header map into header fields as Envoy's codec holds them: keys lower-cased,
// each value of a repeated header its own field. Go's map has no order, so keys are sorted to
// keep runs repeatable.
func toEnvoy(h http.Header) envoytest.Headers {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out envoytest.Headers
	for _, k := range keys {
		for _, v := range h[k] {
			out = append(out, envoytest.Header{Key: strings.ToLower(k), Value: v})
		}
	}
	return out
}

// hostname is the host of a Host header, without the port.
func hostname(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}
