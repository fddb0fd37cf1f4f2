package deploy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cors-extproc/cors-extproc/internal/processor"
	"github.com/cors-extproc/cors-extproc/internal/realenvoy"
	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

// The Envoy configurations the repository ships as bootstraps.
var shippedBootstraps = []string{"envoy.yaml"}

// TestRealEnvoyValidatesShippedConfigs runs `envoy --mode validate` on every shipped bootstrap,
// with every pinned Envoy release: each must be valid and use no deprecated field (Envoy
// warns "Deprecated field" before it removes one).
func TestRealEnvoyValidatesShippedConfigs(t *testing.T) {
	for _, bin := range realenvoy.Binaries(t) {
		for _, file := range shippedBootstraps {
			t.Run(bin.Version+"/"+file, func(t *testing.T) {
				out, err := exec.Command(bin.Path, "--mode", "validate", "-c", file, "--log-level", "warn").CombinedOutput()
				if err != nil || !strings.Contains(string(out), "OK") {
					t.Errorf("envoy %s --mode validate -c %s: %v\n%s", bin.Version, file, err, out)
				}
				if strings.Contains(string(out), "Deprecated field") {
					t.Errorf("envoy %s --mode validate -c %s warns of a deprecated field:\n%s", bin.Version, file, out)
				}
			})
		}
	}
}

// deployStack is deploy/envoy.yaml served by a real Envoy: its addresses moved to loopback
// (nothing else changed but checkRoutes added), the real cors-extproc binary run as the
// Deployment runs it, and a Go upstream that records what reaches it.
type deployStack struct {
	envoy    *realenvoy.Envoy
	service  *servicetest.Service
	upstream *realenvoy.Upstream
	cfg      envoyConfig
}

// deploymentArgs are the server's arguments in deploy/k8s/base/deployment.yaml that matter to
// behaviour (the policies file at its path in the repository).
var deploymentArgs = []string{"--policies", namedPoliciesFile, "--dynamic-metadata"}

// upstreamHeader picks the upstream's answer (upstreamAnswers) for one request.
const upstreamHeader = "x-test-upstream"

func startDeployStack(t *testing.T, bin realenvoy.Binary, service *servicetest.Service) *deployStack {
	t.Helper()
	return startStack(t, bin, service, loadEnvoy(t), service.GRPCAddr)
}

// startStack is startDeployStack with a variant of envoy.yaml, and Envoy's ext_proc cluster
// sent to extProcAddr (the service, or a realenvoy.Recorder in front of it).
func startStack(t *testing.T, bin realenvoy.Binary, service *servicetest.Service, cfg envoyConfig, extProcAddr string) *deployStack {
	t.Helper()
	s := &deployStack{service: service, cfg: cfg}
	withTestMessageTimeout(t, s.cfg)
	withCheckRoutes(t, s.cfg)
	s.upstream = newCaseUpstream(t)
	realenvoy.Loopback(t, s.cfg.bootstrap, map[string]string{
		"cors-extproc":  extProcAddr,
		"demo-upstream": s.upstream.Addr,
	})
	s.envoy = realenvoy.Start(t, bin, s.cfg.bootstrap, realenvoy.Options{})
	return s
}

// withTestMessageTimeout sets the ext_proc filter's message_timeout to testMessageTimeout
// (withCheckRoutes encodes c.hcm into the bootstrap). The shipped value (TestEnvoyBootstrap
// checks it) is for production, where the service answers in microseconds; here the stream
// may pass through a Recorder in the race-instrumented test process, beside other packages'
// tests on 2 cores, and a timeout would let the request through unprocessed
// (failure_mode_allow) and fail a case for a reason that says nothing about its behaviour. A
// server that does not answer still fails the case: after the longer wait, the same way.
func withTestMessageTimeout(t *testing.T, c envoyConfig) {
	t.Helper()
	c.extProc.MessageTimeout = durationpb.New(testMessageTimeout)
	for _, f := range c.hcm.GetHttpFilters() {
		if f.GetName() != extProcFilter {
			continue
		}
		a, err := anypb.New(c.extProc)
		if err != nil {
			t.Fatal(err)
		}
		f.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}
	}
}

// newCaseUpstream is the recording upstream of the behaviour tables: it answers each request
// with the upstreamAnswers entry its upstreamHeader names.
func newCaseUpstream(t *testing.T) *realenvoy.Upstream {
	t.Helper()
	return realenvoy.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(upstreamHeader) == "slow" {
			// Past the local-504 route's timeout.
			time.Sleep(time.Second)
		}
		// Go's server writes these sorted by name, then date and content-length
		// (upstreamFields).
		for k, vs := range upstreamAnswers[r.Header.Get(upstreamHeader)] {
			w.Header()[k] = vs
		}
		w.WriteHeader(http.StatusOK)
	})
}

// do sends one case's request through Envoy (sendCase).
func (s *deployStack) do(t *testing.T, tc routeCase, tag string) *http.Response {
	t.Helper()
	host, path := requestTarget(t, s.cfg.hcm, tc.route)
	return sendCase(t, s.envoy.URL(t, "http"), host, path, tc, tag)
}

// sendCase sends one case's request to the Envoy listener at base ("http://host:port") for
// host and path, tagged so the upstream's record of it can be found. The request is written by
// hand, so that Envoy gets exactly the case's headers in the case's order (net/http would add
// its own and sort them): the request line, host, the case's headers, then the test's own
// (upstreamHeader when the case names an answer, and the tag). caseRequest gives that list,
// for the simulated Envoy to send the same.
func sendCase(t *testing.T, base, host, path string, tc routeCase, tag string) *http.Response {
	t.Helper()
	method, headers := caseRequest(tc, tag)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nhost: %s\r\n", method, path, host)
	for _, kv := range headers {
		fmt.Fprintf(&b, "%s: %s\r\n", kv[0], kv[1])
	}
	b.WriteString("\r\n")
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// requestOf is a case's request as both fronts send it to envoy.yaml's routes: method, path,
// host (the :authority) and every other header in order.
func requestOf(t *testing.T, c envoyConfig, tc routeCase, tag string) (method, path, host string, headers [][2]string) {
	t.Helper()
	host, path = requestTarget(t, c.hcm, tc.route)
	method, headers = caseRequest(tc, tag)
	return method, path, host, headers
}

// caseRequest is a case's method and its headers in the order they are sent.
func caseRequest(tc routeCase, tag string) (method string, headers [][2]string) {
	method = tc.method
	if method == "" {
		method = http.MethodGet
	}
	headers = append(headers, tc.headers...)
	if tc.upstream != "" {
		headers = append(headers, [2]string{upstreamHeader, tc.upstream})
	}
	headers = append(headers, [2]string{realenvoy.TagHeader, tag})
	return method, headers
}

// TestRealEnvoyRoutesBehave plays routeCases through deploy/envoy.yaml on every pinned Envoy
// release, with the server in each mode: the status and every CORS header byte for byte, and
// what the upstream saw. A realenvoy.Recorder in front of cors-extproc records every ext_proc
// message; the recording must equal the release's committed one (testdata/envoy-recordings),
// which the simulated Envoy is held to (TestEnvoyRoutesBehave). -update rewrites them.
func TestRealEnvoyRoutesBehave(t *testing.T) {
	bins := realenvoy.Binaries(t)
	bin := servicetest.Build(t)
	recordings := map[string][]recordedCase{} // by release
	for _, mode := range serverModes {
		t.Run(mode.String(), func(t *testing.T) {
			service := servicetest.Start(t, bin, append(slices.Clone(deploymentArgs), "--mode", mode.String())...)
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("cors-extproc log:\n%s", service.Log())
				}
			})
			for _, bin := range bins {
				t.Run(bin.Version, func(t *testing.T) {
					rec := realenvoy.NewRecorder(t, service.GRPCAddr)
					rec.Alter = alterReply
					s := startStack(t, bin, service, loadEnvoy(t), rec.Addr)
					// One request first, not recorded, so that no case pays for connections
					// being set up.
					s.do(t, routeCases[0], "warm-up")
					for i, tc := range routeCases {
						t.Run(tc.name, func(t *testing.T) {
							tag := fmt.Sprintf("%s-%s-%d", mode, bin.Version, i)
							if tc.local == localRateLimit {
								// The route's bucket holds one token: the first request takes it.
								s.do(t, tc, tag+"-first")
							}
							rec.Reset()
							res := s.do(t, tc, tag)
							recordings[bin.Version] = append(recordings[bin.Version], record(t, mode, tc, res.StatusCode, rec.Streams()))
							checkResponse(t, tc, bin.Version, res)
							checkUpstream(t, tc, s.upstream.Tagged(tag))
						})
					}
				})
			}
		})
	}
	for _, bin := range bins {
		checkRecording(t, bin.Version, recordings[bin.Version], *update)
	}
}

// checkResponse judges one case's response from a real Envoy of release version: the status
// and every CORS header.
func checkResponse(t *testing.T, tc routeCase, version string, res *http.Response) {
	t.Helper()
	if res.StatusCode != tc.status {
		t.Errorf("status %d, want %d", res.StatusCode, tc.status)
	}
	if cors, want := corsHeaders(res.Header), tc.wantCORS(version); !sameHeaders(cors, want) {
		t.Errorf("CORS headers\n got %v\nwant %v", cors, want)
	}
}

// checkUpstream checks what the upstream saw of one case's request.
func checkUpstream(t *testing.T, tc routeCase, seen []realenvoy.Seen) {
	t.Helper()
	reaches := !tc.answered && (tc.local == "" || tc.local == localTimeout)
	switch {
	case !reaches && len(seen) > 0:
		t.Errorf("the upstream saw the request; it should not have reached it")
	case reaches && len(seen) != 1:
		t.Errorf("the upstream saw the request %d times, want once", len(seen))
	case reaches:
		// cors-extproc never changes the request: the upstream gets the method and every
		// header the client sent.
		if want := tc.method; want != "" && seen[0].Method != want {
			t.Errorf("the upstream saw %s, want %s", seen[0].Method, want)
		}
		for _, kv := range tc.headers {
			if got := seen[0].Header.Values(kv[0]); len(got) != 1 || got[0] != kv[1] {
				t.Errorf("the upstream saw %s %q, want %q", kv[0], got, kv[1])
			}
		}
	}
}

// TestRealEnvoyAccessLogGetsDecisions: the decision cors-extproc returns as dynamic metadata
// reaches the access log line envoy.yaml writes, on every pinned release.
func TestRealEnvoyAccessLogGetsDecisions(t *testing.T) {
	bins := realenvoy.Binaries(t)
	service := servicetest.Start(t, servicetest.Build(t), deploymentArgs...)
	tc := routeCase{route: "reports", headers: [][2]string{origin("https://reports.example.com")}}
	want := `"GET /reports/case" 200 origin="https://reports.example.com" cors=actual origin_result=allowed matched="https://reports.example.com" policy=reporting report_only=false`
	for _, bin := range bins {
		t.Run(bin.Version, func(t *testing.T) {
			s := startDeployStack(t, bin, service)
			s.do(t, tc, "access-log")
			awaitAccessLog(t, s.envoy, want)
		})
	}
}

// awaitAccessLog waits for an access log line of e holding want: stdout and file access
// loggers write on their own flush timer.
func awaitAccessLog(t *testing.T, e *realenvoy.Envoy, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.ContainsFunc(e.AccessLog(), func(l string) bool { return strings.Contains(l, want) }) {
		if time.Now().After(deadline) {
			t.Fatalf("no access log line holds\n%s\nlines:\n%s", want, strings.Join(e.AccessLog(), "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRealEnvoyModeOverrideDefault plays filterSkipCases on every pinned release.
func TestRealEnvoyModeOverrideDefault(t *testing.T) {
	bins := realenvoy.Binaries(t)
	service := servicetest.Start(t, servicetest.Build(t), deploymentArgs...)
	for _, bin := range bins {
		t.Run(bin.Version, func(t *testing.T) {
			rec := realenvoy.NewRecorder(t, service.GRPCAddr)
			rec.Alter = alterReply
			cfg := loadEnvoy(t)
			withFilterResponseSkip(t, cfg)
			s := startStack(t, bin, service, cfg, rec.Addr)
			s.do(t, routeCases[0], "warm-up")
			for _, tc := range filterSkipCases {
				t.Run(tc.name, func(t *testing.T) {
					rec.Reset()
					s.do(t, routeCase{route: filterSkipRoute, headers: tc.headers}, "mode")
					streams := rec.Streams()
					if len(streams) != 1 {
						t.Fatalf("%d streams, want 1", len(streams))
					}
					if sent := len(streams[0].Requests) == 2; sent != tc.responsePhase {
						t.Errorf("response phase %v, want %v (messages %v)", sent, tc.responsePhase, streams[0].Requests)
					}
				})
			}
		})
	}
}

// TestRealEnvoyRoundTrips counts the ext_proc messages of each request shape on every pinned
// Envoy (docs/envoy-extproc.md section 7): in one-trip mode an actual request from an allowed
// origin costs one round trip, where two-phase costs two; a response that must lose the
// upstream's ACAO keeps the response phase in both. Envoy's own replies reach ext_proc only
// from 1.37 on (1.36 skips them), which is why the header filters decorate them.
func TestRealEnvoyRoundTrips(t *testing.T) {
	bins := realenvoy.Binaries(t)
	build := servicetest.Build(t)
	cases := []struct {
		tc                  routeCase
		twoPhase, oneTrip   int // messages on the stream
		localReplyToExtProc bool
	}{
		{tc: routeCase{name: "preflight answered", route: "spa-api", method: "OPTIONS",
			headers: [][2]string{origin("https://app.example.com"), {acrm, "PUT"}}}, twoPhase: 1, oneTrip: 1},
		{tc: routeCase{name: "actual, allowed origin", route: "spa-api",
			headers: [][2]string{origin("https://app.example.com")}}, twoPhase: 2, oneTrip: 1},
		{tc: routeCase{name: "actual, rejected origin", route: "spa-api",
			headers: [][2]string{origin("https://evil.test")}}, twoPhase: 2, oneTrip: 2},
		{tc: routeCase{name: "no policy", route: "no-policy", headers: [][2]string{origin("https://app.example.com")}},
			twoPhase: 1, oneTrip: 1},
		{tc: routeCase{name: "503 of Envoy's own, allowed origin", route: "local-503", local: localNoUpstream,
			headers: [][2]string{origin("https://app.example.com")}}, twoPhase: 2, oneTrip: 1, localReplyToExtProc: true},
	}
	for _, mode := range serverModes {
		service := servicetest.Start(t, build, append(slices.Clone(deploymentArgs), "--mode", mode.String())...)
		for _, bin := range bins {
			t.Run(mode.String()+"/"+bin.Version, func(t *testing.T) {
				rec := realenvoy.NewRecorder(t, service.GRPCAddr)
				s := startStack(t, bin, service, loadEnvoy(t), rec.Addr)
				for _, c := range cases {
					rec.Reset()
					s.do(t, c.tc, "round-trips")
					want := c.twoPhase
					if mode == processor.ModeOneTrip {
						want = c.oneTrip
					}
					if c.localReplyToExtProc && !bin.AtLeast("1.37") {
						want = 1
					}
					streams := rec.Streams()
					if len(streams) != 1 || len(streams[0].Requests) != want {
						var got []int
						for _, st := range streams {
							got = append(got, len(st.Requests))
						}
						t.Errorf("%s: messages per stream %v, want [%d]", c.tc.name, got, want)
					}
				}
			})
		}
	}
}
