package deploy_test

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cors-extproc/cors-extproc/internal/realenvoy"
	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

// The Envoy configurations the repository ships as bootstraps.
var shippedBootstraps = []string{"envoy.yaml"}

// TestRealEnvoyValidatesShippedConfigs runs `envoy --mode validate` on every shipped bootstrap,
// with every pinned Envoy release.
func TestRealEnvoyValidatesShippedConfigs(t *testing.T) {
	for _, bin := range realenvoy.Binaries(t) {
		for _, file := range shippedBootstraps {
			t.Run(bin.Version+"/"+file, func(t *testing.T) {
				out, err := exec.Command(bin.Path, "--mode", "validate", "-c", file, "--log-level", "warn").CombinedOutput()
				if err != nil || !strings.Contains(string(out), "OK") {
					t.Errorf("envoy %s --mode validate -c %s: %v\n%s", bin.Version, file, err, out)
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
	client   *http.Client
}

// deploymentArgs are the server's arguments in deploy/k8s/base/deployment.yaml that matter to
// behaviour (the policies file at its path in the repository).
var deploymentArgs = []string{"--policies", namedPoliciesFile, "--dynamic-metadata"}

// upstreamHeader picks the upstream's answer (upstreamAnswers) for one request.
const upstreamHeader = "x-test-upstream"

func startDeployStack(t *testing.T, bin realenvoy.Binary, service *servicetest.Service) *deployStack {
	t.Helper()
	return startStack(t, bin, service, loadEnvoy(t))
}

// startStack is startDeployStack with a variant of envoy.yaml.
func startStack(t *testing.T, bin realenvoy.Binary, service *servicetest.Service, cfg envoyConfig) *deployStack {
	t.Helper()
	s := &deployStack{service: service, cfg: cfg}
	withCheckRoutes(t, s.cfg)
	s.upstream = realenvoy.NewUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		for k, vs := range upstreamAnswers[r.Header.Get(upstreamHeader)] {
			w.Header()[k] = vs
		}
		w.WriteHeader(http.StatusOK)
	})
	realenvoy.Loopback(t, s.cfg.bootstrap, map[string]string{
		"cors-extproc":  service.GRPCAddr,
		"demo-upstream": s.upstream.Addr,
	})
	s.envoy = realenvoy.Start(t, bin, s.cfg.bootstrap, realenvoy.Options{})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	s.client = &http.Client{Transport: tr}
	return s
}

// do sends one case's request through Envoy, tagged so the upstream's record of it can be found.
func (s *deployStack) do(t *testing.T, tc routeCase, tag string) *http.Response {
	t.Helper()
	host, path := requestTarget(t, s.cfg.hcm, tc.route)
	method := tc.method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, s.envoy.URL(t, "http")+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for _, kv := range tc.headers {
		req.Header.Add(kv[0], kv[1])
	}
	req.Header.Set(realenvoy.TagHeader, tag)
	req.Header.Set(upstreamHeader, tc.upstream)
	res, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// TestRealEnvoyRoutesBehave plays envoyRouteCases through deploy/envoy.yaml on every pinned
// Envoy release: the status and every CORS header byte for byte, and what the upstream saw.
func TestRealEnvoyRoutesBehave(t *testing.T) {
	bins := realenvoy.Binaries(t)
	service := servicetest.Start(t, servicetest.Build(t), deploymentArgs...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cors-extproc log:\n%s", service.Log())
		}
	})
	for _, bin := range bins {
		t.Run(bin.Version, func(t *testing.T) {
			s := startDeployStack(t, bin, service)
			for i, tc := range envoyRouteCases {
				t.Run(tc.name, func(t *testing.T) {
					tag := fmt.Sprintf("%s-%d", bin.Version, i)
					res := s.do(t, tc, tag)
					if res.StatusCode != tc.status {
						t.Errorf("status %d, want %d", res.StatusCode, tc.status)
					}
					if cors := corsHeaders(res.Header); !sameHeaders(cors, tc.cors) {
						t.Errorf("CORS headers\n got %v\nwant %v", cors, tc.cors)
					}
					seen := s.upstream.Tagged(tag)
					switch {
					case tc.answered && len(seen) > 0:
						t.Errorf("the upstream saw the request; cors-extproc should have answered it")
					case !tc.answered && len(seen) != 1:
						t.Errorf("the upstream saw the request %d times, want once", len(seen))
					case !tc.answered:
						// cors-extproc never changes the request: the upstream gets the method
						// and every header the client sent.
						if want := tc.method; want != "" && seen[0].Method != want {
							t.Errorf("the upstream saw %s, want %s", seen[0].Method, want)
						}
						for _, kv := range tc.headers {
							if got := seen[0].Header.Values(kv[0]); len(got) != 1 || got[0] != kv[1] {
								t.Errorf("the upstream saw %s %q, want %q", kv[0], got, kv[1])
							}
						}
					}
				})
			}
		})
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
			// The stdout access logger writes on its own flush timer.
			deadline := time.Now().Add(10 * time.Second)
			for !slices.ContainsFunc(s.envoy.AccessLog(), func(l string) bool { return strings.Contains(l, want) }) {
				if time.Now().After(deadline) {
					t.Fatalf("no access log line holds\n%s\nlines:\n%s", want, strings.Join(s.envoy.AccessLog(), "\n"))
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}
