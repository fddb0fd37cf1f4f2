package deploy_test

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/cors-extproc/cors-extproc/internal/policy"
)

// readmeYAMLBlocks returns the YAML code blocks of a README, in order.
func readmeYAMLBlocks(t *testing.T, name string) []string {
	t.Helper()
	var blocks []string
	rest := string(readFile(t, name))
	for {
		i := strings.Index(rest, "```yaml\n")
		if i < 0 {
			return blocks
		}
		rest = rest[i+len("```yaml\n"):]
		j := strings.Index(rest, "```")
		if j < 0 {
			t.Fatalf("%s: unterminated code block", name)
		}
		blocks = append(blocks, rest[:j])
		rest = rest[j+3:]
	}
}

// The root README's Envoy filter snippet is deploy/envoy.yaml's, word for word, so that the
// documentation cannot drift from the tested bootstrap.
func TestReadmeFilterSnippetIsEnvoyYAMLs(t *testing.T) {
	var snippet string
	for _, b := range readmeYAMLBlocks(t, "../README.md") {
		if strings.HasPrefix(b, "- name: envoy.filters.http.ext_proc\n") {
			snippet = b
		}
	}
	if snippet == "" {
		t.Fatal("README.md: no ext_proc filter snippet")
	}
	lines := strings.Split(strings.TrimSuffix(snippet, "\n"), "\n")
	envoy := strings.Split(string(readFile(t, "envoy.yaml")), "\n")
	for i, l := range envoy {
		if strings.TrimSpace(l) != lines[0] {
			continue
		}
		indent := l[:len(l)-len(strings.TrimLeft(l, " "))]
		for k, want := range lines {
			got := ""
			if i+k < len(envoy) {
				got = strings.TrimPrefix(envoy[i+k], indent)
			}
			if got != want {
				t.Fatalf("README.md snippet line %d %q differs from envoy.yaml line %d %q", k+1, want, i+k+1, got)
			}
		}
		return
	}
	t.Fatal("envoy.yaml: no ext_proc filter entry")
}

// Every policy the root README shows is valid and draws no warning.
func TestReadmePoliciesAreValid(t *testing.T) {
	checked := 0
	for _, b := range readmeYAMLBlocks(t, "../README.md") {
		switch {
		case strings.HasPrefix(b, "# policies.yaml"):
			_, warnings, err := policy.ParseNamed([]byte(b))
			if err != nil || len(warnings) > 0 {
				t.Errorf("README named-policy example: %v %v", err, warnings)
			}
			checked++
		case strings.Contains(b, "filter_metadata:"):
			var doc any
			if err := yaml.Unmarshal([]byte(b), &doc); err != nil {
				t.Fatalf("README block %q: %v", b, err)
			}
			for _, cors := range corsFields(doc) {
				if _, isRef, err := policy.RefName(cors); isRef || err != nil {
					continue
				}
				if _, warnings, err := policy.Compile(cors); err != nil || len(warnings) > 0 {
					t.Errorf("README route policy %v: %v %v", cors, err, warnings)
				}
				checked++
			}
		}
	}
	if checked < 2 {
		t.Fatalf("only %d README policies found", checked)
	}
}

// corsFields finds every filter_metadata.cors map in a decoded YAML document.
func corsFields(doc any) []map[string]any {
	var out []map[string]any
	switch v := doc.(type) {
	case map[string]any:
		if fm, ok := v["filter_metadata"].(map[string]any); ok {
			if c, ok := fm["cors"].(map[string]any); ok {
				out = append(out, c)
			}
		}
		for _, e := range v {
			out = append(out, corsFields(e)...)
		}
	case []any:
		for _, e := range v {
			out = append(out, corsFields(e)...)
		}
	}
	return out
}
