package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cors-extproc/cors-extproc/internal/processor"
)

// env is an environment holding vars.
func env(vars map[string]string) []string {
	var out []string
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	return out
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := parseConfig(nil, env(nil))
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
	c, err := parseConfig([]string{"--metadata-namespace", "flag.wins"}, env(vars))
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:7000", c.grpcAddr)
	assert.Empty(t, c.adminAddr, "an empty variable sets an empty value where the flag allows one (no admin listener)")
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
	}, env(map[string]string{"CORS_EXTPROC_GRPC_KEEPALIVE_TIME": "soon"}))
	require.Error(t, err)
	assert.Equal(t, `unexpected arguments: extra (commands: validate, explain, import-kong, version, help)
CORS_EXTPROC_GRPC_KEEPALIVE_TIME="soon": want a duration such as 5s, 1m30s or 250ms
--log-level "loud": want debug, info, warn or error
--log-format "xml": want json or text
--admin-addr ":9002": same as --grpc-addr
--metadata-namespace "": must not be empty
--default-policy "api": needs --policies
--drain-period "3s": must be at least 0 and less than --shutdown-grace 2s
--grpc-max-concurrent-streams "0": must be positive
--policy-cache-size "-1": must be positive`, err.Error())
}

// A value of the wrong form is one line naming the flag, the value and the form wanted, never
// the usage; every bad flag and variable is reported at once, variables by their own name.
func TestParseConfigBadValues(t *testing.T) {
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"--drain-period", "5", "--no-such-flag", "--report-only=maybe",
		"--policy-cache-size", "many", "--grpc-max-concurrent-streams", "-3", "--grpc-adr=:1"}, io.Discard, &stderr)
	require.Error(t, err)
	assert.Empty(t, stderr.String(), "no usage dump")
	assert.Equal(t, `--drain-period "5": want a duration such as 5s, 1m30s or 250ms
--no-such-flag: no such flag (--help lists them)
--report-only "maybe": want true or false
--policy-cache-size "many": want a whole number
--grpc-max-concurrent-streams "-3": want a whole number, 0 or more
--grpc-adr: no such flag; did you mean --grpc-addr?`, err.Error())

	_, err = parseConfig(nil, env(map[string]string{
		"CORS_EXTPROC_DRAIN_PERIOD":   "5",
		"CORS_EXTPROC_SHUTDOWN_GRACE": "1s",
		"CORS_EXTPROC_LOG_LEVL":       "debug",
		"CORS_EXTPROC_ADMIN_ADDR":     ":9002",
		"OTHER_VARIABLE":              "ignored",
	}))
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	slices.Sort(lines)
	assert.Equal(t, []string{
		`CORS_EXTPROC_ADMIN_ADDR=":9002": same as --grpc-addr`,
		`CORS_EXTPROC_DRAIN_PERIOD="5": want a duration such as 5s, 1m30s or 250ms`,
		`CORS_EXTPROC_LOG_LEVL: no such variable; did you mean CORS_EXTPROC_LOG_LEVEL?`,
	}, lines, "a bad value is reported once, not again by the checks that involve it")
}

func TestParseConfigBadFlag(t *testing.T) {
	_, err := parseConfig([]string{"--no-such-flag", "--metadata-namespace"}, env(nil))
	require.EqualError(t, err, "--no-such-flag: no such flag (--help lists them)\n--metadata-namespace: needs a value")
}

func TestParseConfigOperatorFlags(t *testing.T) {
	c, err := parseConfig([]string{"--dynamic-metadata", "--report-only", "--policies-reload-interval", "0"}, env(nil))
	require.NoError(t, err)
	assert.Equal(t, "cors-extproc", c.sentMetadataNamespace())
	assert.True(t, c.reportOnly)
	assert.Zero(t, c.reloadInterval)

	c, err = parseConfig(nil, env(map[string]string{"CORS_EXTPROC_DYNAMIC_METADATA_NAMESPACE": "edge"}))
	require.NoError(t, err)
	assert.Empty(t, c.sentMetadataNamespace(), "no metadata unless --dynamic-metadata")

	_, err = parseConfig([]string{"--dynamic-metadata", "--dynamic-metadata-namespace", "", "--policies-reload-interval", "-1s"}, env(nil))
	require.EqualError(t, err, `--policies-reload-interval "-1s": must be at least 0
--dynamic-metadata-namespace "": must not be empty with --dynamic-metadata`)
}

func TestParseConfigMode(t *testing.T) {
	c, err := parseConfig(nil, env(nil))
	require.NoError(t, err)
	assert.Equal(t, processor.ModeTwoPhase, c.mode, "two-phase works behind any Envoy configuration")

	c, err = parseConfig(nil, env(map[string]string{"CORS_EXTPROC_MODE": "one-trip"}))
	require.NoError(t, err)
	assert.Equal(t, processor.ModeOneTrip, c.mode)

	_, err = parseConfig([]string{"--mode", "one-way", "--log-format", "xml"}, env(nil))
	require.EqualError(t, err, `--log-format "xml": want json or text
--mode "one-way": unknown mode "one-way": want two-phase or one-trip`)

	_, err = parseConfig([]string{"--mode", "one-trip", "--dynamic-metadata-namespace", ""}, env(nil))
	require.EqualError(t, err, `--dynamic-metadata-namespace "": must not be empty with --mode one-trip (it carries the response headers)`)
}
