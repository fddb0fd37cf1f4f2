package e2e

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

// service is the real cors-extproc binary, running on loopback for the length of the test.
type service struct {
	// addr is the gRPC address the binary reported in its "serving" log line.
	addr string

	mu   sync.Mutex
	logs []string // stderr, one JSON log line each
}

// startService builds ./cmd/cors-extproc and starts it with the named-policy file. The binary,
// not processor.New in-process, so that the flags, the policy file loading and the gRPC server
// setup are what the browser is judged against. It stops the binary with SIGTERM when the test
// ends and fails the test if it does not stop cleanly.
func startService(t *testing.T, policies string) *service {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "cors-extproc")
	build := exec.Command("go", "build", "-o", bin, "github.com/cors-extproc/cors-extproc/cmd/cors-extproc")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building cors-extproc: %v\n%s", err, out)
	}
	file := filepath.Join(dir, "policies.yaml")
	if err := os.WriteFile(file, []byte(policies), 0o644); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin,
		"--grpc-addr", "127.0.0.1:0",
		"--admin-addr", "",
		"--policies", file,
		"--log-format", "json",
		"--drain-period", "0s",
		"--shutdown-grace", "5s",
	)
	cmd.Env = withoutServiceEnv(os.Environ())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting cors-extproc: %v", err)
	}

	s := &service{}
	serving := make(chan string, 1)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.logs = append(s.logs, line)
			s.mu.Unlock()
			var l struct {
				Msg      string `json:"msg"`
				GRPCAddr string `json:"grpc_addr"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "serving" {
				select {
				case serving <- l.GRPCAddr:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("cors-extproc did not stop cleanly on SIGTERM: %v\n%s", err, s.log())
		}
	})

	select {
	case s.addr = <-serving:
	case <-exited:
		t.Fatalf("cors-extproc exited before serving:\n%s", s.log())
	case <-time.After(30 * time.Second):
		t.Fatalf("cors-extproc did not report serving within 30s:\n%s", s.log())
	}
	return s
}

// log returns everything the binary has logged so far.
func (s *service) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.logs, "\n")
}

// loggedWith reports whether one log line holds every one of the strings.
func (s *service) loggedWith(parts ...string) bool {
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

// withoutServiceEnv drops the CORS_EXTPROC_* variables, each of which stands in for a flag, so
// that a developer's environment cannot change the server the suite judges.
func withoutServiceEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "CORS_EXTPROC_") {
			out = append(out, kv)
		}
	}
	return out
}
