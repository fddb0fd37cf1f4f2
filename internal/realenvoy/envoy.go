package realenvoy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
)

// Options tune how Envoy runs; the zero value is what tests want.
type Options struct {
	// Concurrency is --concurrency, the worker threads; 0 means 1, which is plenty for
	// functional tests on a 2-core machine.
	Concurrency int
	// LogLevel is --log-level; "" means "warning".
	LogLevel string
	// Args are more command-line arguments.
	Args []string
	// ReadyTimeout bounds the wait for /ready; 0 means 30 s.
	ReadyTimeout time.Duration
}

// Envoy is a running Envoy process, stopped when the test ends.
type Envoy struct {
	Binary    Binary
	AdminAddr string            // host:port of the admin listener
	Listeners map[string]string // listener name → host:port it bound
	// ConfigPath is the bootstrap Envoy was started with, kept for the failure message.
	ConfigPath string

	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	stdout bytes.Buffer // the stdout access log
	stderr bytes.Buffer // Envoy's own log
}

// Start runs bin on b (which must already be on loopback: see Loopback), waits until the admin
// /ready says LIVE, and finds the port of every listener. Envoy's log is shown when the test
// fails; Envoy gets SIGTERM when the test ends.
func Start(t testing.TB, bin Binary, b *bootstrapv3.Bootstrap, opts Options) *Envoy {
	t.Helper()
	dir := t.TempDir()
	cfg, err := encode(b)
	if err != nil {
		t.Fatal(err)
	}
	e := &Envoy{Binary: bin, ConfigPath: filepath.Join(dir, "envoy.json"), exited: make(chan struct{})}
	if err := os.WriteFile(e.ConfigPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	adminPath := filepath.Join(dir, "admin-address")
	concurrency := max(opts.Concurrency, 1)
	logLevel := opts.LogLevel
	if logLevel == "" {
		logLevel = "warning"
	}
	args := append([]string{"-c", e.ConfigPath, "--admin-address-path", adminPath,
		"--concurrency", fmt.Sprint(concurrency), "--log-level", logLevel,
		// Several Envoys may run at once (parallel packages): no shared memory between them.
		"--disable-hot-restart",
	}, opts.Args...)
	e.cmd = exec.Command(bin.Path, args...)
	e.cmd.Stdout = &lockedWriter{mu: &e.mu, w: &e.stdout}
	e.cmd.Stderr = &lockedWriter{mu: &e.mu, w: &e.stderr}
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("starting Envoy %s: %v", bin.Version, err)
	}
	go func() {
		_ = e.cmd.Wait()
		close(e.exited)
	}()
	t.Cleanup(func() {
		e.Stop()
		if t.Failed() {
			t.Logf("Envoy %s log (config %s):\n%s", bin.Version, e.ConfigPath, e.tail(120))
		}
	})

	timeout := opts.ReadyTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	if err := e.waitReady(adminPath, timeout); err != nil {
		t.Fatalf("Envoy %s: %v\n%s", bin.Version, err, e.tail(80))
	}
	if err := e.findListeners(); err != nil {
		t.Fatalf("Envoy %s: %v", bin.Version, err)
	}
	return e
}

// waitReady waits for the admin address file, then for /ready to answer 200 (LIVE: every
// cluster initialized, first health checks included).
func (e *Envoy) waitReady(adminPath string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for ; time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-e.exited:
			return fmt.Errorf("exited before it was ready")
		default:
		}
		if e.AdminAddr == "" {
			raw, err := os.ReadFile(adminPath)
			if err != nil || len(bytes.TrimSpace(raw)) == 0 {
				continue
			}
			e.AdminAddr = strings.TrimSpace(string(raw))
		}
		status, _, err := e.Admin("GET", "/ready")
		if err == nil && status == http.StatusOK {
			return nil
		}
	}
	return fmt.Errorf("not ready within %v", timeout)
}

// findListeners asks the admin API which port each listener bound.
func (e *Envoy) findListeners() error {
	_, body, err := e.Admin("GET", "/listeners?format=json")
	if err != nil {
		return err
	}
	var ls struct {
		ListenerStatuses []struct {
			Name         string `json:"name"`
			LocalAddress struct {
				SocketAddress struct {
					Address   string `json:"address"`
					PortValue int    `json:"port_value"`
				} `json:"socket_address"`
			} `json:"local_address"`
		} `json:"listener_statuses"`
	}
	if err := json.Unmarshal(body, &ls); err != nil {
		return fmt.Errorf("/listeners: %v: %s", err, body)
	}
	e.Listeners = map[string]string{}
	for _, l := range ls.ListenerStatuses {
		sa := l.LocalAddress.SocketAddress
		e.Listeners[l.Name] = fmt.Sprintf("%s:%d", sa.Address, sa.PortValue)
	}
	return nil
}

// URL is "http://host:port" of the named listener; "" names the only listener.
func (e *Envoy) URL(t testing.TB, listener string) string {
	t.Helper()
	if listener == "" && len(e.Listeners) == 1 {
		for _, a := range e.Listeners {
			return "http://" + a
		}
	}
	a, ok := e.Listeners[listener]
	if !ok {
		t.Fatalf("Envoy has no listener %q (has %v)", listener, e.Listeners)
	}
	return "http://" + a
}

// Admin sends one request to the admin API.
func (e *Envoy) Admin(method, path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+e.AdminAddr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return res.StatusCode, body, err
}

// Counter returns one stat of /stats (0 when Envoy does not have it).
func (e *Envoy) Counter(t testing.TB, name string) int64 {
	t.Helper()
	_, body, err := e.Admin("GET", "/stats?format=json&filter=^"+name+"$")
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Stats []struct {
			Name  string `json:"name"`
			Value int64  `json:"value"`
		} `json:"stats"`
	}
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("/stats: %v: %s", err, body)
	}
	for _, st := range s.Stats {
		if st.Name == name {
			return st.Value
		}
	}
	return 0
}

// AccessLog returns what Envoy wrote to stdout (a stdout access logger's lines), so far.
func (e *Envoy) AccessLog() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Split(strings.TrimRight(e.stdout.String(), "\n"), "\n")
}

// Log returns Envoy's own log so far.
func (e *Envoy) Log() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stderr.String()
}

func (e *Envoy) tail(n int) string {
	lines := strings.Split(e.Log(), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// PID is the Envoy process's id (for reading its CPU time from /proc).
func (e *Envoy) PID() int { return e.cmd.Process.Pid }

// Stop ends Envoy: SIGTERM, then SIGKILL after 5 s. Safe to call more than once.
func (e *Envoy) Stop() {
	select {
	case <-e.exited:
		return
	default:
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(5 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.exited
	}
}

// lockedWriter lets the process's output goroutines and the test read the buffers safely.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
