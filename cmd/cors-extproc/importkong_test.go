package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// kongTestdata holds the importer's fixtures and golden files.
const kongTestdata = "../../internal/kongimport/testdata/"

func golden(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(kongTestdata + "golden/" + name)
	require.NoError(t, err)
	return string(b)
}

// TestImportKong runs `cors-extproc import-kong` through run, as main does: exact stdout and
// stderr, the named-policy file, and the error that makes main exit 1.
func TestImportKong(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "policies.yaml")
	cases := []struct {
		name           string
		args           []string
		stdout, stderr string
		policies       string // golden name of the written file; "" when none is written
		err            string // "" for success (exit 0)
	}{
		{name: "file, text report, policies written, flags after FILE",
			args:   []string{kongTestdata + "deck-1.1.yaml", "--output-policies", out},
			stdout: golden(t, "deck-1.1.txt"), policies: "deck-1.1.policies.yaml"},
		{name: "file with errors: everything written, then exit 1",
			args:   []string{"--output-policies", out, kongTestdata + "deck-3.0.yaml"},
			stdout: golden(t, "deck-3.0.txt"), policies: "deck-3.0.policies.yaml",
			err: "import-kong " + kongTestdata + "deck-3.0.yaml: 1 error (the other policies were written)"},
		{name: "json report",
			args:   []string{"--format", "json", "--kong-compatible", kongTestdata + "deck-3.0.yaml"},
			stdout: golden(t, "deck-3.0-kong-compatible.json"),
			err:    "import-kong " + kongTestdata + "deck-3.0.yaml: 1 error (the other policies were written)"},
		{name: "yaml report",
			args:   []string{"--format=yaml", kongTestdata + "db-export-3.0.yaml"},
			stdout: golden(t, "db-export-3.0.yaml")},
		{name: "form, the seed example",
			args: []string{"--form", "config.origin=mockbin.com", "--form", "config.methods=GET, POST", "--form", "config.credentials=true"},
			stdout: "# warning: preflight_status: preflights are answered with 204 here, Kong answers 200; browsers accept both, a client that checks for 200 does not (set preflight_status: 200, or use --kong-compatible)\n" +
				`# warning: origins[0] "mockbin.com": has no scheme, so it never matches: browsers send scheme://host[:port], e.g. "https://mockbin.com"` + "\n" +
				"origins:\n  - mockbin.com\nmethods:\n  - GET\n  - POST\ncredentials: true\n"},
		{name: "form, json",
			args:   []string{"--format", "json", "--kong-compatible", "--form", "config.origins=https://a.example", "--form", "config.preflight_continue=true"},
			stdout: "{\n  \"policy\": {\n    \"origins\": [\n      \"https://a.example\"\n    ],\n    \"preflight_continue\": true\n  }\n}\n"},
		{name: "form that cannot be migrated",
			args:   []string{"--form", "config.origins=(?=a)", "--form", "config.methods=GET", "--kong-compatible"},
			stdout: `# error: origins[0] "(?=a)": invalid regex: invalid or unsupported Perl syntax (Kong's PCRE also has look-around, back-references, atomic groups and possessive quantifiers; Go's RE2 has none of them: rewrite the regex)` + "\n",
			err:    "import-kong: the plugin could not be migrated: 1 error"},
		{name: "not a declarative file",
			args: []string{kongTestdata + "golden/deck-1.1.policies.yaml"},
			err:  "import-kong " + kongTestdata + "golden/deck-1.1.policies.yaml: no _format_version: a decK or \"kong config db_export\" file has one (\"1.1\", \"2.1\" or \"3.0\")"},
		{name: "missing file",
			args: []string{filepath.Join(dir, "nope.yaml")},
			err:  "open " + filepath.Join(dir, "nope.yaml") + ": no such file or directory"},
		{name: "usage errors together",
			args: []string{"--format", "xml", "a.yaml", "b.yaml"},
			err:  "--format \"xml\": want text, yaml or json\nimport-kong: want one FILE (or --form parameters), got 2"},
		{name: "file and form",
			args: []string{"--form", "config.origins=*", "a.yaml"},
			err:  "import-kong: give a FILE or --form parameters, not both"},
		{name: "form and output-policies",
			args: []string{"--form", "config.origins=*", "--output-policies", out},
			err:  "--output-policies: not with --form, which prints one policy"},
		{name: "no input",
			err: "import-kong: want one FILE (or --form parameters), got 0"},
		{name: "unknown flag",
			args: []string{"--kong", "a.yaml"},
			err:  "--kong: no such flag; did you mean --kong-compatible?"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			os.Remove(out)
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append([]string{"import-kong"}, c.args...), &stdout, &stderr)
			if c.err == "" {
				assert.NoError(t, err)
			} else {
				assert.EqualError(t, err, c.err)
			}
			assert.Equal(t, c.stdout, stdout.String())
			if c.stderr != "" {
				assert.Contains(t, stderr.String(), c.stderr)
			} else {
				assert.Empty(t, stderr.String())
			}
			written, readErr := os.ReadFile(out)
			if c.policies == "" {
				assert.True(t, os.IsNotExist(readErr), "no policy file written")
			} else {
				require.NoError(t, readErr)
				assert.Equal(t, golden(t, c.policies), string(written))
			}
		})
	}
}

func TestImportKongHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"import-kong", "-h"}, &stdout, &stderr))
	assert.Empty(t, stderr.String())
	assert.Contains(t, stdout.String(), "usage: cors-extproc import-kong [flags] FILE")
	assert.Contains(t, stdout.String(), "--kong-compatible")
}

// The README's "Migrating from Kong" example is this command's output, word for word.
func TestImportKongReadmeExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	section := string(readme)
	_, section, ok := strings.Cut(section, "## Migrating from Kong\n")
	require.True(t, ok, "README has a Migrating from Kong section")
	_, input, ok := strings.Cut(section, "```yaml\n# kong.yaml\n")
	require.True(t, ok)
	input, rest, _ := strings.Cut(input, "```")
	const command = "$ cors-extproc import-kong --output-policies policies.yaml kong.yaml\n"
	_, want, ok := strings.Cut(rest, command)
	require.True(t, ok)
	want, _, _ = strings.Cut(want, "```")

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kong.yaml"), []byte(input), 0o644))
	var stdout, stderr bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"import-kong", "--output-policies",
		filepath.Join(dir, "policies.yaml"), filepath.Join(dir, "kong.yaml")}, &stdout, &stderr))
	assert.Equal(t, want, stdout.String())
	written, err := os.ReadFile(filepath.Join(dir, "policies.yaml"))
	require.NoError(t, err)
	assert.Contains(t, string(written), "route-admin:\n  origins:\n    - https://admin.example.com\n  methods:\n    - GET\n    - POST\n")
}
