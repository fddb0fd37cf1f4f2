package docs_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// testNameRE finds a test named in a page: `TestX` or `TestX/sub`.
var testNameRE = regexp.MustCompile("`(Test[A-Za-z0-9_]+)(?:/[^`]*)?`")

// TestSupportedVersionsNameRealTests: every test supported-versions.md gives as the proof of a
// claim exists in the repository, so the page cannot point at a test that was renamed or
// removed.
func TestSupportedVersionsNameRealTests(t *testing.T) {
	page, err := os.ReadFile("supported-versions.md")
	if err != nil {
		t.Fatal(err)
	}
	named := testNames(string(page))
	if len(named) == 0 {
		t.Fatal("supported-versions.md names no test")
	}
	defined := map[string]bool{}
	for _, f := range repoFiles(t, "..") {
		if !strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile("../" + f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`(?m)^func (Test[A-Za-z0-9_]+)\(`).FindAllStringSubmatch(string(src), -1) {
			defined[m[1]] = true
		}
	}
	for _, name := range named {
		if !defined[name] {
			t.Errorf("supported-versions.md cites %s, which no test file defines", name)
		}
	}
}

func testNames(page string) []string {
	var names []string
	for _, m := range testNameRE.FindAllStringSubmatch(page, -1) {
		if !slices.Contains(names, m[1]) {
			names = append(names, m[1])
		}
	}
	return names
}

func TestTestNamesFound(t *testing.T) {
	got := testNames("proof: `TestA`, `TestB/sub`, and `TestA` again; not TestC")
	if !slices.Equal(got, []string{"TestA", "TestB"}) {
		t.Errorf("testNames = %v", got)
	}
}
