package e2e

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cors-extproc/cors-extproc/internal/envoytest"
	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

// TestBrowser runs every case in one Chromium against the real service behind the front, then
// writes the results page and its screenshot.
// testMessageTimeout replaces Envoy's 200 ms per-message timeout: the suite runs under the race
// detector beside a browser on a 2-core machine, where one exchange can take longer.
const testMessageTimeout = 5 * time.Second

func TestBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	start := time.Now()

	// The front's ports come first: Chromium's host rules name them. The second port is the
	// "public" one (see publicHost).
	mainLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	publicLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}

	// The real binary, not processor.New in-process, so that the flags, the policy file loading
	// and the gRPC server setup are what the browser is judged against.
	svc := servicetest.Start(t, servicetest.Build(t), "--admin-addr", "", "--drain-period", "0s",
		"--shutdown-grace", "5s", "--policies", servicetest.WritePolicies(t, namedPolicies))
	conn, err := grpc.NewClient(svc.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	f := &front{
		envoy:  envoytest.New(conn, envoytest.Config{AllowModeOverride: true, MessageTimeout: testMessageTimeout}),
		routes: envoyRoutes(),
		site:   siteRoute,
	}
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(mainLn) }()
	go func() { _ = srv.Serve(publicLn) }()
	t.Cleanup(func() { _ = srv.Close() })

	hostRules := fmt.Sprintf("MAP %s %s, MAP *.test %s, MAP * ~NOTFOUND", publicHost, publicLn.Addr(), mainLn.Addr())
	_, publicPort, _ := net.SplitHostPort(publicLn.Addr().String())
	publicOrigin := "http://" + publicHost + ":" + publicPort
	b := startBrowser(t, chromium, hostRules, publicLn.Addr().String()+"=public")
	t.Logf("%s; cors-extproc gRPC on %s; front on %s (public: %s)", b.version, svc.GRPCAddr, mainLn.Addr(), publicLn.Addr())

	var runs []*caseRun
	for _, c := range browserCases(publicOrigin) {
		r := &caseRun{Case: c, svc: svc}
		runs = append(runs, r)
		t.Run(c.Name, func(t *testing.T) {
			r.Err = play(b, f, r)
			if r.Err != nil {
				t.Error(r.Err)
			}
			if r.Note != "" {
				t.Log(r.Note)
			}
		})
	}

	// The whole run: the service never broke the ext_proc contract (envoytest reports it).
	var contract []string
	for _, ex := range f.all() {
		if ex.Err != "" {
			contract = append(contract, fmt.Sprintf("%s %s%s: %s", ex.Method, ex.Host, ex.Path, ex.Err))
		}
	}
	if len(contract) > 0 {
		t.Errorf("ext_proc exchanges that failed (Envoy would answer 500 or 504):\n%s", strings.Join(contract, "\n"))
	}

	b.syncConsole()
	attachConsole(b, runs)
	rep := report{
		Browser:    b.version,
		Started:    start,
		Duration:   time.Since(start).Round(time.Second),
		Runs:       runs,
		Contract:   contract,
		Preflights: f.preflights(),
	}
	html, png, err := writeResults(b, rep)
	if err != nil {
		t.Errorf("writing the results page: %v", err)
		return
	}
	t.Logf("results: %s and %s", html, png)
}

// play runs one case in the browser and judges it.
func play(b *browserSession, f *front, r *caseRun) error {
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
	r.Seen = f.exchanges("/c/" + c.Name + "/")
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
