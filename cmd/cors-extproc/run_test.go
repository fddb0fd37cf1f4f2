package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
	"github.com/cors-extproc/cors-extproc/internal/envoytest"
)

// syncBuffer is the stderr of a server under test, read while the server writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logLine returns the first JSON log line whose msg is msg.
func (b *syncBuffer) logLine(msg string) (map[string]any, bool) {
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == msg {
			return m, true
		}
	}
	return nil, false
}

type runningServer struct {
	grpcAddr, adminAddr string
	stderr              *syncBuffer
	stop                context.CancelFunc
	done                chan struct{} // closed when run has returned err
	err                 error
}

func startServer(t *testing.T, args ...string) *runningServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &runningServer{stderr: &syncBuffer{}, stop: cancel, done: make(chan struct{})}
	// Later flags win: a test may set its own drain period.
	args = append([]string{"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--drain-period", "0s"}, args...)
	go func() {
		s.err = run(ctx, args, io.Discard, s.stderr)
		close(s.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(20 * time.Second):
			t.Error("server did not stop")
		}
	})
	require.Eventually(t, func() bool {
		line, ok := s.stderr.logLine("serving")
		if ok {
			s.grpcAddr, _ = line["grpc_addr"].(string)
			s.adminAddr, _ = line["admin_addr"].(string)
		}
		return ok
	}, 10*time.Second, 10*time.Millisecond, "no serving log line: %s", s.stderr)
	return s
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

const policiesYAML = `
spa:
  origins: ["https://app.example.com", "https://admin.example.com"]
  credentials: true
public: {}
`

var preflight = envoytest.Request{Method: "OPTIONS", Headers: envoytest.Headers{
	{Key: "origin", Value: "https://app.example.com"}, {Key: "access-control-request-method", Value: "PUT"}}}

// The binary serves ext_proc with the named-policy file and default policy, health, metrics and
// readiness.
func TestRunServes(t *testing.T) {
	s := startServer(t, "--policies", writeFile(t, "policies.yaml", policiesYAML), "--default-policy", "spa")
	conn := dial(t, s.grpcAddr)

	envoy := envoytest.New(conn, envoytest.Config{AllowModeOverride: true, MessageTimeout: 5 * time.Second})
	res, err := envoy.Do(context.Background(), envoytest.Route{}, preflight, nil)
	require.NoError(t, err)
	assert.Equal(t, 204, res.Response.Status)
	assert.Equal(t, []string{"https://app.example.com"}, res.Response.Values("access-control-allow-origin"))
	assert.Equal(t, []string{"true"}, res.Response.Values("access-control-allow-credentials"))

	res, err = envoy.Do(context.Background(), envoytest.Route{Metadata: envoyfilter.Metadata("cors", map[string]any{"ref": "public"})}, preflight, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"*"}, res.Response.Values("access-control-allow-origin"))

	for _, service := range []string{"", "envoy.service.ext_proc.v3.ExternalProcessor"} {
		hc, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		require.NoError(t, err)
		assert.Equal(t, healthpb.HealthCheckResponse_SERVING, hc.GetStatus(), "service %q", service)
	}

	code, body := httpGet(t, "http://"+s.adminAddr+"/metrics")
	assert.Equal(t, 200, code)
	assert.Contains(t, body, `cors_extproc_decisions_total{kind="preflight_answered"} 2`)
	assert.Contains(t, body, `cors_extproc_origins_total{result="allowed"} 2`)
	assert.Contains(t, body, "go_goroutines")
	code, _ = httpGet(t, "http://"+s.adminAddr+"/readyz")
	assert.Equal(t, 200, code)
	code, _ = httpGet(t, "http://"+s.adminAddr+"/healthz")
	assert.Equal(t, 200, code)
}

// On SIGTERM health turns NOT_SERVING at once, a stream in flight completes, and run returns
// before the grace deadline.
func TestRunDrainsStreamsInFlight(t *testing.T) {
	s := startServer(t, "--drain-period", "300ms", "--shutdown-grace", "5s")
	conn := dial(t, s.grpcAddr)
	health := healthpb.NewHealthClient(conn)
	envoy := envoytest.New(conn, envoytest.Config{AllowModeOverride: true, MessageTimeout: 5 * time.Second})

	var sawNotServing, sawNotReady bool
	route := envoytest.Route{Metadata: envoyfilter.Metadata("cors", map[string]any{"origins": []string{"https://app.example.com", "https://x.test"}})}
	stoppedAt := time.Time{}
	res, err := envoy.Do(context.Background(), route, envoytest.Request{Headers: envoytest.Headers{{Key: "origin", Value: "https://app.example.com"}}},
		func(envoytest.Request) envoytest.Response {
			// The request phase is done; the signal arrives while the upstream works.
			stoppedAt = time.Now()
			s.stop()
			hc, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{})
			sawNotServing = err == nil && hc.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING
			code, _ := httpGet(t, "http://"+s.adminAddr+"/readyz")
			sawNotReady = code == http.StatusServiceUnavailable
			time.Sleep(500 * time.Millisecond) // past the drain period: GracefulStop is waiting on this stream
			return envoytest.Response{Status: 200}
		})
	require.NoError(t, err)
	assert.True(t, sawNotServing, "health NOT_SERVING right after the signal")
	assert.True(t, sawNotReady, "/readyz 503 right after the signal")
	assert.Equal(t, []string{"https://app.example.com"}, res.Response.Values("access-control-allow-origin"), "the stream in flight completed")

	select {
	case <-s.done:
		require.NoError(t, s.err)
		assert.Less(t, time.Since(stoppedAt), 5*time.Second)
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return")
	}
	_, ok := s.stderr.logLine("stopped: every stream finished")
	assert.True(t, ok, s.stderr.String())
}

// A stream still open at the grace deadline is cut and run returns.
func TestRunForcedStopAtDeadline(t *testing.T) {
	s := startServer(t, "--drain-period", "100ms", "--shutdown-grace", "600ms")
	conn := dial(t, s.grpcAddr)
	envoy := envoytest.New(conn, envoytest.Config{AllowModeOverride: true, MessageTimeout: 5 * time.Second})
	route := envoytest.Route{Metadata: envoyfilter.Metadata("cors", map[string]any{})}
	_, err := envoy.Do(context.Background(), route, envoytest.Request{}, func(envoytest.Request) envoytest.Response {
		s.stop()
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			t.Error("run did not return at the grace deadline")
		}
		return envoytest.Response{Status: 200}
	})
	require.Error(t, err, "the stream was cut")
	_, ok := s.stderr.logLine("stopped at the grace deadline: open streams were cut")
	assert.True(t, ok, s.stderr.String())
}

func TestRunRefusesInvalidPolicyFile(t *testing.T) {
	path := writeFile(t, "policies.yaml", `
good: {origins: ["https://a.test"]}
bad:
  origins: ["https://(x", ""]
  max_age: 1.5
worse: {ref: good}
`)
	err := run(context.Background(), []string{"--policies", path, "--grpc-addr", "127.0.0.1:0"}, io.Discard, io.Discard)
	require.Error(t, err)
	assert.Equal(t, "--policies "+path+`: invalid named-policy file:
  bad: origins[0] "https://(x": invalid regex: missing closing )
  bad: origins[1] "": empty origin
  bad: max_age 1.5: want a non-negative integer (seconds)
  worse: ref "good": not allowed here: a policy is given in full, it cannot refer to another`, err.Error())
}

func TestRunOtherStartErrors(t *testing.T) {
	err := run(context.Background(), []string{"--policies", "/no/such/file.yaml"}, io.Discard, io.Discard)
	require.EqualError(t, err, "--policies: open /no/such/file.yaml: no such file or directory")

	err = run(context.Background(), []string{"--policies", writeFile(t, "p.yaml", policiesYAML), "--default-policy", "nope",
		"--grpc-addr", "127.0.0.1:0", "--admin-addr", ""}, io.Discard, io.Discard)
	require.EqualError(t, err, `default policy "nope" is not in the named-policy file`)

	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"--version"}, &out, io.Discard))
	assert.Equal(t, "cors-extproc dev\n", out.String())
}

// --report-only and --dynamic-metadata reach the server: the decision is returned to Envoy but
// nothing is changed.
func TestRunReportOnlyWithDynamicMetadata(t *testing.T) {
	s := startServer(t, "--report-only", "--dynamic-metadata")
	envoy := envoytest.New(dial(t, s.grpcAddr), envoytest.Config{AllowModeOverride: true,
		MessageTimeout: 5 * time.Second, ReceivingNamespaces: []string{"cors-extproc"}})
	route := envoytest.Route{Metadata: envoyfilter.Metadata("cors", map[string]any{"origins": []string{"https://app.example.com", "https://x.test"}})}
	res, err := envoy.Do(context.Background(), route, preflight, nil)
	require.NoError(t, err)
	assert.False(t, res.Answered, "report-only: the preflight goes upstream")
	require.Contains(t, res.DynamicMetadata, "cors-extproc")
	assert.Equal(t, map[string]any{"decision": "preflight_answered", "origin": "allowed", "matched": "https://app.example.com",
		"policy": "filter_metadata.cors", "report_only": true}, res.DynamicMetadata["cors-extproc"].AsMap())
}

// The limit flags reach the server: the named-policy file is checked against --max-origins, and
// a message over --grpc-max-recv-msg-size is refused by gRPC (Envoy then fails the request).
func TestRunLimitFlags(t *testing.T) {
	path := writeFile(t, "policies.yaml", `three: {origins: ["https://a.test", "https://b.test", "https://c.test"]}`)
	err := run(context.Background(), []string{"--policies", path, "--max-origins", "2", "--grpc-addr", "127.0.0.1:0"}, io.Discard, io.Discard)
	require.EqualError(t, err, "--policies "+path+": invalid named-policy file:\n  three: origins […]: 3 elements, over the limit of 2")

	s := startServer(t, "--grpc-max-recv-msg-size", "4096", "--max-header-value-bytes", "100000")
	envoy := envoytest.New(dial(t, s.grpcAddr), envoytest.Config{AllowModeOverride: true, MessageTimeout: 5 * time.Second})
	route := envoytest.Route{Metadata: envoyfilter.Metadata("cors", map[string]any{})}
	_, err = envoy.Do(context.Background(), route, envoytest.Request{Headers: envoytest.Headers{{Key: "x-small", Value: strings.Repeat("a", 3000)}}}, nil)
	require.NoError(t, err, "under the bound")
	res, err := envoy.Do(context.Background(), route, envoytest.Request{Headers: envoytest.Headers{{Key: "x-big", Value: strings.Repeat("a", 5000)}}}, nil)
	require.ErrorIs(t, err, envoytest.ErrStreamFailed)
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), err.Error())
	assert.Equal(t, 500, res.Response.Status)
}
