package kongimport

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cors-extproc/cors-extproc/internal/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// checkGolden compares got with testdata/golden/name, or writes it there with -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test ./internal/kongimport/ -update to create it")
	assert.Equal(t, string(want), string(got), "golden file %s (go test ./internal/kongimport/ -update rewrites it)", path)
}

// TestFileGolden imports every kind of declarative file and compares the report, in each
// format, and the named-policy file with the golden files. Every named-policy file written
// must load in the server: policy.ParseNamed finds no error in it and the policy names it.
func TestFileGolden(t *testing.T) {
	cases := []struct {
		name, input string
		opts        Options
		errors      int
	}{
		{name: "deck-3.0", input: "deck-3.0.yaml", errors: 1},
		{name: "deck-3.0-kong-compatible", input: "deck-3.0.yaml", opts: Options{KongCompatible: true}, errors: 1},
		{name: "deck-2.1", input: "deck-2.1.json", errors: 5},
		{name: "deck-1.1", input: "deck-1.1.yaml"},
		{name: "db-export-3.0", input: "db-export-3.0.yaml"},
		{name: "db-export-3.0-kong-compatible", input: "db-export-3.0.yaml", opts: Options{KongCompatible: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", c.input))
			require.NoError(t, err)
			r, err := File(data, c.opts)
			require.NoError(t, err)
			assert.Len(t, r.Errors, c.errors, "errors: %q", r.Errors)

			var text, yml, js bytes.Buffer
			require.NoError(t, r.WriteText(&text))
			require.NoError(t, WriteYAML(&yml, r))
			require.NoError(t, WriteJSON(&js, r))
			file, err := r.PolicyFile()
			require.NoError(t, err)
			checkGolden(t, c.name+".txt", text.Bytes())
			checkGolden(t, c.name+".yaml", yml.Bytes())
			checkGolden(t, c.name+".json", js.Bytes())
			checkGolden(t, c.name+".policies.yaml", file)

			named, _, err := policy.ParseNamed(file)
			require.NoError(t, err)
			assert.Len(t, named, len(r.Policies))
			for _, p := range r.Policies {
				assert.Contains(t, named, p.Name)
			}
			for _, rt := range r.Routes {
				if rt.Policy != "" {
					assert.Contains(t, named, rt.Policy, "route %s", rt.Route)
				}
			}
		})
	}
}

// TestFileUnreadable: a file that is not a declarative configuration is one error, and no
// report.
func TestFileUnreadable(t *testing.T) {
	cases := []struct{ data, err string }{
		{"a: [", "not a Kong declarative file: yaml: line 1: did not find expected node content"},
		{"- a\n- b\n", "not a Kong declarative file: want a map with _format_version, services, routes, plugins …"},
		{"services: []\n", `no _format_version: a decK or "kong config db_export" file has one ("1.1", "2.1" or "3.0")`},
		{"_format_version: \"0.1\"\n", `_format_version "0.1": want "1.1", "2.1" or "3.0"`},
		{"_format_version: \"3.0\"\nservices: {a: b}\n", "services: yaml: unmarshal errors:\n  line 2: cannot unmarshal !!map into []kongimport.fileService"},
		{"_format_version: \"3.0\"\nplugins: [{name: cors, route: [a]}]\n", "plugins: line 2: want a name, an id or {id: …, name: …}"},
	}
	for _, c := range cases {
		r, err := File([]byte(c.data), Options{})
		assert.Nil(t, r)
		assert.EqualError(t, err, c.err, c.data)
	}
}

// TestFileEmpty: a file without plugins gives an empty named-policy file that the server loads.
func TestFileEmpty(t *testing.T) {
	r, err := File([]byte("_format_version: \"3.0\"\nservices:\n- name: s\n  routes:\n  - paths: [/]\n"), Options{})
	require.NoError(t, err)
	assert.Equal(t, []Route{{Route: "#1", Service: "s"}}, r.Routes)
	out, err := r.PolicyFile()
	require.NoError(t, err)
	named, _, err := policy.ParseNamed(out)
	require.NoError(t, err)
	assert.Empty(t, named)
}
