// Package realenvoy runs a real Envoy for a test: the releases pinned in envoy-versions.txt
// (installed by `make envoy`), started from a bootstrap the repository ships with only its
// addresses moved to loopback, in front of Go upstreams that record what reaches them.
//
// It is the judge that internal/envoytest, the fast simulated Envoy, is held to: where the two
// disagree, Envoy is right (docs/envoy-extproc.md).
//
// A test that needs Envoy calls Binaries (every pinned release) or Pinned (one minor). Without
// an installed Envoy the test is skipped with a line saying how to get one; with CI=true it
// fails instead, so that CI cannot pass by running nothing.
package realenvoy

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// Binary is one installed Envoy release.
type Binary struct {
	Version string // e.g. "1.40.0"
	Path    string
}

// Minor is the release's "1.40" part.
func (b Binary) Minor() string {
	parts := strings.SplitN(b.Version, ".", 3)
	if len(parts) < 2 {
		return b.Version
	}
	return parts[0] + "." + parts[1]
}

// AtLeast reports whether the release is minor or later (minor as "1.34").
func (b Binary) AtLeast(minor string) bool {
	var bm, bn, wm, wn int
	fmt.Sscanf(b.Minor(), "%d.%d", &bm, &bn)
	fmt.Sscanf(minor, "%d.%d", &wm, &wn)
	return bm > wm || (bm == wm && bn >= wn)
}

// VersionsFile is the file, at the repository's top, that pins the tested releases.
const VersionsFile = "envoy-versions.txt"

// versionRE finds the release in `envoy --version`: ".../1.40.0/Clean/RELEASE/BoringSSL".
var versionRE = regexp.MustCompile(`/(\d+\.\d+\.\d+)/`)

var (
	findOnce sync.Once
	found    []Binary
	findErr  error
)

// Binaries returns every pinned release, oldest first. ENVOY_BIN, when set, names the one
// binary to use instead. It skips the test (fails it with CI=true) when none is installed.
func Binaries(t testing.TB) []Binary {
	t.Helper()
	findOnce.Do(func() { found, findErr = find() })
	if findErr != nil {
		missing(t, findErr.Error())
	}
	return found
}

// Pinned returns the pinned release of minor (e.g. "1.39"), or skips (fails with CI=true) when
// it is not installed. With ENVOY_BIN set, that binary must be of the minor.
func Pinned(t testing.TB, minor string) Binary {
	t.Helper()
	for _, b := range Binaries(t) {
		if b.Minor() == minor {
			return b
		}
	}
	missing(t, "no Envoy "+minor+" installed")
	return Binary{}
}

// Newest returns the newest installed pinned release.
func Newest(t testing.TB) Binary {
	t.Helper()
	bins := Binaries(t)
	return bins[len(bins)-1]
}

func missing(t testing.TB, why string) {
	t.Helper()
	msg := "real Envoy: " + why + " (run `make envoy`, or set ENVOY_BIN)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func find() ([]Binary, error) {
	if bin := os.Getenv("ENVOY_BIN"); bin != "" {
		v, err := versionOf(bin)
		if err != nil {
			return nil, fmt.Errorf("ENVOY_BIN=%s: %v", bin, err)
		}
		return []Binary{{Version: v, Path: bin}}, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	versions, err := PinnedVersions(root)
	if err != nil {
		return nil, err
	}
	var bins []Binary
	var absent []string
	for _, v := range versions {
		path := filepath.Join(root, ".cache", "envoy", v, "envoy", "_bin", "envoy")
		if _, err := os.Stat(path); err != nil {
			absent = append(absent, v)
			continue
		}
		got, err := versionOf(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		if got != v {
			return nil, fmt.Errorf("%s reports version %s, want %s", path, got, v)
		}
		bins = append(bins, Binary{Version: v, Path: path})
	}
	if len(absent) > 0 {
		return nil, fmt.Errorf("Envoy %s not installed in .cache/envoy", strings.Join(absent, ", "))
	}
	return bins, nil
}

// PinnedVersions reads envoy-versions.txt: one release a line, # comments.
func PinnedVersions(root string) ([]string, error) {
	f, err := os.Open(filepath.Join(root, VersionsFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var versions []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		versions = append(versions, line)
	}
	if len(versions) == 0 {
		return nil, fmt.Errorf("%s pins no release", VersionsFile)
	}
	return versions, sc.Err()
}

func versionOf(bin string) (string, error) {
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("--version: %v: %s", err, out)
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no version in %q", out)
	}
	return string(m[1]), nil
}

// RepoRoot is the folder holding go.mod, found upwards from the working directory (a test runs
// in its package's folder).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}
