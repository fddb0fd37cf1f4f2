package main

import (
	"flag"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// --help names every command and, beside each server flag, its environment variable; it goes
// to stdout, and `help` prints the same.
func TestHelpListsCommandsAndVariables(t *testing.T) {
	out, stderr, err := runCommand(t, "--help")
	require.NoError(t, err)
	assert.Empty(t, stderr)
	for _, c := range commandList() {
		assert.Regexp(t, `(?m)^  `+regexp.QuoteMeta(c.name)+` +\S`, out, "command %s", c.name)
	}
	n := 0
	serverFlags(&config{}, new(string), new(string)).VisitAll(func(f *flag.Flag) {
		n++
		line := regexp.MustCompile(`(?m)^  --` + regexp.QuoteMeta(f.Name) + `\b.*$`).FindString(out)
		if f.Name == "version" {
			assert.NotContains(t, line, "CORS_EXTPROC_", "--version has no variable")
			return
		}
		assert.Contains(t, line, "("+envVar(f.Name)+")", "flag %s", f.Name)
	})
	assert.Greater(t, n, 20)

	help, _, err := runCommand(t, "help")
	require.NoError(t, err)
	assert.Equal(t, out, help)
	for _, c := range commandList() {
		if c.name == "version" || c.name == "help" {
			continue
		}
		direct, _, err := runCommand(t, c.name, "--help")
		require.NoError(t, err)
		viaHelp, _, err := runCommand(t, "help", c.name)
		require.NoError(t, err)
		assert.Equal(t, direct, viaHelp)
		assert.Contains(t, direct, "usage: cors-extproc "+c.name)
	}
}

// The kind of value each flag takes is its type's, never a word of its description that a
// backquote made a value name (`--policies ref` read as if the flag took a ref).
func TestHelpValueNames(t *testing.T) {
	serverFlags(&config{}, new(string), new(string)).VisitAll(func(f *flag.Flag) {
		assert.NotContains(t, f.Usage, "`", "flag %s", f.Name)
	})
	flagLine := regexp.MustCompile(`(?m)^  (--?[a-zA-Z-]+)(?: (\S+))?`)
	for _, args := range [][]string{{"--help"}, {"validate", "--help"}, {"explain", "--help"}, {"import-kong", "--help"}} {
		out, _, err := runCommand(t, args...)
		require.NoError(t, err)
		lines := flagLine.FindAllStringSubmatch(out[strings.Index(out, "\nFlags:\n"):], -1)
		require.NotEmpty(t, lines, "%v", args)
		for _, l := range lines {
			if l[2] == "" || strings.HasPrefix(l[2], "(") {
				continue
			}
			assert.Contains(t, []string{"string", "duration", "int", "uint", "value"}, l[2], "%v: %s", args, l[0])
		}
	}
	out, _, _ := runCommand(t, "--help")
	assert.Contains(t, out, "\n  --policies string  (CORS_EXTPROC_POLICIES)\n")
}

func TestVersion(t *testing.T) {
	defer func(v string) { version = v }(version)
	version = "v1.2.3-4-gabcdef0"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, _, err := runCommand(t, args...)
		require.NoError(t, err)
		assert.Equal(t, "cors-extproc v1.2.3-4-gabcdef0\n", out, "%v", args)
	}
	_, _, err := runCommand(t, "version", "extra")
	require.EqualError(t, err, "version: unexpected arguments: extra")
}

// The version is the stamped one, else what the Go toolchain recorded.
func TestVersionOf(t *testing.T) {
	vcs := func(rev, modified string) *debug.BuildInfo {
		return &debug.BuildInfo{Main: debug.Module{Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}}
	}
	for _, tc := range []struct {
		stamped string
		info    *debug.BuildInfo
		ok      bool
		want    string
	}{
		{"v1.0.0", vcs("0123456789abcdef", "false"), true, "v1.0.0"},
		{"", &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, true, "v1.4.0"},
		{"", vcs("0123456789abcdef", "false"), true, "dev-0123456789ab"},
		{"", vcs("0123456789abcdef", "true"), true, "dev-0123456789ab-dirty"},
		{"", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true, "dev"},
		{"", nil, false, "dev"},
	} {
		assert.Equal(t, tc.want, versionOf(tc.stamped, tc.info, tc.ok))
	}
}

// A first argument that is no command is refused, naming the commands and the nearest.
func TestUnknownCommand(t *testing.T) {
	_, _, err := runCommand(t, "valdate", "x.yaml")
	require.EqualError(t, err, `unknown command "valdate"; did you mean validate? (commands: validate, explain, import-kong, version, help)`)
	_, _, err = runCommand(t, "serve")
	require.EqualError(t, err, `unknown command "serve" (commands: validate, explain, import-kong, version, help; the server takes only flags)`)
	_, _, err = runCommand(t, "help", "exlpain")
	require.EqualError(t, err, `unknown command "exlpain"; did you mean explain? (commands: validate, explain, import-kong, version, help)`)
}
