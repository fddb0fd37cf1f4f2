package main

import (
	"flag"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// updateReadme rewrites the README's command reference from --help instead of comparing:
// go test ./cmd/cors-extproc/ -run TestReadmeCommandReference -update-readme
var updateReadme = flag.Bool("update-readme", false, "rewrite README.md's --help blocks from the commands' output")

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	return string(b)
}

// The README's command reference is the output of --help, word for word, for the server and
// every command: a flag added, renamed or described anew fails this test until the README
// shows it.
func TestReadmeCommandReference(t *testing.T) {
	text := readme(t)
	blockRE := regexp.MustCompile("(?s)```console\n\\$ cors-extproc ([^\n]*--help)\n(.*?)```\n")
	var shown []string
	for _, b := range blockRE.FindAllStringSubmatch(text, -1) {
		args := strings.Fields(b[1])
		out, _, err := runCommand(t, args...)
		require.NoError(t, err)
		if *updateReadme {
			text = strings.Replace(text, b[0], "```console\n$ cors-extproc "+b[1]+"\n"+out+"```\n", 1)
		} else {
			assert.Equal(t, out, b[2], "README.md: the block of `cors-extproc %s` differs from its output (-update-readme rewrites it)", b[1])
		}
		shown = append(shown, b[1])
	}
	if *updateReadme {
		require.NoError(t, os.WriteFile("../../README.md", []byte(text), 0o644))
	}
	want := []string{"--help"}
	for _, c := range commandList() {
		if c.name != "help" && c.name != "version" {
			want = append(want, c.name+" --help")
		}
	}
	slices.Sort(want)
	slices.Sort(shown)
	assert.Equal(t, want, shown, "README.md: a `$ cors-extproc ... --help` block for the server and each command")
}

// The README's metrics table lists every cors_extproc metric of the running server (every
// optional one on) and, for each label, exactly the values the server uses.
func TestReadmeMetricsTable(t *testing.T) {
	text := readme(t)
	table := text[strings.Index(text, "## Metrics\n"):strings.Index(text, "## Operating\n")]
	row := regexp.MustCompile("(?m)^\\| `(cors_extproc_\\w+)` \\|\\s*([^|]*?)\\s*\\|")
	listed := map[string]map[string][]string{} // metric → label → values ("" when open)
	for _, m := range row.FindAllStringSubmatch(table, -1) {
		labels := map[string][]string{}
		for _, part := range regexp.MustCompile("`(\\w+)`(?:: ((?:`[^`]+`(?:, )?)+))?").FindAllStringSubmatch(m[2], -1) {
			var values []string
			for _, v := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(part[2], -1) {
				values = append(values, v[1])
			}
			slices.Sort(values)
			labels[part[1]] = values
		}
		listed[m[1]] = labels
	}

	s := startFullServer(t)
	families := scrape(t, s)
	for name, f := range families {
		if !strings.HasPrefix(name, "cors_extproc_") {
			continue
		}
		labels, ok := listed[name]
		if !assert.True(t, ok, "README.md: %s is not in the metrics table", name) {
			continue
		}
		seen := map[string][]string{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if !slices.Contains(seen[l.GetName()], l.GetValue()) {
					seen[l.GetName()] = append(seen[l.GetName()], l.GetValue())
				}
			}
		}
		for label, values := range seen {
			want, ok := labels[label]
			if !assert.True(t, ok, "README.md: %s: label %s not listed", name, label) || want == nil {
				continue
			}
			slices.Sort(values)
			assert.Equal(t, want, values, "README.md: %s: the values of %s", name, label)
		}
		for label := range labels {
			assert.Contains(t, seen, label, "README.md: %s: label %s is not on the metric", name, label)
		}
		delete(listed, name)
	}
	assert.Empty(t, listed, "README.md lists metrics the server does not have")

	// The build's own metric carries the version --version prints.
	bi := families["cors_extproc_build_info"].GetMetric()
	require.Len(t, bi, 1)
	got := map[string]string{}
	for _, l := range bi[0].GetLabel() {
		got[l.GetName()] = l.GetValue()
	}
	assert.Equal(t, map[string]string{"version": buildVersion(), "goversion": runtime.Version()}, got)
	assert.Equal(t, 1.0, bi[0].GetGauge().GetValue())
	serving, ok := s.stderr.logLine("serving")
	require.True(t, ok)
	assert.Equal(t, buildVersion(), serving["version"], "the startup line carries the same version")
}
