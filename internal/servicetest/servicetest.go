// Package servicetest builds the cors-extproc binary and runs it on loopback, for the suites
// that judge the real service rather than processor.New in-process (e2e, soak): the flags, the
// named-policy file loading, the gRPC server options and the drain are then production's. PKI
// makes the certificates for its TLS flags.
package servicetest

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Service is the cors-extproc binary, running for the length of a test.
type Service struct {
	Cmd *exec.Cmd
	// GRPCAddr and AdminAddr are the addresses the binary reported in its "serving" log line;
	// AdminAddr is empty when the admin listener is off.
	GRPCAddr, AdminAddr string

	exited  chan struct{} // closed once the process has exited and its log is read
	exitErr error         // the process's exit status, valid once exited is closed

	mu   sync.Mutex
	logs []string // stderr, one JSON log line each
}

// Build builds ./cmd/cors-extproc into the test's temporary folder as `make build` does and
// returns the binary's path.
func Build(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cors-extproc")
	out, err := exec.Command("go", "build", "-o", bin,
		"github.com/cors-extproc/cors-extproc/cmd/cors-extproc").CombinedOutput()
	if err != nil {
		t.Fatalf("building cors-extproc: %v\n%s", err, out)
	}
	return bin
}

// WritePolicies writes a named-policy file into the test's temporary folder and returns its
// path.
func WritePolicies(t testing.TB, content string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// Start runs bin on free loopback ports (--grpc-addr and --admin-addr 127.0.0.1:0, JSON logs;
// args come after them, so they may override) and waits for its "serving" line. The
// CORS_EXTPROC_* variables are dropped from its environment, so that a developer's settings
// cannot change the server under test. When the test ends, a process still running gets
// SIGTERM and must stop cleanly within 10 s.
func Start(t testing.TB, bin string, args ...string) *Service {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--log-format", "json"}, args...)...)
	cmd.Env = withoutServiceEnv(os.Environ())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting cors-extproc: %v", err)
	}
	s := &Service{Cmd: cmd, exited: make(chan struct{})}
	serving := make(chan [2]string, 1)
	go func() {
		defer close(s.exited)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.logs = append(s.logs, line)
			s.mu.Unlock()
			var l struct {
				Msg       string `json:"msg"`
				GRPCAddr  string `json:"grpc_addr"`
				AdminAddr string `json:"admin_addr"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "serving" {
				select {
				case serving <- [2]string{l.GRPCAddr, l.AdminAddr}:
				default:
				}
			}
		}
		s.exitErr = cmd.Wait()
	}()
	t.Cleanup(func() { s.stop(t) })
	select {
	case addrs := <-serving:
		s.GRPCAddr, s.AdminAddr = addrs[0], addrs[1]
	case <-s.exited:
		t.Fatalf("cors-extproc exited before serving: %v\n%s", s.exitErr, s.Log())
	case <-time.After(30 * time.Second):
		t.Fatalf("cors-extproc did not report serving within 30s:\n%s", s.Log())
	}
	return s
}

// stop ends a process the test left running: SIGTERM, as the kubelet sends, and a clean exit
// within 10 s, or the test fails.
func (s *Service) stop(t testing.TB) {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.Signal()
	select {
	case <-s.exited:
		if s.exitErr != nil {
			t.Errorf("cors-extproc did not stop cleanly on SIGTERM: %v\n%s", s.exitErr, s.Log())
		}
	case <-time.After(10 * time.Second):
		_ = s.Cmd.Process.Kill()
		<-s.exited
		t.Errorf("cors-extproc did not stop within 10s of SIGTERM:\n%s", s.Log())
	}
}

// Signal sends SIGTERM, as the kubelet does to start the drain.
func (s *Service) Signal() error { return s.Cmd.Process.Signal(syscall.SIGTERM) }

// Exited is closed once the process has exited; ExitErr then holds its exit status.
func (s *Service) Exited() <-chan struct{} { return s.exited }

// ExitErr is the process's exit status, once Exited is closed.
func (s *Service) ExitErr() error {
	<-s.exited
	return s.exitErr
}

// Log returns everything the binary has logged so far.
func (s *Service) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.logs, "\n")
}

// Logged reports whether one log line holds every one of the strings.
func (s *Service) Logged(parts ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
lines:
	for _, l := range s.logs {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue lines
			}
		}
		return true
	}
	return false
}

// withoutServiceEnv drops the CORS_EXTPROC_* variables, each of which stands in for a flag.
func withoutServiceEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "CORS_EXTPROC_") {
			out = append(out, kv)
		}
	}
	return out
}
