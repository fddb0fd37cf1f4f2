package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/strvals"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/kyaml/filesys"
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

// readmeBlock is one fenced code block of a README: its language and text.
type readmeBlock struct {
	lang, body string
	line       int
}

// readmeSection is a "## " section of a README with its code blocks, in order.
type readmeSection struct {
	title  string
	blocks []readmeBlock
}

func readmeSections(t *testing.T, name string) []readmeSection {
	t.Helper()
	var sections []readmeSection
	var block *readmeBlock
	for i, line := range strings.Split(string(readFile(t, name)), "\n") {
		switch {
		case block != nil && line == "```":
			sections[len(sections)-1].blocks = append(sections[len(sections)-1].blocks, *block)
			block = nil
		case block != nil:
			block.body += line + "\n"
		case strings.HasPrefix(line, "## "):
			sections = append(sections, readmeSection{title: strings.TrimPrefix(line, "## ")})
		case strings.HasPrefix(line, "```"):
			if len(sections) == 0 {
				sections = append(sections, readmeSection{title: "(top)"})
			}
			block = &readmeBlock{lang: strings.TrimPrefix(line, "```"), line: i + 1}
		}
	}
	if block != nil {
		t.Fatalf("%s:%d: unterminated code block", name, block.line)
	}
	return sections
}

// shellCommand is one command line of a sh block: a pipeline of commands, each a list of
// words, and the here-document it reads, if any.
type shellCommand struct {
	pipeline [][]string
	heredoc  string
	line     int
}

func (c shellCommand) String() string {
	var parts []string
	for _, words := range c.pipeline {
		parts = append(parts, strings.Join(words, " "))
	}
	return strings.Join(parts, " | ")
}

// shellCommands splits a sh block into commands: words split as the shell does for the quoting
// these READMEs use ('...', "..."), # comments dropped, | separating a pipeline, and a
// here-document (<<'EOF' ... EOF) attached to its command.
func shellCommands(t *testing.T, b readmeBlock) []shellCommand {
	t.Helper()
	var out []shellCommand
	lines := strings.Split(strings.TrimSuffix(b.body, "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		cmd := shellCommand{line: b.line + 1 + i}
		text := lines[i]
		for strings.HasSuffix(text, "\\") && i+1 < len(lines) {
			i++
			text = strings.TrimSuffix(text, "\\") + lines[i]
		}
		words := []string{}
		var word strings.Builder
		inWord := false
		flush := func() {
			if inWord {
				words = append(words, word.String())
				word.Reset()
				inWord = false
			}
		}
	scan:
		for j := 0; j < len(text); j++ {
			switch ch := text[j]; {
			case ch == '\'' || ch == '"':
				end := strings.IndexByte(text[j+1:], ch)
				if end < 0 {
					t.Fatalf("README line %d: unterminated quote in %q", cmd.line, text)
				}
				word.WriteString(text[j+1 : j+1+end])
				inWord = true
				j += end + 1
			case ch == ' ' || ch == '\t':
				flush()
			case ch == '#' && !inWord:
				break scan
			case ch == '|' && !inWord:
				flush()
				cmd.pipeline = append(cmd.pipeline, words)
				words = []string{}
			default:
				word.WriteByte(ch)
				inWord = true
			}
		}
		flush()
		if len(words) == 0 && len(cmd.pipeline) == 0 {
			continue
		}
		cmd.pipeline = append(cmd.pipeline, words)
		if last := words[len(words)-1]; strings.HasPrefix(last, "<<") {
			delim := strings.TrimPrefix(last, "<<")
			cmd.pipeline[len(cmd.pipeline)-1] = words[:len(words)-1]
			var doc strings.Builder
			for i++; i < len(lines) && lines[i] != delim; i++ {
				doc.WriteString(lines[i] + "\n")
			}
			if i == len(lines) {
				t.Fatalf("README line %d: here-document without its %s line", cmd.line, delim)
			}
			cmd.heredoc = doc.String()
		}
		out = append(out, cmd)
	}
	return out
}

// readmeWalk runs a README section's commands without a cluster. What a command would send to
// the API server is built and decoded strictly, and kept, so that later commands of the same
// section (a patch, a namespace check) see it.
type readmeWalk struct {
	t       *testing.T
	root    string              // a scratch directory standing for the repository's root
	objects map[string]manifest // what the section has applied, by kind, namespace and name
	binary  func() string       // the cors-extproc binary, built once
	skipped []string            // commands that need what this machine lacks
}

// readmePrerequisites are the namespaces a section may use without creating them: those of the
// Kubernetes base (each section names it as a prerequisite), of the gateways' installs, and the
// cluster's default.
var readmePrerequisites = []string{"cors-extproc", "envoy-gateway-system", "istio-system", "default"}

// readmeExisting are the objects a section patches without applying them: the user's own,
// named as placeholders in the README.
var readmeExisting = map[string]string{
	"Gateway default/eg": "gateway.networking.k8s.io/v1",
}

// kubectlResources maps kubectl's resource names to kinds.
var kubectlResources = map[string]string{"gateway": "Gateway", "envoyproxy": "EnvoyProxy", "namespace": "Namespace"}

func (w *readmeWalk) path(p string) string { return filepath.Join(w.root, filepath.FromSlash(p)) }

// apply records objects as applied, in namespace ns if kubectl was given -n.
func (w *readmeWalk) apply(cmd shellCommand, ns string, ms []manifest) {
	w.t.Helper()
	namespaces := map[string]bool{}
	for _, p := range readmePrerequisites {
		namespaces[p] = true
	}
	for _, m := range w.objects {
		if m.Kind == "Namespace" {
			namespaces[m.meta.Name] = true
		}
	}
	for _, m := range ms {
		if m.Kind == "Namespace" {
			namespaces[m.meta.Name] = true
		}
	}
	for _, m := range ms {
		clusterScoped := m.Kind == "Namespace" || m.Kind == "ClusterIssuer"
		if ns != "" && m.meta.Namespace == "" && !clusterScoped {
			m.meta.Namespace = ns
		} else if ns != "" && m.meta.Namespace != ns && !clusterScoped {
			w.t.Errorf("README line %d: %s: %s is in namespace %q, not the -n %s of the command", cmd.line, cmd, m.key(), m.meta.Namespace, ns)
		}
		if m.meta.Namespace != "" && !namespaces[m.meta.Namespace] {
			w.t.Errorf("README line %d: %s: %s is in namespace %s, which this section does not create", cmd.line, cmd, m.key(), m.meta.Namespace)
		}
		w.objects[m.key()] = m
	}
}

// flags splits a command's words into positional arguments and --flag values (repeatable).
func flags(words []string, boolean ...string) ([]string, map[string][]string) {
	var args []string
	values := map[string][]string{}
	for i := 0; i < len(words); i++ {
		w := words[i]
		if !strings.HasPrefix(w, "-") || w == "-" {
			args = append(args, w)
			continue
		}
		name, value, ok := strings.Cut(strings.TrimLeft(w, "-"), "=")
		if !ok && !slices.Contains(boolean, name) && i+1 < len(words) {
			i++
			value = words[i]
		}
		values[name] = append(values[name], value)
	}
	return args, values
}

func one(values map[string][]string, names ...string) string {
	for _, n := range names {
		if v := values[n]; len(v) > 0 {
			return v[len(v)-1]
		}
	}
	return ""
}

// run runs one command line.
func (w *readmeWalk) run(cmd shellCommand) {
	w.t.Helper()
	t := w.t
	var piped []manifest
	for _, words := range cmd.pipeline {
		if len(words) == 0 {
			t.Fatalf("README line %d: empty command in %s", cmd.line, cmd)
		}
		piped = w.runOne(cmd, words, piped)
	}
}

func (w *readmeWalk) runOne(cmd shellCommand, words []string, stdin []manifest) (stdout []manifest) {
	w.t.Helper()
	t := w.t
	where := fmt.Sprintf("README line %d: %s", cmd.line, strings.Join(words, " "))
	switch {
	case words[0] == "mkdir" && len(words) == 3 && words[1] == "-p":
		if err := os.MkdirAll(w.path(words[2]), 0o755); err != nil {
			t.Fatal(err)
		}
	case words[0] == "cat" && len(words) == 3 && words[1] == ">" && cmd.heredoc != "":
		if err := os.WriteFile(w.path(words[2]), []byte(cmd.heredoc), 0o644); err != nil {
			t.Fatal(err)
		}
	case len(words) > 1 && words[0] == "kubectl":
		return w.kubectl(cmd, where, words[1:], stdin)
	case len(words) > 1 && words[0] == "helm":
		w.helm(cmd, where, words[1:])
	case len(words) > 3 && words[0] == "go" && words[1] == "run" && words[2] == "./cmd/cors-extproc":
		run := exec.Command(w.binary(), words[3:]...)
		run.Dir = w.root
		if out, err := run.CombinedOutput(); err != nil || strings.Contains(string(out), "ERROR") {
			t.Errorf("%s: %v\n%s", where, err, out)
		}
	case words[0] == "docker" || words[0] == "curl":
		w.skipped = append(w.skipped, strings.Join(words, " "))
	default:
		t.Errorf("%s: a command these tests cannot run; teach readmeWalk, or say in the README why not", where)
	}
	return nil
}

func (w *readmeWalk) kubectl(cmd shellCommand, where string, words []string, stdin []manifest) []manifest {
	w.t.Helper()
	t := w.t
	args, fl := flags(words)
	ns := one(fl, "n", "namespace")
	switch {
	case len(args) == 2 && args[0] == "kustomize":
		kustomizeBuild(t, filesys.MakeFsOnDisk(), w.path(args[1]))
	case len(args) == 1 && args[0] == "apply" && one(fl, "k") != "":
		w.apply(cmd, ns, kustomizeBuild(t, filesys.MakeFsOnDisk(), w.path(one(fl, "k"))))
	case len(args) == 1 && args[0] == "apply" && one(fl, "f") == "-":
		w.apply(cmd, ns, stdin)
	case len(args) == 1 && args[0] == "apply" && one(fl, "f") != "":
		// As kubectl: a file, or the YAML and JSON files of a directory (not below it).
		p := w.path(one(fl, "f"))
		files := []string{p}
		if info, err := os.Stat(p); err != nil {
			t.Fatalf("%s: %v", where, err)
		} else if info.IsDir() {
			files = nil
			for _, ext := range []string{"*.yaml", "*.yml", "*.json"} {
				m, _ := filepath.Glob(filepath.Join(p, ext))
				files = append(files, m...)
			}
			sort.Strings(files)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			w.apply(cmd, ns, decodeManifests(t, where, data))
		}
	case len(args) == 3 && args[0] == "create" && args[1] == "namespace":
		if one(fl, "dry-run") != "client" || one(fl, "o") != "yaml" {
			t.Errorf("%s: create a namespace idempotently (--dry-run=client -o yaml | kubectl apply -f -), so the sections can run in any order", where)
		}
		return []manifest{decodeManifest(t, where, []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+args[2]+"\n"))}
	case len(args) == 3 && args[0] == "patch" && one(fl, "type") == "merge":
		kind := kubectlResources[args[1]]
		key := kind + " " + ns + "/" + args[2]
		target, applied := w.objects[key]
		var doc []byte
		switch {
		case applied:
			doc = target.doc
		case readmeExisting[key] != "":
			doc = []byte(fmt.Sprintf("apiVersion: %s\nkind: %s\nmetadata: {name: %s, namespace: %s}\n", readmeExisting[key], kind, args[2], ns))
		default:
			t.Fatalf("%s: patches %s, which the section has not applied", where, key)
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			t.Fatal(err)
		}
		patched, err := jsonpatch.MergePatch(js, []byte(one(fl, "p", "patch")))
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		w.apply(cmd, "", []manifest{decodeManifest(t, where, patched)})
	case len(args) == 4 && args[0] == "label" && args[1] == "namespace":
		key := "Namespace /" + args[2]
		nsObj, ok := w.objects[key]
		k, v, found := strings.Cut(args[3], "=")
		if !ok || !found {
			t.Fatalf("%s: labels %s, which the section has not created, or no key=value", where, key)
		}
		patched, err := jsonpatch.MergePatch(mustJSON(t, nsObj.doc), []byte(fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, k, v)))
		if err != nil {
			t.Fatal(err)
		}
		w.apply(cmd, "", []manifest{decodeManifest(t, where, patched)})
	default:
		t.Errorf("%s: a kubectl command these tests cannot run", where)
	}
	return nil
}

func mustJSON(t *testing.T, doc []byte) []byte {
	t.Helper()
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func (w *readmeWalk) helm(cmd shellCommand, where string, words []string) {
	w.t.Helper()
	t := w.t
	args, fl := flags(words, "create-namespace", "install")
	values := map[string]any{}
	for _, f := range fl["f"] {
		v, err := common.ReadValuesFile(w.path(f))
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		values = v
	}
	for _, s := range fl["set"] {
		if err := strvals.ParseInto(s, values); err != nil {
			t.Fatalf("%s: --set %s: %v", where, s, err)
		}
	}
	switch {
	case len(args) == 2 && args[0] == "lint":
		helmLint(t, w.path(args[1]), values)
	case len(args) == 3 && (args[0] == "template" || args[0] == "install" || args[0] == "upgrade" && len(fl["install"]) == 1):
		ns := one(fl, "n", "namespace")
		if ns == "" {
			t.Errorf("%s: name the namespace (--namespace)", where)
		}
		ms, _, err := helmRender(t, w.path(args[2]), args[1], ns, values)
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if args[0] == "template" {
			return
		}
		if len(fl["create-namespace"]) > 0 {
			ms = append(ms, decodeManifest(t, where, []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+ns+"\n")))
		}
		w.apply(cmd, ns, ms)
	default:
		t.Errorf("%s: a helm command these tests cannot run", where)
	}
}

// TestReadmeWalk runs every command of deploy/README.md that can run without a cluster, each
// section on its own, and decodes every complete Kubernetes object of its YAML blocks.
func TestReadmeWalk(t *testing.T) {
	_, repo := scratchRepo(t)
	binary := sync.OnceValue(func() string {
		out := filepath.Join(t.TempDir(), "cors-extproc")
		build := exec.Command("go", "build", "-o", out, "./cmd/cors-extproc")
		build.Dir = repo
		if msg, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, msg)
		}
		return out
	})
	var ran, skipped int
	for _, section := range readmeSections(t, "README.md") {
		root, _ := scratchRepo(t)
		w := &readmeWalk{t: t, root: root, objects: map[string]manifest{}, binary: binary}
		for _, b := range section.blocks {
			switch b.lang {
			case "sh":
				for _, cmd := range shellCommands(t, b) {
					w.run(cmd)
					ran++
				}
			case "yaml":
				var tm metav1.TypeMeta
				if err := yaml.Unmarshal([]byte(b.body), &tm); err == nil && tm.Kind != "" {
					decodeManifest(t, fmt.Sprintf("README line %d", b.line), []byte(b.body))
				}
			}
		}
		for _, s := range w.skipped {
			t.Logf("%s: not run here: %s", section.title, s)
		}
		skipped += len(w.skipped)
	}
	if ran < 20 {
		t.Errorf("ran only %d README commands", ran)
	}
	t.Logf("ran %d commands, %d need what this machine lacks", ran-skipped, skipped)
}

// scratchRepo makes a directory standing for the repository's root, for README commands that
// write files (the repository's deploy/ linked in, read-only by convention), and returns it with
// the real root.
func scratchRepo(t *testing.T) (root, repo string) {
	t.Helper()
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	root = t.TempDir()
	if err := os.Symlink(filepath.Join(repo, "deploy"), filepath.Join(root, "deploy")); err != nil {
		t.Fatal(err)
	}
	return root, repo
}

// readmeCommand returns the one command of deploy/README.md that starts with the given words.
func readmeCommand(t *testing.T, prefix ...string) shellCommand {
	t.Helper()
	var found []shellCommand
	for _, s := range readmeSections(t, "README.md") {
		for _, b := range s.blocks {
			if b.lang != "sh" {
				continue
			}
			for _, c := range shellCommands(t, b) {
				if words := c.pipeline[0]; len(words) >= len(prefix) && slices.Equal(words[:len(prefix)], prefix) {
					found = append(found, c)
				}
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("README: %d commands start with %q, want one", len(found), strings.Join(prefix, " "))
	}
	return found[0]
}

// The README's own overlay replaces the image: its images entry names the image the base runs.
func TestReadmeOwnImage(t *testing.T) {
	c := readmeCommand(t, "cat", ">")
	file := c.pipeline[0][2]
	var k struct {
		Images []struct {
			Name    string `json:"name"`
			NewName string `json:"newName"`
			NewTag  string `json:"newTag"`
		} `json:"images"`
	}
	if err := yaml.Unmarshal([]byte(c.heredoc), &k); err != nil || len(k.Images) != 1 {
		t.Fatalf("README line %d: %v, images %+v", c.line, err, k.Images)
	}
	root, _ := scratchRepo(t)
	if err := os.MkdirAll(filepath.Join(root, filepath.Dir(file)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, file), []byte(c.heredoc), 0o644); err != nil {
		t.Fatal(err)
	}
	d := only[appsv1.Deployment](t, kustomizeBuild(t, filesys.MakeFsOnDisk(), filepath.Join(root, filepath.Dir(file))))
	if got, want := d.Spec.Template.Spec.Containers[0].Image, k.Images[0].NewName+":"+k.Images[0].NewTag; got != want {
		t.Errorf("the README's overlay runs %s, want %s", got, want)
	}
}
