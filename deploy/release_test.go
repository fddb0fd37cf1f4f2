package deploy_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// imageRef matches what reads as a reference to the cors-extproc image: a registry host (or a
// placeholder for one) and a path ending in cors-extproc. The module path is not one, nor an
// example of one's own registry (registry.example.com).
var imageRef = regexp.MustCompile(`(?:[a-z0-9-]+\.[a-z0-9.-]+|REGISTRY|[A-Z_]+)(?:/[a-z0-9._-]+)*/cors-extproc\b`)

// Every file that names the image names the same one: the Makefile's IMAGE, the Dockerfile's
// comment, the kustomize base, the Helm chart, compose, the READMEs.
func TestImageNameConsistent(t *testing.T) {
	must := map[string]bool{"../Makefile": true, "../Dockerfile": true, "k8s/base/deployment.yaml": true, "helm/cors-extproc/values.yaml": true,
		"docker-compose.yaml": true, "../README.md": true, "README.md": true}
	files := []string{"../CHANGELOG.md", "../SECURITY.md"}
	for f := range must {
		files = append(files, f)
	}
	for _, f := range files {
		text := string(readFile(t, f))
		found := false
		for _, ref := range imageRef.FindAllString(text, -1) {
			if strings.HasPrefix(ref, "github.com/") || strings.Contains(ref, ".example.com/") {
				continue
			}
			if ref != publishedImage {
				t.Errorf("%s: image %q, want %q", f, ref, publishedImage)
			}
			found = true
		}
		if must[f] && !found {
			t.Errorf("%s: does not name the image %s", f, publishedImage)
		}
	}
	if !regexp.MustCompile(`(?m)^IMAGE\s+\?= ` + regexp.QuoteMeta(publishedImage) + `$`).Match(readFile(t, "../Makefile")) {
		t.Errorf("Makefile: IMAGE is not %s", publishedImage)
	}
}

// LICENSE is the Apache License 2.0 in full, and the README says so.
func TestLicense(t *testing.T) {
	text := string(readFile(t, "../LICENSE"))
	for _, want := range []string{"Apache License\n                           Version 2.0, January 2004",
		"TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION", "END OF TERMS AND CONDITIONS",
		"APPENDIX: How to apply the Apache License to your work."} {
		if !strings.Contains(text, want) {
			t.Errorf("LICENSE lacks %q", want)
		}
	}
	if !strings.Contains(string(readFile(t, "../README.md")), "Apache License 2.0, as Envoy and Kong: [LICENSE](LICENSE)") {
		t.Error("README.md does not name the license")
	}
}

// CHANGELOG.md opens with Unreleased, then one section per release, newest first, each
// `## [X.Y.Z] - YYYY-MM-DD`; the deployment files run the newest release.
func TestChangelog(t *testing.T) {
	var headings []string
	for _, line := range strings.Split(string(readFile(t, "../CHANGELOG.md")), "\n") {
		if strings.HasPrefix(line, "## ") {
			headings = append(headings, line)
		}
	}
	if len(headings) == 0 || headings[0] != "## [Unreleased]" {
		t.Fatalf("CHANGELOG.md sections %q: the first must be ## [Unreleased]", headings)
	}
	release := regexp.MustCompile(`^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$`)
	var versions []string
	for _, h := range headings[1:] {
		m := release.FindStringSubmatch(h)
		if m == nil {
			t.Errorf("CHANGELOG.md: %q: want ## [X.Y.Z] - YYYY-MM-DD", h)
			continue
		}
		if len(versions) > 0 && !newer(versions[len(versions)-1], m[1]) {
			t.Errorf("CHANGELOG.md: %s after %s: newest first", m[1], versions[len(versions)-1])
		}
		versions = append(versions, m[1])
	}
	if len(versions) > 0 && imageTag(t) != versions[0] {
		t.Errorf("the deployment files run %s:%s, but the newest release in CHANGELOG.md is %s", publishedImage, imageTag(t), versions[0])
	}
}

// newer reports whether release a is newer than release b (both X.Y.Z).
func newer(a, b string) bool {
	var x, y [3]int
	fmt.Sscanf(a, "%d.%d.%d", &x[0], &x[1], &x[2])
	fmt.Sscanf(b, "%d.%d.%d", &y[0], &y[1], &y[2])
	for i := range x {
		if x[i] != y[i] {
			return x[i] > y[i]
		}
	}
	return false
}
