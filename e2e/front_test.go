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

	"github.com/cors-extproc/cors-extproc/internal/envoytest"
)

// route is one Envoy route as the front plays it: what ext_proc sees of the route, and the
// upstream service behind it.
type route struct {
	envoy    envoytest.Route
	upstream http.Handler
}

// exchange is one HTTP request as the front saw it: what the browser sent, what the service made
// of it, and what went back to the browser.
type exchange struct {
	Route, Method, Host, Path string
	// Request is the header the browser sent.
	Request http.Header
	// Preflight: OPTIONS with Access-Control-Request-Method (and, from a browser, an Origin).
	Preflight bool
	// Answered: the service answered at once (immediate_response); the upstream was not asked.
	Answered bool
	// UpstreamCalled: the request reached the upstream; UpstreamHeader is what it answered.
	UpstreamCalled bool
	UpstreamHeader envoytest.Headers
	// Status and Response are what the browser got.
	Status   int
	Response envoytest.Headers
	// Err is the error of envoytest's Do: the service broke the ext_proc contract, or the stream
	// failed. Envoy would then answer 500 or 504.
	Err string
}

// front is the test-only HTTP front: for each browser request it plays what Envoy does with the
// ext_proc filter in its chain. It is built on the envoytest client so that the exchange with
// the service is the one the contract page describes (request_headers with the route's
// attributes, immediate_response or CONTINUE, response_headers), not an approximation of it.
type front struct {
	envoy *envoytest.Envoy
	// routes maps a host name (without port) to its route; any other host gets site.
	routes map[string]route
	site   route

	mu  sync.Mutex
	log []exchange
}

// ServeHTTP plays Envoy for one request. envoytest carries headers only, so the request body
// is read here and handed to the upstream, and the upstream's body is kept beside the envoytest
// call and written back when the upstream was called.
func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := f.site
	if named, ok := f.routes[hostname(r.Host)]; ok {
		rt = named
	}
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

	ex := exchange{
		Route:          rt.envoy.Name,
		Method:         r.Method,
		Host:           r.Host,
		Path:           r.URL.RequestURI(),
		Request:        r.Header.Clone(),
		Preflight:      r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "",
		Answered:       res.Answered,
		UpstreamCalled: res.UpstreamCalled,
		Status:         res.Response.Status,
		Response:       res.Response.Headers,
	}
	if res.UpstreamCalled {
		ex.UpstreamHeader = toEnvoy(upstream.header)
	}
	if doErr != nil {
		ex.Err = doErr.Error()
	}
	f.mu.Lock()
	f.log = append(f.log, ex)
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

// exchanges returns the exchanges whose path starts with prefix, in arrival order.
func (f *front) exchanges(prefix string) []exchange {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []exchange
	for _, ex := range f.log {
		if strings.HasPrefix(ex.Path, prefix) {
			out = append(out, ex)
		}
	}
	return out
}

// preflights counts the preflights the front saw, per route.
func (f *front) preflights() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := map[string]int{}
	for _, ex := range f.log {
		if ex.Preflight {
			n[ex.Route]++
		}
	}
	return n
}

// all returns every exchange so far.
func (f *front) all() []exchange { return f.exchanges("") }

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
