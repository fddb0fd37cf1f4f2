package deploy_test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// composeFile holds the fields of the Compose specification docker-compose.yaml uses; decoding
// it strictly rejects any other.
type composeFile struct {
	Name     string                    `json:"name"`
	Services map[string]composeService `json:"services"`
}

type composeService struct {
	Image string `json:"image,omitempty"`
	Build *struct {
		Context    string            `json:"context"`
		Dockerfile string            `json:"dockerfile"`
		Args       map[string]string `json:"args,omitempty"`
	} `json:"build,omitempty"`
	Command   []string `json:"command,omitempty"`
	Volumes   []string `json:"volumes,omitempty"`
	Ports     []string `json:"ports,omitempty"`
	DependsOn []string `json:"depends_on,omitempty"`
	Networks  map[string]struct {
		Aliases []string `json:"aliases"`
	} `json:"networks,omitempty"`
}

// mounts maps each bind mount's container path to its host path (relative to deploy/).
func (s composeService) mounts(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) != 3 || parts[2] != "ro" || !strings.HasPrefix(parts[0], ".") {
			t.Errorf("volume %q: want a read-only bind mount of a repository file", v)
			continue
		}
		if _, err := os.Stat(filepath.FromSlash(parts[0])); err != nil {
			t.Errorf("volume %q: %v", v, err)
		}
		m[parts[1]] = filepath.ToSlash(filepath.Clean(parts[0]))
	}
	return m
}

// publishes reports whether a service publishes a container port on the same host port.
func (s composeService) publishes(port uint32) bool {
	p := strconv.FormatUint(uint64(port), 10)
	return slices.Contains(s.Ports, p+":"+p)
}

func TestDockerCompose(t *testing.T) {
	var f composeFile
	decodeStrict(t, "docker-compose.yaml", readFile(t, "docker-compose.yaml"), &f)
	env := loadEnvoy(t)

	envoy, ok := f.Services["envoy"]
	if !ok {
		t.Fatal("no envoy service")
	}
	if envoy.Image != env.image {
		t.Errorf("envoy image %q, envoy.yaml names %q", envoy.Image, env.image)
	}
	if envoy.mounts(t)["/etc/envoy/envoy.yaml"] != "envoy.yaml" {
		t.Error("envoy must mount ./envoy.yaml at /etc/envoy/envoy.yaml, the image's default config path")
	}
	if port := env.bootstrap.GetStaticResources().GetListeners()[0].GetAddress().GetSocketAddress().GetPortValue(); !envoy.publishes(port) {
		t.Errorf("envoy does not publish the listener port %d", port)
	}

	ext, ok := f.Services["cors-extproc"]
	if !ok || ext.Build == nil {
		t.Fatal("no cors-extproc service built from the repository")
	}
	if _, err := os.Stat(filepath.Join(filepath.FromSlash(ext.Build.Context), ext.Build.Dockerfile)); err != nil {
		t.Errorf("cors-extproc build: %v", err)
	}
	var policies string
	for _, a := range ext.Command {
		if v, ok := strings.CutPrefix(a, "--policies="); ok {
			policies = v
		}
	}
	// The same file as the Kubernetes ConfigMap, at the same path.
	if src := ext.mounts(t)[policies]; src != "k8s/base/policies.yaml" {
		t.Errorf("--policies %q is mounted from %q, want k8s/base/policies.yaml", policies, src)
	}
	k8sPolicies, _ := serverFlag(loadK8s(t).container(t), "policies")
	if policies != k8sPolicies {
		t.Errorf("--policies %q here, %q in Kubernetes", policies, k8sPolicies)
	}
	if !ext.publishes(9090) {
		t.Error("cors-extproc does not publish the admin port 9090")
	}
	extHost, _ := soleAddress(t, env.cluster(t, env.extProc.GetGrpcService().GetEnvoyGrpc().GetClusterName()))
	if !slices.Contains(ext.Networks["default"].Aliases, extHost) {
		t.Errorf("cors-extproc needs the network alias %s, the address envoy.yaml dials", extHost)
	}

	host, port := soleAddress(t, env.cluster(t, "demo-upstream"))
	up, ok := f.Services[host]
	if !ok {
		t.Fatalf("envoy.yaml's demo cluster dials %s, which is no compose service", host)
	}
	if !slices.Contains(up.Command, "-listen=:"+strconv.FormatUint(uint64(port), 10)) {
		t.Errorf("%s does not listen on %d (%v)", host, port, up.Command)
	}
	if !strings.Contains(up.Image, ":") || strings.HasSuffix(up.Image, ":latest") {
		t.Errorf("%s image %q: pin a release", host, up.Image)
	}
	for _, dep := range []string{"cors-extproc", host} {
		if !slices.Contains(envoy.DependsOn, dep) {
			t.Errorf("envoy does not depend on %s", dep)
		}
	}
}

// The compose file runs the server in one-trip mode, which envoy.yaml's filter chain fits.
func TestComposeRunsOneTrip(t *testing.T) {
	var f composeFile
	decodeStrict(t, "docker-compose.yaml", readFile(t, "docker-compose.yaml"), &f)
	if !slices.Contains(f.Services["cors-extproc"].Command, "--mode=one-trip") {
		t.Errorf("cors-extproc command %v: want --mode=one-trip", f.Services["cors-extproc"].Command)
	}
	if errs, _ := headerChain(t).Check(true, "cors-extproc"); len(errs) > 0 {
		t.Errorf("envoy.yaml does not fit one-trip: %v", errs)
	}
}
