package deploy_test

import (
	"bufio"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	vegeta "github.com/tsenart/vegeta/v12/lib"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cors-extproc/cors-extproc/internal/realenvoy"
	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

// BenchmarkEnvoy is `make bench-envoy` (BENCHMARKS.md, "Through a real Envoy"): HTTP load from
// vegeta's library through a real Envoy (the newest pinned release, --concurrency 1) in front
// of a Go upstream, for each configuration of benchConfigs and each request shape of
// benchShapes. The configurations run side by side, alternating within each round, so that a
// machine shared with other work loads them alike; the tables give medians over the rounds of
// each figure and of each ratio taken within one round.
//
// It asserts only what is not a matter of speed: every request succeeded, the CORS answers
// were the policy's (so that a fail-open Envoy cannot pass for a fast one), and Envoy counted
// no ext_proc failure, timeout or circuit-breaker overflow.
func BenchmarkEnvoy(b *testing.B) {
	p := benchParams()
	bin := realenvoy.Newest(b)
	build := servicetest.Build(b)
	upstream := startBenchUpstream(b)
	servers := map[string]benchServer{"no-op": startNoopServer(b)}
	for name, args := range map[string][]string{
		"one-trip":  append(slices.Clone(deploymentArgs), "--mode", "one-trip"),
		"two-phase": append(slices.Clone(deploymentArgs), "--mode", "two-phase"),
	} {
		s := servicetest.Start(b, build, args...)
		servers[name] = benchServer{addr: s.GRPCAddr, pid: s.Cmd.Process.Pid}
	}
	configs := benchConfigs()
	// Other builds of cors-extproc, each run as (d) is (issue 19: what a piece of low-level
	// speed work is worth through Envoy).
	for _, v := range strings.FieldsFunc(*benchVariants, func(r rune) bool { return r == ',' }) {
		name, path, ok := strings.Cut(v, "=")
		if !ok {
			b.Fatalf("-bench.variants: %q is not name=binary", v)
		}
		s := servicetest.Start(b, path, append(slices.Clone(deploymentArgs), "--mode", "one-trip")...)
		servers[name] = benchServer{addr: s.GRPCAddr, pid: s.Cmd.Process.Pid}
		configs = append(configs, &benchConfig{name: name, about: "(d) with the cors-extproc built as " + path,
			server: name, cors: true, edit: asDeployed})
	}
	for _, c := range configs {
		bs := loadBenchBootstrap(b)
		c.edit(b, bs)
		// A configuration without ext_proc still has the cluster, pointed at the no-op server
		// and never used; it has no server CPU to read.
		srv := servers[cmp.Or(c.server, "no-op")]
		if c.server != "" {
			c.serverPID = srv.pid
		}
		realenvoy.Loopback(b, bs, map[string]string{"demo-upstream": upstream, "cors-extproc": srv.addr})
		c.envoy = realenvoy.Start(b, bin, bs, realenvoy.Options{Concurrency: 1})
	}
	shapes := benchShapes
	if *benchShapesFlag != "" {
		names := strings.Split(*benchShapesFlag, ",")
		shapes = slices.DeleteFunc(slices.Clone(benchShapes), func(s benchShape) bool { return !slices.Contains(names, s.name) })
	}
	for _, c := range configs {
		for _, s := range shapes {
			checkBenchAnswer(b, c, s)
		}
	}
	b.ResetTimer()

	results := map[string]map[string][]benchRun{} // config → shape → one run a round
	for _, c := range configs {
		results[c.name] = map[string][]benchRun{}
	}
	for round := range p.rounds {
		order := slices.Clone(configs)
		if round%2 == 1 {
			slices.Reverse(order) // A B C D, then D C B A: drift over the round hits all alike
		}
		for _, s := range shapes {
			for _, c := range order {
				r := runFixed(b, c, s, p)
				r.closedRPS = runClosed(b, c, s, p)
				results[c.name][s.name] = append(results[c.name][s.name], r)
			}
		}
	}
	limits := runLimits(b, bin, p, configs, servers["two-phase"], upstream)
	b.StopTimer()
	for _, c := range configs {
		for _, stat := range benchFailureStats {
			if n := c.envoy.Counter(b, stat); n != 0 {
				b.Errorf("%s: Envoy counted %s = %d", c.name, stat, n)
			}
		}
	}
	printBenchTables(os.Stdout, bin, p, configs, shapes, results)
	printLimits(os.Stdout, p, limits)
	fmt.Println("\n#### Memory of the ext_proc servers after the runs (from /proc/PID/status)")
	fmt.Println("\n| server | resident (VmRSS) | peak resident (VmHWM) |\n| --- | --- | --- |")
	for _, name := range slices.Sorted(maps.Keys(servers)) {
		fmt.Printf("| %s | %s | %s |\n", name, procStatus(b, servers[name].pid, "VmRSS"), procStatus(b, servers[name].pid, "VmHWM"))
	}
}

// procStatus is one field of /proc/PID/status, e.g. "VmRSS" → "23456 kB".
func procStatus(t testing.TB, pid int, field string) string {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// limitRun is what the run past the ext_proc cluster's default limits did.
type limitRun struct {
	config                string
	requests, failed      uint64
	first                 string
	overflow, connections int64
	p99                   time.Duration
	throughput            float64
}

// runLimits finds the ext_proc cluster's limits under load (issue 14, item 3): more HTTP
// requests in flight (p.limitWorkers, at a steady rate) than Envoy's default circuit breaker allows ext_proc
// streams (max_requests 1024) and than cors-extproc allows streams on one connection
// (--grpc-max-concurrent-streams 1000), through envoy.yaml as shipped (which must not fail
// one request) and through envoy.yaml with the cluster's circuit breakers at Envoy's defaults.
func runLimits(t testing.TB, bin realenvoy.Binary, p benchParamSet, configs []*benchConfig, twoPhase benchServer, upstream string) []limitRun {
	byName := func(name string) *benchConfig {
		return configs[slices.IndexFunc(configs, func(c *benchConfig) bool { return c.name == name })]
	}
	bs := loadBenchBootstrap(t)
	benchCluster(t, bs, "cors-extproc").CircuitBreakers = nil
	realenvoy.Loopback(t, bs, map[string]string{"demo-upstream": upstream, "cors-extproc": twoPhase.addr})
	defaults := &benchConfig{name: "e with Envoy's default circuit breakers", server: "two-phase", cors: true,
		envoy: realenvoy.Start(t, bin, bs, realenvoy.Options{Concurrency: 1})}
	// Allowed actual requests that the upstream answers after benchSlowUpstream, sent at a
	// steady rate of p.limitWorkers / benchSlowUpstream, so that p.limitWorkers are in flight
	// at once while the request rate stays far below what the machine can serve. In
	// two-phase mode each holds its ext_proc stream open that long, waiting for the response
	// phase; in one-trip mode the stream ends with the request phase.
	slowActual := benchActual
	slowActual.Header = benchActual.Header.Clone()
	slowActual.Header.Set(benchDelayHeader, benchSlowUpstream.String())
	slow := benchShape{name: "slow actual", targets: []vegeta.Target{slowActual}}
	var out []limitRun
	for _, c := range []*benchConfig{byName("d"), byName("e"), defaults} {
		o0 := sumStats(t, c.envoy, `^cluster\.cors-extproc\..*overflow$`)
		c0 := c.envoy.Counter(t, "cluster.cors-extproc.upstream_cx_total")
		rate := vegeta.Rate{Freq: int(float64(p.limitWorkers) / benchSlowUpstream.Seconds()), Per: time.Second}
		m, bad, first := attackCounting(t, c, slow, rate, p.limitWorkers*2, p.limitDuration)
		r := limitRun{config: c.name, requests: m.Requests, failed: uint64(bad), first: first,
			overflow:    sumStats(t, c.envoy, `^cluster\.cors-extproc\..*overflow$`) - o0,
			connections: c.envoy.Counter(t, "cluster.cors-extproc.upstream_cx_total") - c0,
			p99:         m.Latencies.P99, throughput: m.Throughput}
		if c != defaults && bad > 0 {
			t.Errorf("(%s), envoy.yaml as shipped, %d requests in flight: %d of %d requests failed, the first: %s",
				c.name, p.limitWorkers, bad, m.Requests, first)
		}
		out = append(out, r)
	}
	return out
}

// sumStats adds up Envoy's counters whose names match the regular expression.
func sumStats(t testing.TB, e *realenvoy.Envoy, re string) int64 {
	_, body, err := e.Admin("GET", "/stats?format=json&type=Counters&filter="+url.QueryEscape(re))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Stats []struct {
			Value int64 `json:"value"`
		} `json:"stats"`
	}
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("/stats: %v: %s", err, body)
	}
	var n int64
	for _, st := range s.Stats {
		n += st.Value
	}
	return n
}

func printLimits(w io.Writer, p benchParamSet, runs []limitRun) {
	fmt.Fprintf(w, "\n#### Limits: %d allowed actual requests in flight (%.0f req/s, the upstream answering each after %v), for %v\n\n",
		p.limitWorkers, float64(p.limitWorkers)/benchSlowUpstream.Seconds(), benchSlowUpstream, p.limitDuration)
	fmt.Fprintln(w, "| config | requests | failed or without CORS | ext_proc overflows | new connections to cors-extproc | p99 ms | req/s |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- |")
	for _, r := range runs {
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %.0f | %.0f |\n", r.config, r.requests, r.failed, r.overflow,
			r.connections, float64(r.p99)/float64(time.Millisecond), r.throughput)
	}
	for _, r := range runs {
		if r.first != "" {
			fmt.Fprintf(w, "\n%s, the first failure: %s\n", r.config, r.first)
		}
	}
}

// benchFailureStats are Envoy's counters of requests that went wrong on the ext_proc hop.
var benchFailureStats = []string{
	"http.ingress_http.ext_proc.streams_failed",
	"http.ingress_http.ext_proc.failure_mode_allowed",
	"http.ingress_http.ext_proc.message_timeouts",
	"cluster.cors-extproc.upstream_rq_pending_overflow",
	"cluster.cors-extproc.upstream_cx_overflow",
	"cluster.cors-extproc.upstream_rq_timeout",
}

var (
	benchShort        = flag.Bool("bench.short", false, "BenchmarkEnvoy: one round of short runs, a quick check that it works")
	benchRate         = flag.Int("bench.rate", 800, "BenchmarkEnvoy: the fixed request rate (req/s) of the latency and CPU runs")
	benchWorkers      = flag.Int("bench.workers", 32, "BenchmarkEnvoy: HTTP requests in flight in the closed-loop runs")
	benchRounds       = flag.Int("bench.rounds", 3, "BenchmarkEnvoy: rounds of the alternation")
	benchLimitWorkers = flag.Int("bench.limit-workers", 1500, "BenchmarkEnvoy: HTTP requests in flight in the run past Envoy's default circuit breakers (sent at this many per 2 s)")
	benchShapesFlag   = flag.String("bench.shapes", "", "BenchmarkEnvoy: the shapes to run, comma-separated (default all: preflight,actual,no-origin,mix)")
	benchVariants     = flag.String("bench.variants", "", "BenchmarkEnvoy: name=binary,... other builds of cors-extproc to run as (d) is, beside it")
	benchDuration     = flag.Duration("bench.duration", 4*time.Second, "BenchmarkEnvoy: length of each fixed-rate run")
)

type benchParamSet struct {
	rounds        int
	rate          int
	workers       int
	limitWorkers  int
	limitDuration time.Duration
	fixed, closed time.Duration
}

func benchParams() benchParamSet {
	p := benchParamSet{rounds: *benchRounds, rate: *benchRate, workers: *benchWorkers, limitWorkers: *benchLimitWorkers,
		fixed: *benchDuration, closed: 2 * time.Second, limitDuration: 3 * benchSlowUpstream}
	if *benchShort {
		p.rounds, p.fixed, p.closed, p.limitDuration = 1, time.Second, time.Second, 2*benchSlowUpstream
	}
	return p
}

// benchShape is one kind of HTTP request load: targets are sent round robin.
type benchShape struct {
	name    string
	targets []vegeta.Target
}

const (
	benchPath   = "/app/bench" // the spa-api route: two exact origins, credentials
	benchOrigin = "https://app.example.com"
)

var (
	benchActual    = vegeta.Target{Method: http.MethodGet, Header: http.Header{"Origin": {benchOrigin}}}
	benchNoOrigin  = vegeta.Target{Method: http.MethodGet, Header: http.Header{}}
	benchPreflight = vegeta.Target{Method: http.MethodOptions, Header: http.Header{
		"Origin": {benchOrigin}, "Access-Control-Request-Method": {"PUT"},
		"Access-Control-Request-Headers": {"content-type"},
	}}
	benchShapes = []benchShape{
		{"preflight", []vegeta.Target{benchPreflight}},
		{"actual", []vegeta.Target{benchActual}},
		{"no-origin", []vegeta.Target{benchNoOrigin}},
		// 70 % actual, 20 % without Origin, 10 % preflights, interleaved.
		{"mix", []vegeta.Target{benchActual, benchNoOrigin, benchActual, benchActual, benchPreflight,
			benchActual, benchNoOrigin, benchActual, benchActual, benchActual}},
	}
)

// benchKind names a target's kind of request.
func benchKind(tg vegeta.Target) string {
	switch {
	case tg.Method == http.MethodOptions:
		return "preflight"
	case tg.Header.Get("Origin") == "":
		return "no-origin"
	}
	return "actual"
}

// benchConfig is one Envoy configuration under load.
type benchConfig struct {
	name, about string
	// server names the ext_proc server ("" for none): "no-op", cors-extproc in "one-trip" or
	// "two-phase" mode, or a variant build.
	server string
	// cors says whether the configuration answers CORS (the checks expect ACAO).
	cors bool
	edit func(testing.TB, *bootstrapv3.Bootstrap)

	envoy     *realenvoy.Envoy
	serverPID int
}

// benchConfigs are the configurations of issue 14. Each starts from deploy/envoy.yaml less its
// stdout access log (the harness would keep every line in memory, and it costs all alike);
// the servers run with the Deployment's arguments (deploymentArgs) and a --mode.
func benchConfigs() []*benchConfig {
	return []*benchConfig{
		{name: "a", about: "no CORS (envoy.yaml without ext_proc)", edit: withoutExtProc},
		{name: "b", about: "Envoy's CORS filter, the spa-api policy", cors: true, edit: withNativeCORS},
		{name: "c", about: "ext_proc to a no-op server (CONTINUE to both phases)", server: "no-op", edit: asDeployed},
		{name: "d", about: "cors-extproc as deploy/envoy.yaml and docker-compose.yaml run it (--mode one-trip)", server: "one-trip", cors: true, edit: asDeployed},
		{name: "e", about: "cors-extproc --mode two-phase, envoy.yaml unchanged", server: "two-phase", cors: true, edit: asDeployed},
	}
}

// loadBenchBootstrap is deploy/envoy.yaml without its access log, and with the demo upstream's
// circuit breakers lifted: that cluster stands for the user's own service, and its default
// limits (1024 connections and requests) would refuse requests in the limits run before
// ext_proc's are reached.
func loadBenchBootstrap(t testing.TB) *bootstrapv3.Bootstrap {
	bs := realenvoy.LoadBootstrap(t, "envoy.yaml")
	editHCM(t, bs, func(hcm *hcmv3.HttpConnectionManager) { hcm.AccessLog = nil })
	lifted := wrapperspb.UInt32(100000)
	benchCluster(t, bs, "demo-upstream").CircuitBreakers = &clusterv3.CircuitBreakers{
		Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: lifted, MaxPendingRequests: lifted, MaxRequests: lifted}},
	}
	return bs
}

func asDeployed(testing.TB, *bootstrapv3.Bootstrap) {}

// withoutExtProc removes ext_proc and the header filters that write its metadata.
func withoutExtProc(t testing.TB, bs *bootstrapv3.Bootstrap) {
	editHCM(t, bs, func(hcm *hcmv3.HttpConnectionManager) {
		hcm.HttpFilters = slices.DeleteFunc(hcm.HttpFilters, func(f *hcmv3.HttpFilter) bool {
			return f.GetName() == extProcFilter || strings.HasPrefix(f.GetName(), "cors-extproc.")
		})
	})
}

// withNativeCORS puts envoy.filters.http.cors where ext_proc and its header filters were, with spa-api's policy as
// close as Envoy's filter can say it: two exact origins, the same methods, request and exposed
// headers, credentials and max-age.
func withNativeCORS(t testing.TB, bs *bootstrapv3.Bootstrap) {
	filterCfg, err := anypb.New(&corsv3.Cors{})
	if err != nil {
		t.Fatal(err)
	}
	policy, err := anypb.New(&corsv3.CorsPolicy{
		AllowOriginStringMatch: []*matcherv3.StringMatcher{
			{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "https://app.example.com"}},
			{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "https://admin.example.com"}},
		},
		AllowMethods:     "GET,POST,PUT,DELETE",
		AllowHeaders:     "content-type,authorization,x-csrf-token",
		ExposeHeaders:    "x-request-id,x-ratelimit-remaining",
		AllowCredentials: wrapperspb.Bool(true),
		MaxAge:           "600",
	})
	if err != nil {
		t.Fatal(err)
	}
	withoutExtProc(t, bs)
	editHCM(t, bs, func(hcm *hcmv3.HttpConnectionManager) {
		hcm.HttpFilters = slices.Insert(hcm.HttpFilters, 0, &hcmv3.HttpFilter{Name: "envoy.filters.http.cors",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: filterCfg}})
		for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if r.GetName() == "spa-api" {
					r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.cors": policy}
				}
			}
		}
	})
}

// editHCM changes the HTTP connection manager of the bootstrap's one listener.
func editHCM(t testing.TB, bs *bootstrapv3.Bootstrap, edit func(*hcmv3.HttpConnectionManager)) {
	t.Helper()
	f := bs.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0]
	hcm := &hcmv3.HttpConnectionManager{}
	if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	edit(hcm)
	a, err := anypb.New(hcm)
	if err != nil {
		t.Fatal(err)
	}
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
}

// benchCluster is the bootstrap's cluster of that name.
func benchCluster(t testing.TB, bs *bootstrapv3.Bootstrap, name string) *clusterv3.Cluster {
	for _, c := range bs.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c
		}
	}
	t.Fatalf("no cluster %s", name)
	return nil
}

// checkBenchAnswer sends one request of each of the shape's targets and checks its answer.
func checkBenchAnswer(t testing.TB, c *benchConfig, s benchShape) {
	t.Helper()
	for _, tg := range s.targets[:min(len(s.targets), 5)] {
		req, err := http.NewRequest(tg.Method, c.envoy.URL(t, "http")+benchPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = tg.Header.Clone()
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if msg := badBenchAnswer(c, tg, res.StatusCode, res.Header); msg != "" {
			t.Fatalf("%s, %s: %s", c.name, s.name, msg)
		}
	}
}

// badBenchAnswer says what is wrong with an answer, or "".
func badBenchAnswer(c *benchConfig, tg vegeta.Target, status int, h http.Header) string {
	if status < 200 || status > 299 {
		return fmt.Sprintf("%s: status %d", tg.Method, status)
	}
	want := ""
	if c.cors && tg.Header.Get("Origin") != "" {
		want = benchOrigin
	}
	if got := h.Get("Access-Control-Allow-Origin"); got != want {
		return fmt.Sprintf("%s Origin %q: ACAO %q, want %q", tg.Method, tg.Header.Get("Origin"), got, want)
	}
	return ""
}

// benchRun is what one fixed-rate run (and the closed-loop run after it) measured.
type benchRun struct {
	p50, p99, max time.Duration
	// envoyCPU and serverCPU are CPU time (user + system, from /proc) per request.
	envoyCPU, serverCPU time.Duration
	closedRPS           float64
}

func newAttacker(workers int) (*vegeta.Attacker, *http.Transport) {
	tr := &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true}
	return vegeta.NewAttacker(vegeta.Client(&http.Client{Transport: tr, Timeout: 10 * time.Second}),
		vegeta.Workers(uint64(workers)), vegeta.MaxWorkers(uint64(workers))), tr
}

// attack sends the shape's requests to c and checks every answer: failures are test errors.
func attack(t testing.TB, c *benchConfig, s benchShape, pacer vegeta.Pacer, workers int, d time.Duration) *vegeta.Metrics {
	m, bad, first := attackCounting(t, c, s, pacer, workers, d)
	if bad > 0 {
		t.Errorf("%s, %s: %d of %d requests failed, the first: %s", c.name, s.name, bad, m.Requests, first)
	}
	return m
}

// attackCounting is attack that counts the failures (errors, and answers that are not the
// configuration's) and returns the first, instead of failing.
func attackCounting(t testing.TB, c *benchConfig, s benchShape, pacer vegeta.Pacer, workers int, d time.Duration) (m *vegeta.Metrics, bad int, first string) {
	// Each target has a URL of its own, by which a result (whose Seq need not be the
	// target's) is matched to it.
	targets := make([]vegeta.Target, len(s.targets))
	byURL := map[string]vegeta.Target{}
	for i, tg := range s.targets {
		tg.URL = fmt.Sprintf("%s%s?k=%s", c.envoy.URL(t, "http"), benchPath, benchKind(tg))
		targets[i] = tg
		byURL[tg.URL] = tg
	}
	atk, tr := newAttacker(workers)
	defer tr.CloseIdleConnections()
	m = &vegeta.Metrics{}
	for res := range atk.Attack(vegeta.NewStaticTargeter(targets...), pacer, d, c.name) {
		m.Add(res)
		msg := res.Error
		if msg == "" {
			msg = badBenchAnswer(c, byURL[res.URL], int(res.Code), res.Headers)
		}
		if msg != "" {
			if bad++; bad == 1 {
				first = msg
			}
		}
	}
	m.Close()
	return m, bad, first
}

// runFixed sends the shape at the fixed rate, measuring latency and the CPU of Envoy and of the
// ext_proc server.
func runFixed(t testing.TB, c *benchConfig, s benchShape, p benchParamSet) benchRun {
	e0, s0 := procCPU(t, c.envoy.PID()), procCPU(t, c.serverPID)
	m := attack(t, c, s, vegeta.Rate{Freq: p.rate, Per: time.Second}, p.workers, p.fixed)
	e1, s1 := procCPU(t, c.envoy.PID()), procCPU(t, c.serverPID)
	n := time.Duration(max(m.Requests, 1))
	return benchRun{p50: m.Latencies.P50, p99: m.Latencies.P99, max: m.Latencies.Max,
		envoyCPU: (e1 - e0) / n, serverCPU: (s1 - s0) / n}
}

// runClosed sends the shape as fast as p.workers requests in flight allow.
func runClosed(t testing.TB, c *benchConfig, s benchShape, p benchParamSet) float64 {
	m := attack(t, c, s, vegeta.Rate{Freq: 0}, p.workers, p.closed)
	return m.Throughput
}

// procCPU is the user + system CPU time a process has used (0 for pid 0), from
// /proc/PID/stat: fields 14 and 15, in clock ticks (100 a second on Linux).
func procCPU(t testing.TB, pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	return time.Duration(utime+stime) * (time.Second / 100)
}

// benchServer is an ext_proc server process.
type benchServer struct {
	addr string
	pid  int
}

// noopServerEnv makes the test binary (see TestMain) serve the no-op ext_proc server instead
// of running tests: a process of its own, so that its CPU is read apart from the load's.
const noopServerEnv = "CORS_EXTPROC_BENCH_NOOP_SERVER"

func startNoopServer(t testing.TB) benchServer {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), noopServerEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("no-op server: %v", err)
	}
	return benchServer{addr: strings.TrimSpace(line), pid: cmd.Process.Pid}
}

// serveNoop is the no-op ext_proc server: an empty CONTINUE to every message, never a
// mode_override, so every HTTP request costs two round trips; and the gRPC health service
// envoy.yaml's health check asks. It prints its address, then serves until SIGTERM.
func serveNoop() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := grpc.NewServer()
	extprocsvc.RegisterExternalProcessorServer(srv, noopProcessor{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	fmt.Println(ln.Addr().String())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	go func() {
		<-sig
		srv.Stop()
	}()
	_ = srv.Serve(ln)
	return 0
}

type noopProcessor struct {
	extprocsvc.UnimplementedExternalProcessorServer
}

var (
	noopRequest = &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocsvc.HeadersResponse{}}}
	noopResponse = &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ResponseHeaders{
		ResponseHeaders: &extprocsvc.HeadersResponse{}}}
)

func (noopProcessor) Process(s extprocsvc.ExternalProcessor_ProcessServer) error {
	for {
		req, err := s.Recv()
		if err != nil {
			return nil
		}
		reply := noopRequest
		if req.GetResponseHeaders() != nil {
			reply = noopResponse
		}
		if err := s.Send(reply); err != nil {
			return nil
		}
	}
}

// benchDelayHeader asks the bench upstream to wait that long (a Go duration) before answering.
const benchDelayHeader = "X-Bench-Delay"

// benchSlowUpstream is how long the upstream takes in the limits run.
const benchSlowUpstream = 2 * time.Second

// startBenchUpstream serves 200 with no body on loopback, recording nothing (realenvoy's
// Upstream keeps every request, too much for a load test).
func startBenchUpstream(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d, err := time.ParseDuration(r.Header.Get(benchDelayHeader)); err == nil {
			time.Sleep(d)
		}
		w.WriteHeader(http.StatusOK)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// printBenchTables writes the Markdown tables of BENCHMARKS.md: figures are medians over the
// rounds; ratios and differences are taken within each round, then their median.
func printBenchTables(w io.Writer, bin realenvoy.Binary, p benchParamSet, configs []*benchConfig, shapes []benchShape, results map[string]map[string][]benchRun) {
	fmt.Fprintf(w, "\nEnvoy %s --concurrency 1; nproc %d; %d round(s); fixed rate %d req/s for %v; closed loop %d in flight for %v\n\n",
		bin.Version, runtime.NumCPU(), p.rounds, p.rate, p.fixed, p.workers, p.closed)
	for _, c := range configs {
		fmt.Fprintf(w, "- (%s) %s\n", c.name, c.about)
	}
	us := func(d float64) string { return fmt.Sprintf("%.0f", d/float64(time.Microsecond)) }
	for _, s := range shapes {
		fmt.Fprintf(w, "\n#### %s\n\n", s.name)
		fmt.Fprintln(w, "| config | p50 µs | p99 µs | max µs | p50 over (a) µs | Envoy CPU µs/req | server CPU µs/req | closed-loop req/s |")
		fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- | --- |")
		floor := results["a"][s.name]
		for _, c := range configs {
			runs := results[c.name][s.name]
			added := perRound(runs, floor, func(r, f benchRun) float64 { return float64(r.p50 - f.p50) })
			fmt.Fprintf(w, "| (%s) | %s | %s | %s | %s | %s | %s | %.0f |\n", c.name,
				us(medianOf(runs, func(r benchRun) float64 { return float64(r.p50) })),
				us(medianOf(runs, func(r benchRun) float64 { return float64(r.p99) })),
				us(medianOf(runs, func(r benchRun) float64 { return float64(r.max) })),
				us(added),
				us(medianOf(runs, func(r benchRun) float64 { return float64(r.envoyCPU) })),
				us(medianOf(runs, func(r benchRun) float64 { return float64(r.serverCPU) })),
				float64(medianOf(runs, func(r benchRun) float64 { return r.closedRPS })))
		}
	}
	// The ratios of the goals: each configuration against the no-op hop (c) and against
	// Envoy's own filter (b).
	fmt.Fprintln(w, "\n#### Ratios (median of the per-round ratios)")
	fmt.Fprintln(w, "\n| config | shape | CPU/req vs (c) | server CPU/req vs (c) | added p50 vs (c) | p50 gap to (b) µs | CPU/req gap to (b) µs | CPU/req vs (b) | closed-loop req/s vs (b) | CPU/req vs (d) | server CPU/req vs (d) |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	total := func(r benchRun) float64 { return float64(r.envoyCPU + r.serverCPU) }
	for _, c := range configs {
		if c.server == "" || c.name == "c" {
			continue
		}
		for _, s := range shapes {
			runs, hop, native, floor, ours := results[c.name][s.name], results["c"][s.name], results["b"][s.name], results["a"][s.name], results["d"][s.name]
			addedVsHop := make([]float64, len(runs))
			for i := range runs {
				addedVsHop[i] = float64(runs[i].p50-floor[i].p50) / float64(hop[i].p50-floor[i].p50)
			}
			fmt.Fprintf(w, "| (%s) | %s | %.2f | %.2f | %.2f | %+.0f | %+.0f | %.2f | %.2f | %.3f | %.3f |\n", c.name, s.name,
				perRound(runs, hop, func(r, o benchRun) float64 { return total(r) / total(o) }),
				perRound(runs, hop, func(r, o benchRun) float64 { return float64(r.serverCPU) / float64(o.serverCPU) }),
				median(addedVsHop),
				perRound(runs, native, func(r, o benchRun) float64 { return float64(r.p50-o.p50) / float64(time.Microsecond) }),
				perRound(runs, native, func(r, o benchRun) float64 { return (total(r) - total(o)) / float64(time.Microsecond) }),
				perRound(runs, native, func(r, o benchRun) float64 { return total(r) / total(o) }),
				perRound(runs, native, func(r, o benchRun) float64 { return r.closedRPS / o.closedRPS }),
				perRound(runs, ours, func(r, o benchRun) float64 { return total(r) / total(o) }),
				perRound(runs, ours, func(r, o benchRun) float64 { return float64(r.serverCPU) / float64(o.serverCPU) }))
		}
	}
}

func medianOf(runs []benchRun, f func(benchRun) float64) float64 {
	v := make([]float64, len(runs))
	for i, r := range runs {
		v[i] = f(r)
	}
	return median(v)
}

// perRound is the median over the rounds of f(run, other run of the same round).
func perRound(runs, others []benchRun, f func(r, o benchRun) float64) float64 {
	v := make([]float64, len(runs))
	for i := range runs {
		v[i] = f(runs[i], others[i])
	}
	return median(v)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
