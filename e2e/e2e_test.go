package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"sigs.k8s.io/yaml"

	"github.com/cors-extproc/cors-extproc/internal/envoytest"
	"github.com/cors-extproc/cors-extproc/internal/realenvoy"
	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

// testMessageTimeout replaces Envoy's 200 ms per-message timeout in both fronts: the suite runs
// under the race detector beside a browser on a 2-core machine, where one exchange can take
// longer. A timeout would still show: envoytest reports it, and the real Envoy counts it.
const testMessageTimeout = 5 * time.Second

// TestBrowser runs every case through each front, each with its own Chromium and its own
// service: the envoytest front with the service in its default mode, and the newest pinned
// Envoy release (ENVOY_BIN picks another) with deploy/envoy.yaml's filter chain and the service
// in the mode deploy/docker-compose.yaml runs beside it (shippedMode). The two run side by
// side; each writes its results page and screenshot.
func TestBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	bin := servicetest.Build(t)

	t.Run("envoytest", func(t *testing.T) {
		t.Parallel()
		svc, flags := startService(t, bin)
		conn, err := grpc.NewClient(svc.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		f := &envoytestFront{
			envoy:  envoytest.New(conn, envoytest.Config{AllowModeOverride: true, MessageTimeout: testMessageTimeout}),
			routes: envoyRoutes(),
		}
		// Two ports: the second is the "public" one (see publicHost).
		srv := &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second}
		var addrs [2]string
		for i := range addrs {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addrs[i] = ln.Addr().String()
			go func() { _ = srv.Serve(ln) }()
		}
		t.Cleanup(func() { _ = srv.Close() })
		runSuite(t, chromium, stack{front: f, name: "envoytest (Envoy played in Go)", file: "envoytest",
			main: addrs[0], public: addrs[1], svc: svc, flags: flags})
	})

	t.Run("envoy", func(t *testing.T) {
		t.Parallel()
		envoyBin := realenvoy.Newest(t)
		svc, flags := startService(t, bin, shippedMode(t)...)
		f, main, public := startEnvoyFront(t, envoyBin, svc)
		runSuite(t, chromium, stack{front: f, name: "Envoy " + envoyBin.Version + " (" + strings.TrimPrefix(shippedBootstrap, "../") + ")",
			file: "envoy-" + envoyBin.Version, main: main, public: public, svc: svc, flags: flags})
	})
}

// startService runs the real binary, not processor.New in-process, so that the flags, the
// policy file loading and the gRPC server setup are what the browser is judged against. It
// returns the service and the flags that matter to behaviour (the rest pick ports and logs).
func startService(t *testing.T, bin string, extra ...string) (*servicetest.Service, []string) {
	t.Helper()
	flags := append([]string{"--policies", "(namedPolicies)"}, extra...)
	svc := servicetest.Start(t, bin, append([]string{"--admin-addr", "", "--drain-period", "0s", "--shutdown-grace", "5s",
		"--policies", servicetest.WritePolicies(t, namedPolicies)}, extra...)...)
	return svc, flags
}

// shippedMode is the --mode flag deploy/docker-compose.yaml gives the service it runs beside
// deploy/envoy.yaml: the mode the shipped filter chain is meant for (README, "Two modes"), or
// none when the file sets none.
func shippedMode(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(shippedCompose)
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Command []string `json:"command"`
		} `json:"services"`
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatalf("%s: %v", shippedCompose, err)
	}
	for _, arg := range compose.Services["cors-extproc"].Command {
		if strings.HasPrefix(arg, "--mode=") {
			return []string{arg}
		}
	}
	return nil
}

// shippedCompose runs deploy/envoy.yaml with the service (tests run in e2e/).
const shippedCompose = "../deploy/docker-compose.yaml"

// stack is one front with the service behind it, ready for a browser.
type stack struct {
	front
	// name says what plays Envoy, for the results page; file names its results files.
	name, file string
	// main and public are the front's two addresses (see publicHost).
	main, public string
	svc          *servicetest.Service
	// flags are the service's flags that matter to behaviour, for the results page.
	flags []string
}

// runSuite plays every case in one Chromium through s, then writes the results page and its
// screenshot.
func runSuite(t *testing.T, chromium string, s stack) {
	start := time.Now()
	hostRules := fmt.Sprintf("MAP %s %s, MAP *.test %s, MAP * ~NOTFOUND", publicHost, s.public, s.main)
	_, publicPort, _ := net.SplitHostPort(s.public)
	publicOrigin := "http://" + publicHost + ":" + publicPort
	b := startBrowser(t, chromium, hostRules, s.public+"=public")
	t.Logf("%s; %s on %s (public: %s); cors-extproc %s, gRPC on %s", b.version, s.name, s.main, s.public, strings.Join(s.flags, " "), s.svc.GRPCAddr)

	var runs []*caseRun
	for _, c := range browserCases(publicOrigin) {
		r := &caseRun{Case: c, svc: s.svc}
		runs = append(runs, r)
		t.Run(c.Name, func(t *testing.T) {
			if c.RealEnvoyOnly && !s.ownReplies() {
				r.NotPlayed = true
				t.Skip(notPlayed)
			}
			r.Err = play(b, s, r)
			if r.Err != nil {
				t.Error(r.Err)
			}
			if r.Note != "" {
				t.Log(r.Note)
			}
		})
	}

	// The whole run: the service never broke the ext_proc contract.
	faults := s.faults(t)
	if len(faults) > 0 {
		t.Errorf("ext_proc exchanges that failed:\n%s", strings.Join(faults, "\n"))
	}

	b.syncConsole()
	attachConsole(b, runs)
	rep := report{
		Front:      s.name,
		Flags:      strings.Join(s.flags, " "),
		Browser:    b.version,
		Started:    start,
		Duration:   time.Since(start).Round(time.Second),
		Runs:       runs,
		Contract:   faults,
		Preflights: preflightsPerRoute(s.front),
	}
	html, png, err := writeResults(b, s.file, rep)
	if err != nil {
		t.Errorf("writing the results page: %v", err)
		return
	}
	t.Logf("results: %s and %s", html, png)
}

// notPlayed says why a front skips a RealEnvoyOnly case.
const notPlayed = "real Envoy only: this front does not make Envoy's own replies (router 503/504, direct_response, RBAC, local rate limit)"

// play runs one case in the browser and judges it.
func play(b *browserSession, s stack, r *caseRun) error {
	c := r.Case
	if c.Grant != "" {
		if err := b.grant(c.Page, c.Grant); err != nil {
			return fmt.Errorf("granting %s to %s: %w", c.Grant, c.Page, err)
		}
	}
	if err := b.open(c.Page); err != nil {
		return fmt.Errorf("loading the page of %s: %w", c.Page, err)
	}
	for i, cl := range c.Calls {
		time.Sleep(cl.Wait)
		o, err := b.fetch(cl.url(c.Name), cl.Init, cl.Read)
		if err != nil {
			return fmt.Errorf("call %d: running fetch in the page: %w", i+1, err)
		}
		r.Out = append(r.Out, o)
	}
	prefix := "/c/" + c.Name + "/"
	srv := s.served(prefix)
	seen, err := join(srv, b.wire.exchanged(prefix, len(srv)))
	r.Seen = seen
	if err != nil {
		return err
	}
	return c.Check(r)
}

// attachConsole gives each case what Chromium logged about its URLs.
func attachConsole(b *browserSession, runs []*caseRun) {
	msgs := b.consoleMessages()
	for _, r := range runs {
		marker := "/c/" + r.Case.Name + "/"
		for _, m := range msgs {
			if strings.Contains(m.Text, marker) || strings.Contains(m.URL, marker) {
				r.Console = append(r.Console, m.Text)
			}
		}
	}
}
