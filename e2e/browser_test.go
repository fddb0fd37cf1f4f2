package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/chromedp"
)

// e2eEnv must be 1 for the suite to run; `make e2e` sets it. Without it `go test ./...` (and so
// `make test`) skips the suite at once, since it builds a binary and starts a browser.
const e2eEnv = "CORS_E2E"

// chromiumPath returns the browser to drive, or ends the test: skipped when the suite was not
// asked for, or when Chromium is missing outside CI; failed when Chromium is missing in CI,
// where .ci/run installs it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if os.Getenv(e2eEnv) != "1" {
		t.Skip("browser suite: run it with `make e2e` (sets " + e2eEnv + "=1)")
	}
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const msg = "browser suite: Chromium not found (apt-get install chromium, or set CHROMIUM)"
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatal(msg + "; CI installs it, so this is a failure")
	}
	t.Skip(msg)
	return ""
}

// browserSession is one headless Chromium with one tab.
type browserSession struct {
	ctx     context.Context
	version string
	// wire is what Chromium reports of every request it sends (wire_test.go).
	wire *wireLog

	mu      sync.Mutex
	console []chromedp.ConsoleMessage
}

// startBrowser starts Chromium with the flags known to work on this network: without the
// background-networking ones Chromium floods a closed network with connections. hostRules maps
// the suite's host names to the front (--host-resolver-rules) and every other name to nowhere;
// addressSpaces marks endpoints as public or private (--ip-address-space-overrides) for the
// Private Network Access observation.
func startBrowser(t *testing.T, path, hostRules, addressSpaces string) *browserSession {
	t.Helper()
	userData := t.TempDir() // made before the browser starts, so removed after it stopped
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(userData),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("host-resolver-rules", hostRules),
		chromedp.Flag("ip-address-space-overrides", addressSpaces),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc() // waits for the browser to exit
	})

	b := &browserSession{ctx: ctx}
	// The first Run starts the browser; it takes a context without a deadline, since the
	// browser lives as long as that context.
	v, err := chromedp.CallBrowser(ctx, browser.GetVersion, cdp.Empty{})
	if err != nil {
		t.Fatalf("starting Chromium (%s): %v", path, err)
	}
	b.version = v.Product
	if b.wire, err = listenWire(ctx); err != nil {
		t.Fatalf("Chromium: %v", err)
	}
	// The console carries Chromium's own account of each CORS failure; it is shown on the
	// results page, never used for a verdict (its messages arrive asynchronously).
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, m)
			b.mu.Unlock()
		}
	}()
	return b
}

// open loads the test page of origin.
func (b *browserSession) open(origin string) error {
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	return chromedp.Do(ctx, chromedp.Navigate(origin+"/page"))
}

// grant gives origin the permission, as if the user had allowed it at the prompt.
func (b *browserSession) grant(origin, permission string) error {
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	_, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
		Permission: &browser.PermissionDescriptor{Name: permission},
		Setting:    browser.PermissionSettingGranted,
		Origin:     origin,
	})
	return err
}

// outcome is what the page's JavaScript got from one fetch.
type outcome struct {
	Resolved bool               `json:"resolved"`
	Status   int                `json:"status"`
	Body     string             `json:"body"`
	Headers  map[string]*string `json:"headers"`
	Error    string             `json:"error"`
}

// String is the outcome as a person reads it on the results page.
func (o outcome) String() string {
	if !o.Resolved {
		return "rejected: " + o.Error
	}
	s := fmt.Sprintf("resolved %d, body %s", o.Status, strings.TrimSpace(o.Body))
	for _, name := range slices.Sorted(maps.Keys(o.Headers)) {
		if v := o.Headers[name]; v == nil {
			s += fmt.Sprintf("; %s: hidden (null)", name)
		} else {
			s += fmt.Sprintf("; %s: %q", name, *v)
		}
	}
	return s
}

// fetch has the open page call fetch(url, init) and report what its JavaScript could read.
func (b *browserSession) fetch(url string, init map[string]any, read []string) (outcome, error) {
	if read == nil {
		read = []string{}
	}
	args, err := json.Marshal([]any{url, init, read})
	if err != nil {
		return outcome{}, err
	}
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	expr := fmt.Sprintf("probe(...%s)", args)
	return chromedp.Run(ctx, chromedp.Evaluate[outcome](expr, chromedp.EvalAwaitPromise))
}

// syncConsole waits until the console has caught up with the page: the messages are delivered
// asynchronously, so a marker is logged and awaited.
func (b *browserSession) syncConsole() {
	marker := fmt.Sprintf("e2e-sync-%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](fmt.Sprintf("console.log(%q)", marker))); err != nil {
		return
	}
	for ctx.Err() == nil {
		for _, m := range b.consoleMessages() {
			if m.Text == marker {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// consoleMessages returns what the browser logged so far.
func (b *browserSession) consoleMessages() []chromedp.ConsoleMessage {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]chromedp.ConsoleMessage(nil), b.console...)
}

// screenshot renders the page at url (the results page) and returns a PNG of all of it.
func (b *browserSession) screenshot(url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		return nil, err
	}
	return chromedp.Run(ctx, chromedp.FullScreenshot(100))
}
