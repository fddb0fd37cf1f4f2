package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// policiesFile is the server's named-policy file: the policy every soak route resolves to,
// whichever channel names it.
const policiesFile = `api:
  origins: ["https://app.example.com", "https://admin.example.com"]
  headers: [content-type]
  exposed_headers: [x-total]
  credentials: true
  max_age: 600
`

// service is the real cors-extproc binary running on loopback.
type service struct {
	cmd       *exec.Cmd
	grpcAddr  string
	adminAddr string
	metrics   *http.Client
	exited    chan struct{} // closed once the process has exited and its log is read
	exitErr   error         // the process's exit status, valid once exited is closed

	mu   sync.Mutex
	logs []string
}

// buildBinary builds ./cmd/cors-extproc into the test's temporary folder as the Makefile's
// build target does (-tags vtprotobuf: the codec ships with go-control-plane's generated marshal
// code). The real binary, not processor.New in-process, so that the flags, the gRPC server
// options, the drain sequence and the runtime the numbers describe are those of production.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cors-extproc")
	out, err := exec.Command("go", "build", "-tags", "vtprotobuf", "-o", bin,
		"github.com/cors-extproc/cors-extproc/cmd/cors-extproc").CombinedOutput()
	if err != nil {
		t.Fatalf("building cors-extproc: %v\n%s", err, out)
	}
	return bin
}

// startService starts the binary on free loopback ports with policiesFile and the given drain
// period and grace, and waits for its "serving" log line. The process is killed, if still
// running, when the test ends.
func startService(t *testing.T, drainPeriod, shutdownGrace time.Duration) *service {
	t.Helper()
	bin := buildBinary(t)
	file := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(file, []byte(policiesFile), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--grpc-addr", "127.0.0.1:0",
		"--admin-addr", "127.0.0.1:0",
		"--policies", file,
		"--log-format", "json",
		"--drain-period", drainPeriod.String(),
		"--shutdown-grace", shutdownGrace.String(),
	)
	cmd.Env = withoutServiceEnv(os.Environ())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting cors-extproc: %v", err)
	}
	s := &service{
		cmd:     cmd,
		exited:  make(chan struct{}),
		metrics: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}},
	}
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
	t.Cleanup(func() {
		s.metrics.CloseIdleConnections()
		select {
		case <-s.exited:
		default:
			_ = cmd.Process.Kill()
			<-s.exited
		}
	})
	select {
	case addrs := <-serving:
		s.grpcAddr, s.adminAddr = addrs[0], addrs[1]
	case <-s.exited:
		t.Fatalf("cors-extproc exited before serving: %v\n%s", s.exitErr, s.log())
	case <-time.After(30 * time.Second):
		t.Fatalf("cors-extproc did not report serving within 30s:\n%s", s.log())
	}
	return s
}

// dial opens one gRPC client connection to the server, as one of Envoy's HTTP/2 connections to
// the cluster; it is closed when the test ends.
func (s *service) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	conn.Connect()
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// rss is the process's resident memory, VmRSS of /proc/PID/status, in bytes.
func (s *service) rss() (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
}

// goroutines is the server's go_goroutines gauge, read from its /metrics.
func (s *service) goroutines(ctx context.Context) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.adminAddr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := s.metrics.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int(f), err
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no go_goroutines on /metrics")
}

// signal sends SIGTERM, as the kubelet does to start the drain.
func (s *service) signal() error { return s.cmd.Process.Signal(syscall.SIGTERM) }

// log returns everything the binary has logged so far.
func (s *service) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.logs, "\n")
}

// logged reports whether a log line has the message msg.
func (s *service) logged(msg string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.logs {
		var line struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(l), &line) == nil && line.Msg == msg {
			return true
		}
	}
	return false
}

// withoutServiceEnv drops the CORS_EXTPROC_* variables, each of which stands in for a flag, so
// that a developer's environment cannot change the server under test.
func withoutServiceEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "CORS_EXTPROC_") {
			out = append(out, kv)
		}
	}
	return out
}
