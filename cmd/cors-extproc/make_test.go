package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// makeOutput runs the repository's Makefile; the test skips where make or git is missing.
func makeOutput(t *testing.T, args ...string) (string, error) {
	t.Helper()
	for _, tool := range []string{"make", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	cmd := exec.Command("make", append([]string{"-s", "-C", "../.."}, args...)...)
	// Not the variables of a make this test may run under (make test): its VERSION, say.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MAKEFLAGS=") && !strings.HasPrefix(kv, "MFLAGS=") && !strings.HasPrefix(kv, "MAKELEVEL=") &&
			!strings.HasPrefix(kv, "VERSION=") && !strings.HasPrefix(kv, "IMAGE=") && !strings.HasPrefix(kv, "DOCKER=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// `make build` stamps `git describe` into main.version, the variable --version reports
// (TestVersion); the Dockerfile does the same with its VERSION argument.
func TestMakeBuildStampsVersion(t *testing.T) {
	describe, err := exec.Command("git", "-C", "../..", "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	out, err := makeOutput(t, "-n", "build")
	require.NoError(t, err, out)
	assert.Contains(t, out, `-ldflags "-X main.version=`+strings.TrimSpace(string(describe))+`"`)
	assert.Contains(t, out, "./cmd/cors-extproc")
}

// `make image` where no Docker engine answers says so, and fails.
func TestMakeImageWithoutDocker(t *testing.T) {
	out, err := makeOutput(t, "image", "DOCKER=/nonexistent/docker", "VERSION=v0.0.0-test")
	require.Error(t, err)
	assert.Contains(t, out, "make image: no Docker engine here ('/nonexistent/docker info' fails), so ghcr.io/cors-extproc/cors-extproc:v0.0.0-test was not built")
}
