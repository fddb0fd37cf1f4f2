package deploy_test

import (
	"go/build"
	"go/version"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// dockerfile is the root Dockerfile, its continuation lines joined.
func dockerfile(t *testing.T) []string {
	t.Helper()
	text := strings.ReplaceAll(string(readFile(t, "../Dockerfile")), "\\\n", " ")
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
	}
	return lines
}

func TestDockerfile(t *testing.T) {
	lines := dockerfile(t)
	var froms, users, exposes, builds []string
	args := map[string]string{}
	for _, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		switch instr {
		case "FROM":
			froms = append(froms, rest)
		case "USER":
			users = append(users, rest)
		case "EXPOSE":
			exposes = append(exposes, strings.Fields(rest)...)
		case "ARG":
			name, value, _ := strings.Cut(rest, "=")
			args[name] = value
		case "RUN":
			if strings.Contains(rest, "go build") {
				builds = append(builds, rest)
			}
		}
	}

	// The builder's Go is at least go.mod's.
	goLine := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(readFile(t, "../go.mod"))
	if goLine == nil {
		t.Fatal("go.mod has no go line")
	}
	if len(froms) != 2 || !strings.HasSuffix(froms[0], "golang:${GO_VERSION} AS build") || froms[1] != "gcr.io/distroless/static-debian12:nonroot" {
		t.Fatalf("FROM %v: want golang:${GO_VERSION} to build and distroless static nonroot to run", froms)
	}
	if v := "go" + args["GO_VERSION"]; !version.IsValid(v) || version.Compare(v, "go"+string(goLine[1])) < 0 {
		t.Errorf("GO_VERSION %q is older than go.mod's go %s", args["GO_VERSION"], goLine[1])
	}

	if len(builds) != 1 {
		t.Fatalf("want one go build, got %v", builds)
	}
	b := builds[0]
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w -X main.version=${VERSION}"`, "./cmd/cors-extproc"} {
		if !strings.Contains(b, want) {
			t.Errorf("go build %q lacks %s", b, want)
		}
	}
	if _, ok := args["VERSION"]; !ok {
		t.Error("no ARG VERSION")
	}
	// -X silently does nothing when the variable does not exist.
	pkg, err := build.ImportDir(filepath.Join("..", "cmd", "cors-extproc"), 0)
	if err != nil || pkg.Name != "main" {
		t.Fatalf("./cmd/cors-extproc: %v (package %q)", err, pkg.Name)
	}
	var stamped bool
	for _, f := range pkg.GoFiles {
		src, err := os.ReadFile(filepath.Join(pkg.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		stamped = stamped || regexp.MustCompile(`(?m)^var version( = "| string$)`).Match(src)
	}
	if !stamped {
		t.Error(`cmd/cors-extproc declares no string variable version for -X main.version`)
	}

	// The runtime user and ports are the ones Kubernetes expects.
	k := loadK8s(t)
	sc := k.deployment.Spec.Template.Spec.SecurityContext
	if want := strconv.FormatInt(*sc.RunAsUser, 10) + ":" + strconv.FormatInt(*sc.RunAsGroup, 10); !slices.Equal(users, []string{want}) {
		t.Errorf("USER %v, the Deployment runs as %s", users, want)
	}
	var ports []string
	for _, p := range k.container(t).Ports {
		ports = append(ports, strconv.Itoa(int(p.ContainerPort)))
	}
	slices.Sort(ports)
	slices.Sort(exposes)
	if !slices.Equal(exposes, ports) {
		t.Errorf("EXPOSE %v, container ports %v", exposes, ports)
	}
}

// TestDockerignore checks the build context keeps what go build needs.
func TestDockerignore(t *testing.T) {
	var patterns []string
	for _, l := range strings.Split(string(readFile(t, "../.dockerignore")), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, strings.TrimPrefix(l, "**/"))
		}
	}
	for _, needed := range []string{"go.mod", "go.sum", "cmd", "cmd/cors-extproc/main.go", "internal", "internal/processor/server.go"} {
		for _, p := range patterns {
			if ok, _ := filepath.Match(p, needed); ok || p == needed || strings.HasPrefix(needed, strings.TrimSuffix(p, "/")+"/") {
				t.Errorf(".dockerignore pattern %q drops %s", p, needed)
			}
		}
	}
}
