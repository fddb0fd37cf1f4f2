package soak

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cors-extproc/cors-extproc/internal/servicetest"
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

// service is the real cors-extproc binary running on loopback, with what the soak reads of it.
type service struct {
	*servicetest.Service
	metrics *http.Client
}

// startService starts the binary (built as `make build` does, so that the runtime the numbers
// describe is production's) on free loopback ports with policiesFile and the given drain period
// and grace, and waits for its "serving" log line.
func startService(t *testing.T, drainPeriod, shutdownGrace time.Duration) *service {
	t.Helper()
	s := &service{
		Service: servicetest.Start(t, servicetest.Build(t), "--policies", servicetest.WritePolicies(t, policiesFile),
			"--drain-period", drainPeriod.String(), "--shutdown-grace", shutdownGrace.String()),
		metrics: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}},
	}
	t.Cleanup(s.metrics.CloseIdleConnections)
	return s
}

// dial opens one gRPC client connection to the server, as one of Envoy's HTTP/2 connections to
// the cluster; it is closed when the test ends.
func (s *service) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	conn.Connect()
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// rss is the process's resident memory, VmRSS of /proc/PID/status, in bytes.
func (s *service) rss() (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.Cmd.Process.Pid))
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
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.AdminAddr+"/metrics", nil)
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
