package faults

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	vegeta "github.com/tsenart/vegeta/v12/lib"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cors-extproc/cors-extproc/internal/realenvoy"
	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

// requireFaults skips the test unless the suite was asked for (make faults).
func requireFaults(t *testing.T) {
	t.Helper()
	if os.Getenv("CORS_FAULTS") != "1" {
		t.Skip("the fault suite runs with CORS_FAULTS=1 (make faults)")
	}
}

// short is the CI version (FAULTS_SHORT=1): shorter and lighter loads.
func short() bool { return os.Getenv("FAULTS_SHORT") == "1" }

// phase is how long a scenario lets the load run in one of its phases (before a fault, during
// it, after it): d, or half of it in the CI version.
func phase(d time.Duration) time.Duration {
	if short() {
		return d / 2
	}
	return d
}

// upstreamACAO is the Access-Control-Allow-Origin the upstream sets on every answer, as an
// application with CORS handling of its own does: the worst case for fail-open, which must
// never let it through on a route that carries a policy.
const upstreamACAO = "https://upstream.example"

// Policies of deploy/envoy.yaml that the shapes use: spa-api (/app/: two exact origins,
// credentials), legacy (/legacy/: preflight_continue) and internal (/internal/: no CORS).
const (
	appOrigin    = "https://app.example.com"
	legacyOrigin = "https://legacy.example.com"
	evilOrigin   = "https://evil.test"
)

// shape is one kind of HTTP request a browser (or a server) sends, and what the policy makes
// of it while cors-extproc is up.
type shape struct {
	name           string
	method, prefix string
	origin         string
	preflight      bool // with Access-Control-Request-Method
	// What cors-extproc up gives: the status, the ACAO ("" for none), and whether the answer
	// carries cors-extproc's mark (ACAC: true, which spa-api sets on every answer).
	status int
	acao   string
	marked bool
}

var (
	actualAllowed    = shape{name: "actual, allowed Origin", method: "GET", prefix: "/app/", origin: appOrigin, status: 200, acao: appOrigin, marked: true}
	actualForeign    = shape{name: "actual, foreign Origin", method: "GET", prefix: "/app/", origin: evilOrigin, status: 200, marked: true}
	actualNoOrigin   = shape{name: "no Origin (same-origin, server-to-server)", method: "GET", prefix: "/app/", status: 200, marked: true}
	preflightAllowed = shape{name: "preflight, allowed Origin", method: "OPTIONS", prefix: "/app/", origin: appOrigin, preflight: true, status: 204, acao: appOrigin, marked: true}
	preflightForeign = shape{name: "preflight, foreign Origin", method: "OPTIONS", prefix: "/app/", origin: evilOrigin, preflight: true, status: 204, marked: true}
	legacyPreflight  = shape{name: "preflight, preflight_continue route", method: "OPTIONS", prefix: "/legacy/", origin: legacyOrigin, preflight: true, status: 200, acao: upstreamACAO}
	legacyActual     = shape{name: "actual, preflight_continue route", method: "GET", prefix: "/legacy/", origin: legacyOrigin, status: 200, acao: legacyOrigin}
	internalRoute    = shape{name: "route without CORS (ext_proc disabled)", method: "GET", prefix: "/internal/", origin: appOrigin, status: 200, acao: upstreamACAO}
)

// allShapes is every shape; loadMix the mix a load plays (a browser's actual requests and
// preflights, and server-to-server calls).
var (
	allShapes = []shape{actualAllowed, actualForeign, actualNoOrigin, preflightAllowed, preflightForeign, legacyPreflight, legacyActual, internalRoute}
	loadMix   = []shape{actualAllowed, actualAllowed, actualNoOrigin, preflightAllowed, actualForeign}
)

// outcome is what became of one request.
type outcome int

const (
	// ok: the answer the policy gives with cors-extproc up.
	ok outcome = iota
	// open: fail-open, undecorated: Envoy went on without cors-extproc; no ACAO (the upstream's
	// removed), nothing granted. Preflights get the upstream's answer without ACAO.
	open
	// closed: Envoy refused the request itself (5xx): fail-closed, or a timeout.
	closed
	// failed: no HTTP answer at all (the client's timeout, a reset).
	failed
	// wrong: anything else, such as an ACAO the policy would not grant.
	wrong
)

var outcomeNames = [...]string{"ok", "open", "closed", "failed", "wrong"}

func (o outcome) String() string { return outcomeNames[o] }

// judge says what one answer is. Only ok and open grant nothing the policy would not; wrong
// is never acceptable.
func judge(s shape, status int, h http.Header, transportErr string) outcome {
	if transportErr != "" || status == 0 {
		return failed
	}
	acao := strings.Join(h.Values("Access-Control-Allow-Origin"), ",")
	marked := h.Get("Access-Control-Allow-Credentials") == "true"
	switch {
	case status == s.status && acao == s.acao && marked == s.marked:
		return ok
	case status >= 500:
		return closed
	case acao == "" && !marked && (status == 200 || s.preflight):
		return open
	}
	return wrong
}

// request is the shape as an HTTP request through Envoy; path tells its results apart.
func (s shape) request(base string, i int) vegeta.Target {
	h := http.Header{}
	if s.origin != "" {
		h.Set("Origin", s.origin)
	}
	if s.preflight {
		h.Set("Access-Control-Request-Method", "PUT")
	}
	return vegeta.Target{Method: s.method, URL: fmt.Sprintf("%s%sshape-%d", base, s.prefix, i), Header: h}
}

// stack is deploy/envoy.yaml on a real Envoy in front of a recording upstream, with the
// cors-extproc cluster pointed at replicas of the real binary on fixed loopback ports (so that
// a replica can be stopped and another started in its place, as a pod of a Deployment).
type stack struct {
	envoy *realenvoy.Envoy
	base  string // http://host:port of Envoy's listener
}

// newStack starts Envoy bin with deploy/envoy.yaml, its cors-extproc cluster on replicas
// (host:port each) and edit applied to its HTTP connection manager (nil: the file as
// shipped). No replica need be running.
func newStack(t *testing.T, bin realenvoy.Binary, replicas []string, edit func(*hcmv3.HttpConnectionManager)) *stack {
	t.Helper()
	root, err := realenvoy.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b := realenvoy.LoadBootstrap(t, filepath.Join(root, "deploy", "envoy.yaml"))
	up := realenvoy.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", upstreamACAO)
		w.Header().Set("Access-Control-Allow-Methods", "GET, PUT")
	})
	realenvoy.Loopback(t, b, map[string]string{"cors-extproc": replicas[0], "demo-upstream": up.Addr})
	realenvoy.SetEndpoints(t, b, "cors-extproc", replicas...)
	editHCM(t, b, func(hcm *hcmv3.HttpConnectionManager) {
		editExtProc(t, hcm, func(p *extprocv3.ExternalProcessor) {
			if got := p.GetMessageTimeout().AsDuration(); got != messageTimeout {
				t.Fatalf("deploy/envoy.yaml's message_timeout is %v; the suite's bounds assume %v", got, messageTimeout)
			}
		})
		if edit != nil {
			edit(hcm)
		}
	})
	e := realenvoy.Start(t, bin, b, realenvoy.Options{})
	return &stack{envoy: e, base: e.URL(t, "http")}
}

// editHCM changes the HTTP connection manager of the bootstrap's listener.
func editHCM(t *testing.T, b *bootstrapv3.Bootstrap, edit func(*hcmv3.HttpConnectionManager)) {
	t.Helper()
	nf := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0]
	hcm := &hcmv3.HttpConnectionManager{}
	if err := nf.GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	edit(hcm)
	a, err := anypb.New(hcm)
	if err != nil {
		t.Fatal(err)
	}
	nf.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
}

// editExtProc changes the ext_proc filter of an HTTP connection manager.
func editExtProc(t *testing.T, hcm *hcmv3.HttpConnectionManager, edit func(*extprocv3.ExternalProcessor)) {
	t.Helper()
	for _, f := range hcm.GetHttpFilters() {
		if f.GetName() != "envoy.filters.http.ext_proc" {
			continue
		}
		p := &extprocv3.ExternalProcessor{}
		if err := f.GetTypedConfig().UnmarshalTo(p); err != nil {
			t.Fatal(err)
		}
		edit(p)
		a, err := anypb.New(p)
		if err != nil {
			t.Fatal(err)
		}
		f.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}
	}
}

// freeAddr is a loopback address nobody listens on, for a replica to take later.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// policiesFile is the named-policy file the Deployment mounts (deploy/k8s/base/policies.yaml).
func policiesFile(t *testing.T) string {
	t.Helper()
	root, err := realenvoy.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "deploy", "k8s", "base", "policies.yaml")
}

// startReplica runs the binary on addr with the Deployment's flags (deploy/k8s/base/
// deployment.yaml) and then extra.
// startOne runs one replica of bin behind the Envoy release envoy, and waits until a request
// is decorated: the setup of the scenarios that act on a single replica. It returns the
// replica's address too, for a restart on the same address.
func startOne(t *testing.T, bin string, envoy realenvoy.Binary) (*servicetest.Service, *stack, string) {
	t.Helper()
	addr := freeAddr(t)
	svc := startReplica(t, bin, addr)
	s := newStack(t, envoy, []string{addr}, nil)
	s.waitOK(t, newClient())
	return svc, s, addr
}

func startReplica(t *testing.T, bin, addr string, extra ...string) *servicetest.Service {
	t.Helper()
	args := append([]string{"--grpc-addr", addr, "--policies", policiesFile(t), "--dynamic-metadata",
		"--shutdown-grace=15s"}, extra...)
	return servicetest.Start(t, bin, args...)
}

// stall stops a replica's process (SIGSTOP): its sockets still accept connections, into the
// kernel's backlog, and nothing answers, as a pod frozen by its node. The process is resumed
// when the test ends, so that it can stop cleanly.
func stall(t *testing.T, svc *servicetest.Service) (resume func()) {
	t.Helper()
	if err := svc.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	resume = func() {
		once.Do(func() {
			if err := svc.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(resume)
	return resume
}

// healthFlags are the health flags Envoy's cors-extproc cluster holds for addr (admin
// /clusters): "healthy", or the reasons it is not, such as "/failed_active_hc".
func (s *stack) healthFlags(t *testing.T, addr string) string {
	t.Helper()
	_, body, err := s.envoy.Admin("GET", "/clusters")
	if err != nil {
		t.Fatal(err)
	}
	prefix := "cors-extproc::" + addr + "::health_flags::"
	for line := range strings.Lines(string(body)) {
		if flags, found := strings.CutPrefix(line, prefix); found {
			return strings.TrimSpace(flags)
		}
	}
	t.Fatalf("Envoy's cors-extproc cluster has no host %s", addr)
	return ""
}

// healthy reports whether Envoy's cors-extproc cluster holds addr as a healthy host (its
// active health checks passed).
func (s *stack) healthy(t *testing.T, addr string) bool {
	t.Helper()
	return s.healthFlags(t, addr) == "healthy"
}

// waitUnhealthy waits until Envoy no longer holds addr healthy and returns when that was seen,
// or fails the test after a minute.
func (s *stack) waitUnhealthy(t *testing.T, addr string) time.Time {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); s.healthy(t, addr); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Envoy still held %s healthy a minute on", addr)
		}
	}
	return time.Now()
}

// waitHealthy waits until Envoy holds addr healthy, or fails the test after a minute.
func (s *stack) waitHealthy(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !s.healthy(t, addr); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Envoy did not hold %s healthy within a minute", addr)
		}
	}
}

// result is one request of a load, judged.
type result struct {
	shape   shape
	sent    time.Time
	latency time.Duration
	code    uint16
	outcome outcome
	err     string
}

// run offers rate requests per second in mix for d (open loop: vegeta sends on schedule
// whatever the answers take, up to workers in flight) and returns every result, judged.
func (s *stack) run(ctx context.Context, rate int, d time.Duration, mix []shape, workers uint64) []result {
	targets := make([]vegeta.Target, len(mix))
	for i, sh := range mix {
		targets[i] = sh.request(s.base, i)
	}
	byPath := map[string]shape{}
	for i, sh := range mix {
		u, _ := url.Parse(targets[i].URL)
		byPath[u.Path] = sh
	}
	atk := vegeta.NewAttacker(vegeta.Timeout(10*time.Second), vegeta.Workers(min(workers, 16)), vegeta.MaxWorkers(workers),
		vegeta.Connections(int(workers)), vegeta.Redirects(vegeta.NoFollow))
	defer atk.Stop()
	var out []result
	results := atk.Attack(vegeta.NewStaticTargeter(targets...), vegeta.Rate{Freq: rate, Per: time.Second}, d, "faults")
	for {
		select {
		case <-ctx.Done():
			atk.Stop()
			for range results {
			}
			return out
		case r, more := <-results:
			if !more {
				return out
			}
			u, _ := url.Parse(r.URL)
			sh := byPath[u.Path]
			out = append(out, result{shape: sh, sent: r.Timestamp, latency: r.Latency, code: r.Code,
				outcome: judge(sh, int(r.Code), r.Headers, r.Error), err: r.Error})
		}
	}
}

// background runs a load until stop is called, which returns its results.
func (s *stack) background(rate int, mix []shape, workers uint64) (stop func() []result) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []result, 1)
	go func() { done <- s.run(ctx, rate, time.Hour, mix, workers) }()
	return func() []result {
		cancel()
		return <-done
	}
}

// tally counts results by outcome.
type tally [len(outcomeNames)]int

func count(rs []result) (t tally) {
	for _, r := range rs {
		t[r.outcome]++
	}
	return t
}

func (t tally) String() string {
	var parts []string
	for o, n := range t {
		parts = append(parts, fmt.Sprintf("%s %d", outcome(o), n))
	}
	return strings.Join(parts, ", ")
}

// maxLatency is the slowest answer of rs.
func maxLatency(rs []result) time.Duration {
	var m time.Duration
	for _, r := range rs {
		m = max(m, r.latency)
	}
	return m
}

// firstOKAfter is when the first request sent at or after t was sent that got the policy's
// answer: the recovery, as a client sees it.
func firstOKAfter(rs []result, t time.Time) (time.Time, bool) {
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b result) int { return a.sent.Compare(b.sent) })
	for _, r := range sorted {
		if !r.sent.Before(t) && r.outcome == ok {
			return r.sent, true
		}
	}
	return time.Time{}, false
}

// lastNotOK is when the last request that did not get the policy's answer was sent.
func lastNotOK(rs []result) (time.Time, bool) {
	var last time.Time
	for _, r := range rs {
		if r.outcome != ok && r.sent.After(last) {
			last = r.sent
		}
	}
	return last, !last.IsZero()
}

// between keeps the results sent in [from, to).
func between(rs []result, from, to time.Time) []result {
	var out []result
	for _, r := range rs {
		if !r.sent.Before(from) && r.sent.Before(to) {
			out = append(out, r)
		}
	}
	return out
}

// wrongOnes describes up to five results whose outcome is in bad.
func wrongOnes(rs []result, bad ...outcome) string {
	var lines []string
	for _, r := range rs {
		if slices.Contains(bad, r.outcome) && len(lines) < 5 {
			lines = append(lines, fmt.Sprintf("%s %s: %s, status %d %s", r.sent.Format("15:04:05.000"), r.shape.name, r.outcome, r.code, r.err))
		}
	}
	return strings.Join(lines, "\n")
}

// rss is a process's resident memory in MiB, from /proc/PID/status.
func rss(t *testing.T, pid int) float64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if rest, found := strings.CutPrefix(line, "VmRSS:"); found {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb / 1024
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// extProcStats are Envoy's ext_proc counters for the listener (stat prefix ingress_http).
func (s *stack) extProcStats(t *testing.T) string {
	t.Helper()
	var parts []string
	for _, name := range []string{"streams_started", "streams_failed", "message_timeouts", "failure_mode_allowed"} {
		parts = append(parts, fmt.Sprintf("%s %d", name, s.extProc(t, name)))
	}
	return strings.Join(parts, ", ")
}

// extProc is one of Envoy's ext_proc counters, such as "message_timeouts".
func (s *stack) extProc(t *testing.T, name string) int {
	t.Helper()
	return int(s.envoy.Counter(t, "http.ingress_http.ext_proc."+name))
}

// noiseBound is how many of n requests may miss a healthy replica's reply by message_timeout
// on a machine whose 2 cores are shared with other work (a CPU stall that long), in checks
// where a real fault would cost a large share of the requests: 1%.
func noiseBound(n int) int { return n / 100 }
