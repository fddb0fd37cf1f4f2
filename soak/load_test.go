package soak

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
	"github.com/cors-extproc/cors-extproc/internal/envoytest"
)

// The kinds of HTTP request in the mix, as cmd/cors-extproc-bench plays them.
const (
	kindActual    = iota // an actual request with an allowed Origin: two round trips
	kindNoOrigin         // an actual request without Origin: two round trips (Vary: Origin)
	kindPreflight        // a preflight, answered at once: one round trip
)

// mix is the realistic request mix in a cycle of ten: 70% actual with an allowed Origin, 20%
// without Origin, 10% preflights. Each worker starts at its own place in it.
var mix = [10]int{kindActual, kindNoOrigin, kindActual, kindActual, kindPreflight,
	kindActual, kindActual, kindNoOrigin, kindActual, kindActual}

var origins = [...]string{"https://app.example.com", "https://admin.example.com"}

// apiFields is the "api" policy of policiesFile, spelled out for the routes that carry it
// in place.
var apiFields = map[string]any{
	"origins":         []string{origins[0], origins[1]},
	"headers":         []string{"content-type"},
	"exposed_headers": []string{"x-total"},
	"credentials":     true,
	"max_age":         600,
}

// routes carry the same policy through different channels (contract section 3), so that every
// lookup path and both policy caches run under load.
var routes = []envoytest.Route{
	{Name: "route-metadata", Metadata: envoyfilter.Metadata("cors", apiFields)},
	{Name: "route-ref", Metadata: envoyfilter.Metadata("cors", map[string]any{"ref": "api"})},
	{Name: "grpc-metadata", GRPCMetadata: map[string]string{"x-cors-policy": `{"ref":"api"}`}},
	{Name: "envoy-gateway", Metadata: envoyfilter.Metadata("envoy-gateway", map[string]any{"resources": []any{
		map[string]any{"kind": "HTTPRoute", "name": "api", "annotations": map[string]any{"cors-policy": "api"}}}})},
	{Name: "virtual-host", VirtualHostMetadata: envoyfilter.Metadata("cors", apiFields)},
}

// upstream answers like an API behind Envoy, with a Vary of its own, after delay: Envoy keeps a
// request's ext_proc stream open while the upstream works, between the request and response
// phases.
func upstream(delay time.Duration) envoytest.Upstream {
	return func(envoytest.Request) envoytest.Response {
		time.Sleep(delay)
		return envoytest.Response{Status: 200, Headers: envoytest.Headers{
			{Key: "content-type", Value: "application/json"}, {Key: "vary", Value: "Accept-Encoding"}}}
	}
}

// exchange is one HTTP request played through the server.
type exchange struct {
	// due is when the schedule wanted the request sent, sent when it was, end when its answer
	// was complete. Latency counts from due.
	due, sent, end time.Time
	kind           int
	route          string
	// replied: the server answered at least one message of the stream.
	replied bool
	// err is the client's error (envoytest's, which says what Envoy would do) or a wrong answer.
	err error
}

// loadConfig is an open-loop load: rate HTTP requests per second, offered by workers paced
// independently, to an upstream that takes upstreamDelay to answer.
type loadConfig struct {
	rate          float64
	workers       int
	upstreamDelay time.Duration
}

// newEnvoys opens n client connections and plays one Envoy filter on each, as Envoy spreads its
// streams over a few HTTP/2 connections to the cluster. Half print route metadata as Envoy up to
// 1.36 does, half as later releases do. Envoy's 200 ms per-message timeout is kept: an exchange
// slower than that would be a 504 for the user, and is an error here.
func newEnvoys(t *testing.T, svc *service, n int) []*envoytest.Envoy {
	t.Helper()
	envoys := make([]*envoytest.Envoy, n)
	for i := range envoys {
		envoys[i] = envoytest.New(svc.dial(t), envoytest.Config{
			AllowModeOverride: true,
			MetadataFormat:    []envoyfilter.MetadataFormat{envoyfilter.OneLine, envoyfilter.OneLineTrailingSpace}[i%2],
		})
	}
	return envoys
}

// runLoad offers the load on envoys until stop ends or limit exchanges have been played, and
// hands each exchange to record (concurrently, from the workers). Each worker keeps its own
// schedule, as independent browsers do: a worker held up by a slow answer plays its overdue
// requests at once, and their latency counts from the time they were due, so that a stall shows
// in the numbers instead of slowing the load down (no coordinated omission).
func runLoad(envoys []*envoytest.Envoy, cfg loadConfig, stop context.Context, limit int, record func(exchange)) {
	interval := time.Duration(float64(cfg.workers) / cfg.rate * float64(time.Second))
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		played int
	)
	// take reserves one exchange of the limit.
	take := func() bool {
		mu.Lock()
		defer mu.Unlock()
		played++
		return played <= limit
	}
	begin := time.Now()
	for w := range cfg.workers {
		wg.Go(func() {
			envoy := envoys[w%len(envoys)]
			route := routes[w%len(routes)]
			next := begin.Add(interval * time.Duration(w) / time.Duration(cfg.workers))
			for i := w; ; i++ {
				if d := time.Until(next); d > 0 {
					select {
					case <-stop.Done():
						return
					case <-time.After(d):
					}
				}
				if stop.Err() != nil || !take() {
					return
				}
				kind := mix[i%len(mix)]
				x := play(envoy, route, kind, origins[i%len(origins)], cfg.upstreamDelay)
				x.due = next
				record(x)
				next = next.Add(interval)
			}
		})
	}
	wg.Wait()
}

// play sends one request of kind and checks the answer the browser would get. The request is
// not bound to the load's stop: once started it completes, as a request in Envoy does.
func play(envoy *envoytest.Envoy, route envoytest.Route, kind int, origin string, upstreamDelay time.Duration) exchange {
	req := envoytest.Request{Method: "GET", Path: "/items"}
	switch kind {
	case kindActual:
		req.Headers = envoytest.Headers{{Key: "origin", Value: origin}}
	case kindPreflight:
		req.Method = "OPTIONS"
		req.Headers = envoytest.Headers{{Key: "origin", Value: origin},
			{Key: "access-control-request-method", Value: "PUT"},
			{Key: "access-control-request-headers", Value: "content-type"}}
	}
	sent := time.Now()
	res, err := envoy.Do(context.Background(), route, req, upstream(upstreamDelay))
	// The upstream is reached only after a reply to request_headers (or the server's OK end).
	x := exchange{sent: sent, end: time.Now(), kind: kind, route: route.Name, replied: res.Answered || res.UpstreamCalled}
	if err == nil {
		err = checkAnswer(kind, origin, res)
	}
	x.err = err
	return x
}

// checkAnswer checks what the browser gets against the "api" policy (semantics sections 7 and
// 8), so that a server that answers fast but wrongly under load fails too.
func checkAnswer(kind int, origin string, res envoytest.Result) error {
	acao, hasACAO := res.Response.Get("access-control-allow-origin")
	// Origin joins the upstream's own Vary field, as Envoy appends to an inline header
	// (docs/envoy-extproc.md section 4).
	varyOrigin := slices.Equal(res.Response.Values("vary"), []string{"Accept-Encoding,Origin"})
	switch {
	case kind == kindPreflight && (!res.Answered || res.Response.Status != 204 || acao != origin):
		return fmt.Errorf("preflight from %s: answered %v, status %d, ACAO %q", origin, res.Answered, res.Response.Status, acao)
	case kind == kindActual && (res.Answered || acao != origin || !varyOrigin):
		return fmt.Errorf("actual request from %s: ACAO %q, Vary: Origin %v", origin, acao, varyOrigin)
	case kind == kindNoOrigin && (res.Answered || hasACAO || !varyOrigin):
		return fmt.Errorf("request without Origin: ACAO %q, Vary: Origin %v", acao, varyOrigin)
	}
	return nil
}

// envDuration reads a duration from the environment, or gives def.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration such as 30s or 3m", name, v)
	}
	return d
}

// envFloat reads a positive number from the environment, or gives def.
func envFloat(t *testing.T, name string, def float64) float64 {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return f
}

// requireSoak skips the test unless the suite was asked for (make soak).
func requireSoak(t *testing.T) {
	t.Helper()
	if os.Getenv("CORS_SOAK") != "1" {
		t.Skip("the soak suite runs with CORS_SOAK=1 (make soak)")
	}
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted latencies, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
