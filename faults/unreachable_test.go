package faults

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/cors-extproc/cors-extproc/internal/realenvoy"

	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

// messageTimeout is deploy/envoy.yaml's ext_proc message_timeout (newStack checks it); a
// request waits for it at most once per phase (request headers, response headers).
const messageTimeout = 500 * time.Millisecond

// hangBound is the most any request may take through a stalled or missing service: both
// phases' message timeouts, and a second for a machine shared with other work.
const hangBound = 2*messageTimeout + time.Second

// answer is one request of the table and its outcome.
type answer struct {
	status  int
	acao    string
	outcome outcome
	latency time.Duration
}

func (a answer) String() string {
	acao := a.acao
	if acao == "" {
		acao = "-"
	}
	return fmt.Sprintf("%d %s (%s)", a.status, acao, a.outcome)
}

// TestUnreachable plays every request shape through deploy/envoy.yaml against a service that
// is up, down (its port refuses connections) and stalled (SIGSTOP: connections are accepted,
// nothing answers), with failure_mode_allow as shipped (true) and flipped, and with the server
// in each --mode, on every pinned Envoy. With fail-open, nothing may be granted that the policy would not grant (the
// upstream's own ACAO is on every upstream answer); with fail-closed, every request of a
// route with CORS is refused with status_on_error; no request waits past the message
// timeouts. The table it logs is docs/failure-modes.md's.
func TestUnreachable(t *testing.T) {
	requireFaults(t)
	bin := servicetest.Build(t)
	variants := []struct {
		name     string
		failOpen bool
		edit     func(*testing.T, *hcmv3.HttpConnectionManager)
		mode     string // the server's --mode
	}{
		{"failure_mode_allow: true (shipped)", true, nil, "two-phase"},
		{"failure_mode_allow: false", false, func(t *testing.T, hcm *hcmv3.HttpConnectionManager) {
			editExtProc(t, hcm, func(p *extprocv3.ExternalProcessor) { p.FailureModeAllow = false })
		}, "two-phase"},
		// The header filters after ext_proc write the headers from the request phase's
		// metadata, which is empty when the service is down or late.
		{"failure_mode_allow: true (shipped), server --mode one-trip", true, nil, "one-trip"},
	}
	for _, envoy := range realenvoy.Binaries(t) {
		for _, v := range variants {
			failOpen := v.failOpen
			t.Run(envoy.Version+"/"+v.name, func(t *testing.T) {
				addr := freeAddr(t)
				var edit func(*hcmv3.HttpConnectionManager)
				if v.edit != nil {
					edit = func(hcm *hcmv3.HttpConnectionManager) { v.edit(t, hcm) }
				}
				svc := startReplica(t, bin, addr, "--drain-period=0", "--mode", v.mode)
				s := newStack(t, envoy, []string{addr}, edit)
				play := func() []answer {
					out := make([]answer, len(allShapes))
					client := newClient()
					for i, sh := range allShapes {
						out[i] = s.do(t, client, sh)
					}
					return out
				}

				up := play()
				if err := svc.Signal(); err != nil {
					t.Fatal(err)
				}
				<-svc.Exited()
				down := play()
				svc = startReplica(t, bin, addr, "--drain-period=0", "--mode", v.mode)
				s.waitOK(t, newClient())
				stall(t, svc)
				stalled := play()

				var table strings.Builder
				fmt.Fprintf(&table, "Envoy %s, %s (status, ACAO, outcome)\n", envoy.Version, v.name)
				fmt.Fprintf(&table, "%-42s %-32s %-32s %-32s\n", "request", "service up", "service down", "service stalled")
				for i, sh := range allShapes {
					fmt.Fprintf(&table, "%-42s %-32s %-32s %-32s\n", sh.name, up[i], down[i], stalled[i])
				}
				fmt.Fprintf(&table, "slowest answer: down %v, stalled %v; Envoy ext_proc: %s",
					slowest(down).Round(time.Millisecond), slowest(stalled).Round(time.Millisecond), s.extProcStats(t))
				t.Log("\n" + table.String())

				for i, sh := range allShapes {
					if up[i].outcome != ok {
						t.Errorf("service up, %s: %v, want status %d ACAO %q", sh.name, up[i], sh.status, sh.acao)
					}
					for state, a := range map[string]answer{"down": down[i], "stalled": stalled[i]} {
						if a.latency > hangBound {
							t.Errorf("service %s, %s: answered after %v, past %v", state, sh.name, a.latency, hangBound)
						}
						switch {
						case sh == internalRoute:
							// ext_proc is off there: the service's state changes nothing.
							if a.outcome != ok {
								t.Errorf("service %s, %s (no CORS): %v, want it unchanged", state, sh.name, a)
							}
						case failOpen && a.outcome != open && a.outcome != ok:
							// Fail-open: the upstream answers, and gets through only what the
							// policy would have let through (the preflight_continue route's
							// preflight, which the policy leaves to the upstream).
							t.Errorf("fail-open, service %s, %s: %v, want the upstream's answer with nothing granted", state, sh.name, a)
						case failOpen && a.acao != "" && a.acao != sh.acao:
							t.Errorf("fail-open, service %s, %s: ACAO %q, the policy grants %q", state, sh.name, a.acao, sh.acao)
						case !failOpen && state == "down" && (a.outcome != closed || a.status != http.StatusServiceUnavailable):
							t.Errorf("fail-closed, service down, %s: %v, want 503 (status_on_error)", sh.name, a)
						case !failOpen && state == "stalled" && (a.outcome != closed || a.status != http.StatusGatewayTimeout):
							// status_on_error does not apply to a message timeout.
							t.Errorf("fail-closed, service stalled, %s: %v, want 504 (message timeout)", sh.name, a)
						}
					}
				}
			})
		}
	}
}

// newClient is a client that shows redirects as they are and gives up after 10 s.
func newClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// waitOK sends an allowed actual request until it gets the policy's answer (cors-extproc is
// serving through Envoy), or fails the test after a minute.
func (s *stack) waitOK(t *testing.T, client *http.Client) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); s.do(t, client, actualAllowed).outcome != ok; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no request got the policy's answer within a minute")
		}
	}
}

// do sends one request of shape sh through Envoy.
func (s *stack) do(t *testing.T, client *http.Client, sh shape) answer {
	t.Helper()
	target := sh.request(s.base, 0)
	req, err := http.NewRequest(target.Method, target.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = target.Header
	start := time.Now()
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", sh.name, err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return answer{status: res.StatusCode, acao: strings.Join(res.Header.Values("Access-Control-Allow-Origin"), ","),
		outcome: judge(sh, res.StatusCode, res.Header, ""), latency: time.Since(start)}
}

func slowest(as []answer) time.Duration {
	var m time.Duration
	for _, a := range as {
		m = max(m, a.latency)
	}
	return m
}
