package main

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cors-extproc/cors-extproc/internal/processor"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := parseConfig(nil, env(nil), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, ":9002", c.grpcAddr)
	assert.Equal(t, ":9090", c.adminAddr)
	assert.Equal(t, "cors", c.namespace)
	assert.Equal(t, slog.LevelInfo, c.logLevel)
	assert.Equal(t, "json", c.logFormat)
	assert.Equal(t, 15*time.Second, c.shutdownGrace)
	assert.Equal(t, 5*time.Second, c.drainPeriod)
	assert.Equal(t, uint(1000), c.maxConcurrentStreams)
	assert.Equal(t, 10000, c.cacheSize)
}

func TestParseConfigEnvironment(t *testing.T) {
	vars := map[string]string{
		"CORS_EXTPROC_GRPC_ADDR":          "127.0.0.1:7000",
		"CORS_EXTPROC_ADMIN_ADDR":         "",
		"CORS_EXTPROC_METADATA_NAMESPACE": "my.cors",
		"CORS_EXTPROC_LOG_LEVEL":          "debug",
		"CORS_EXTPROC_SHUTDOWN_GRACE":     "30s",
	}
	c, err := parseConfig([]string{"--metadata-namespace", "flag.wins"}, env(vars), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:7000", c.grpcAddr)
	assert.Equal(t, ":9090", c.adminAddr, "an empty variable leaves the default")
	assert.Equal(t, "flag.wins", c.namespace, "a flag on the command line wins over its variable")
	assert.Equal(t, slog.LevelDebug, c.logLevel)
	assert.Equal(t, 30*time.Second, c.shutdownGrace)
}

func TestParseConfigReportsEveryProblem(t *testing.T) {
	_, err := parseConfig([]string{
		"--log-level", "loud",
		"--log-format", "xml",
		"--metadata-namespace", "",
		"--default-policy", "api",
		"--shutdown-grace", "2s",
		"--drain-period", "3s",
		"--grpc-max-concurrent-streams", "0",
		"--policy-cache-size", "-1",
		"--admin-addr", ":9002",
		"extra",
	}, env(map[string]string{"CORS_EXTPROC_GRPC_KEEPALIVE_TIME": "soon"}), io.Discard)
	require.Error(t, err)
	assert.Equal(t, `unexpected arguments: extra
CORS_EXTPROC_GRPC_KEEPALIVE_TIME="soon": invalid value for --grpc-keepalive-time: parse error
--log-level "loud": want debug, info, warn or error
--log-format "xml": want json or text
--admin-addr ":9002": same as --grpc-addr
--metadata-namespace: must not be empty
--default-policy "api": needs --policies
--drain-period 3s: must be at least 0 and less than --shutdown-grace 2s
--grpc-max-concurrent-streams 0: must be positive
--policy-cache-size -1: must be positive`, err.Error())
}

func TestParseConfigBadFlag(t *testing.T) {
	_, err := parseConfig([]string{"--no-such-flag"}, env(nil), io.Discard)
	require.EqualError(t, err, "flag provided but not defined: -no-such-flag")
}

func TestParseConfigOperatorFlags(t *testing.T) {
	c, err := parseConfig([]string{"--dynamic-metadata", "--report-only", "--policies-reload-interval", "0"}, env(nil), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "cors-extproc", c.sentMetadataNamespace())
	assert.True(t, c.reportOnly)
	assert.Zero(t, c.reloadInterval)

	c, err = parseConfig(nil, env(map[string]string{"CORS_EXTPROC_DYNAMIC_METADATA_NAMESPACE": "edge"}), io.Discard)
	require.NoError(t, err)
	assert.Empty(t, c.sentMetadataNamespace(), "no metadata unless --dynamic-metadata")

	_, err = parseConfig([]string{"--dynamic-metadata", "--dynamic-metadata-namespace", "", "--policies-reload-interval", "-1s"}, env(nil), io.Discard)
	require.EqualError(t, err, `--policies-reload-interval -1s: must be at least 0
--dynamic-metadata-namespace: must not be empty with --dynamic-metadata`)
}

func TestParseConfigMode(t *testing.T) {
	c, err := parseConfig(nil, env(nil), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, processor.ModeTwoPhase, c.mode, "two-phase works behind any Envoy configuration")

	c, err = parseConfig(nil, env(map[string]string{"CORS_EXTPROC_MODE": "one-trip"}), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, processor.ModeOneTrip, c.mode)

	_, err = parseConfig([]string{"--mode", "one-way", "--log-format", "xml"}, env(nil), io.Discard)
	require.EqualError(t, err, `--log-format "xml": want json or text
--mode: unknown mode "one-way": want two-phase or one-trip`)

	_, err = parseConfig([]string{"--mode", "one-trip", "--dynamic-metadata-namespace", ""}, env(nil), io.Discard)
	require.EqualError(t, err, "--dynamic-metadata-namespace: must not be empty with --mode one-trip (it carries the response headers)")
}
