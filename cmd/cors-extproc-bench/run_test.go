package main

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/cors-extproc/cors-extproc/internal/processor"
)

// Every flag problem is reported at once.
func TestFlagsValidatedTogether(t *testing.T) {
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"-addr", "", "-concurrency", "0", "-duration", "0s", "-mix", "50,50,50"}, &bytes.Buffer{}, &stderr)
	require.Error(t, err)
	for _, want := range []string{"-addr", "-concurrency 0", "-duration 0s", "add up to 150"} {
		assert.Contains(t, err.Error(), want)
	}
	assert.ErrorContains(t, run(context.Background(), []string{"-mix", "70,x,10"}, &bytes.Buffer{}, &stderr), `"x" is not a percentage`)
	assert.ErrorContains(t, run(context.Background(), []string{"-mix", "70,30"}, &bytes.Buffer{}, &stderr), "want 3")
}

// Against the processor, every kind of request succeeds and the summary is printed.
func TestRunAgainstProcessor(t *testing.T) {
	srv, err := processor.New(processor.Options{})
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(s, srv)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)

	var stdout, stderr bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"-addr", lis.Addr().String(), "-concurrency", "4",
		"-duration", "1500ms", "-mix", "34,33,33"}, &stdout, &stderr))
	assert.Contains(t, stdout.String(), "requests/s:")
	assert.Contains(t, stdout.String(), "p99.9")
	assert.Contains(t, stdout.String(), "(0 failed)")
	assert.Contains(t, stderr.String(), "req/s", "a progress line each second")
}

func TestPercentile(t *testing.T) {
	assert.Zero(t, percentile(nil, 0.5))
	s := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	assert.Equal(t, time.Duration(5), percentile(s, 0.5))
	assert.Equal(t, time.Duration(10), percentile(s, 0.99))
	assert.Equal(t, time.Duration(10), percentile(s, 1))
}

// The shipped binaries link no test code: neither the testing package, nor the in-memory gRPC
// transport, nor the test-only Envoy player.
func TestBinariesLinkNoTestCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".", "../cors-extproc").Output()
	require.NoError(t, err)
	for _, pkg := range strings.Fields(string(out)) {
		switch {
		case pkg == "testing", strings.HasPrefix(pkg, "testing/"),
			strings.HasSuffix(pkg, "/bufconn"), strings.HasSuffix(pkg, "/internal/envoytest"),
			strings.HasPrefix(pkg, "github.com/stretchr/testify"):
			t.Errorf("a shipped binary links %s", pkg)
		}
	}
}
