package faults

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cors-extproc/cors-extproc/internal/realenvoy"
	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

// The "reporting" policy of deploy/k8s/base/policies.yaml, on envoy.yaml's /reports/ route,
// and an origin a rollout adds to it.
const (
	reportsOrigin = "https://reports.example.com"
	addedOrigin   = "https://added.example.com"
)

var (
	reportsAllowed = shape{name: "reports, allowed Origin", method: "GET", prefix: "/reports/", origin: reportsOrigin, status: 200, acao: reportsOrigin, marked: true}
	reportsAdded   = shape{name: "reports, Origin the rollout added", method: "GET", prefix: "/reports/", origin: addedOrigin, status: 200, acao: addedOrigin, marked: true}
)

// configMapVolume lays out a folder the way the kubelet lays out a ConfigMap volume: the file
// a symlink into ..data, itself a symlink to a timestamped folder holding this version's
// files. A rollout writes a new timestamped folder and renames a new symlink over ..data, so
// that readers see the old version or the new one whole, never a mix.
type configMapVolume struct {
	dir     string
	version int
}

func newConfigMapVolume(t *testing.T, policies string) *configMapVolume {
	t.Helper()
	v := &configMapVolume{dir: t.TempDir()}
	v.rollout(t, policies)
	if err := os.Symlink(filepath.Join("..data", "policies.yaml"), filepath.Join(v.dir, "policies.yaml")); err != nil {
		t.Fatal(err)
	}
	return v
}

// rollout publishes a new version of policies.yaml, as the kubelet does after a ConfigMap edit.
func (v *configMapVolume) rollout(t *testing.T, policies string) {
	t.Helper()
	v.version++
	ts := fmt.Sprintf("..2026_12_04_00_00_%02d.%d", v.version, v.version)
	if err := os.Mkdir(filepath.Join(v.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v.dir, ts, "policies.yaml"), []byte(policies), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(v.dir, "..data"))
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBadConfigLive rolls policy edits out through a ConfigMap volume while traffic flows
// through Envoy: a valid edit (an origin added to "reporting") takes effect, then an edit with
// a YAML syntax error changes nothing for live traffic and is logged once and counted once
// however often the file is checked, then a fixed edit is applied again.
func TestBadConfigLive(t *testing.T) {
	requireFaults(t)
	bin := servicetest.Build(t)
	envoy := realenvoy.Newest(t)
	shipped, err := os.ReadFile(policiesFile(t))
	if err != nil {
		t.Fatal(err)
	}
	valid := strings.Replace(string(shipped), "  - https://bi.example.org\n", "  - https://bi.example.org\n  - "+addedOrigin+"\n", 1)
	if valid == string(shipped) {
		t.Fatal("policies.yaml: the reporting policy's origins are not where the test edits them")
	}
	// An unterminated flow sequence: the whole file is unreadable YAML.
	broken := strings.Replace(valid, "  methods: [GET, HEAD]\n", "  methods: [GET, HEAD\n", 1)
	if broken == valid {
		t.Fatal("policies.yaml: the reporting policy's methods are not where the test breaks them")
	}

	vol := newConfigMapVolume(t, string(shipped))
	addr := freeAddr(t)
	const reloadEvery = 200 * time.Millisecond
	svc := servicetest.Start(t, bin, "--grpc-addr", addr, "--policies", filepath.Join(vol.dir, "policies.yaml"),
		"--dynamic-metadata", "--policies-reload-interval", reloadEvery.String(), "--drain-period=0")
	s := newStack(t, envoy, []string{addr}, nil)
	s.waitOK(t, newClient())
	client := newClient()
	if a := s.do(t, client, reportsAdded); a.acao != "" {
		t.Fatalf("%s before the rollout: %v", addedOrigin, a)
	}

	vol.rollout(t, valid)
	for deadline := time.Now().Add(30 * time.Second); s.do(t, client, reportsAdded).outcome != ok; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the valid rollout did not take effect within 30s")
		}
	}

	mix := []shape{reportsAllowed, reportsAdded, reportsAllowed, preflightAllowed, actualNoOrigin}
	failOpen0 := s.extProc(t, "failure_mode_allowed")
	stop := s.background(loadRate(), mix, loadWorkers)
	time.Sleep(time.Second)
	vol.rollout(t, broken)
	brokenAt := time.Now()
	// Many checks of the refused file: it must be logged and counted once all the same.
	time.Sleep(20 * reloadEvery)
	vol.rollout(t, valid+"# fixed\n")
	time.Sleep(20 * reloadEvery)
	rs := stop()
	failOpen := s.extProc(t, "failure_mode_allowed") - failOpen0

	refusals := strings.Count(svc.Log(), "named-policy file refused")
	metrics := scrape(t, svc.AdminAddr)
	c := count(rs)
	t.Logf(`
bad config live: Envoy %s, %d HTTP requests/s offered, policies reloaded every %v
rollouts (atomic ..data swaps): valid, broken %v into the load, fixed %v later
outcomes:      %s (%d requests; Envoy went on without a reply %d times)
log lines:     %d "named-policy file refused"
metrics:       cors_extproc_policies_reloads_total{result="success"} %s, {result="failure"} %s`,
		envoy.Version, loadRate(), reloadEvery, brokenAt.Sub(rs[0].sent).Round(time.Millisecond), 20*reloadEvery,
		c, len(rs), failOpen, refusals, metrics[`cors_extproc_policies_reloads_total{result="success"}`], metrics[`cors_extproc_policies_reloads_total{result="failure"}`])

	// An unusable policy would answer without ACAO too; an undecorated answer is the machine's
	// (a reply later than message_timeout) only when Envoy counted it as failing open.
	if c[ok]+c[open] != len(rs) || c[open] != failOpen || c[open] > noiseBound(len(rs)) {
		t.Errorf("live traffic changed: %s, %d of them Envoy's fail-open\n%s", c, failOpen, wrongOnes(rs, open, closed, failed, wrong))
	}
	if refusals != 1 {
		t.Errorf("the broken file was logged %d times, want once:\n%s", refusals, svc.Log())
	}
	if got := metrics[`cors_extproc_policies_reloads_total{result="failure"}`]; got != "1" {
		t.Errorf("reloads counted as failures: %s, want 1", got)
	}
	if got := metrics[`cors_extproc_policies_reloads_total{result="success"}`]; got != "2" {
		t.Errorf("reloads counted as successes: %s, want 2 (the valid edit and the fix)", got)
	}
}

// scrape reads the service's /metrics into name{labels} → value.
func scrape(t *testing.T, admin string) map[string]string {
	t.Helper()
	res, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if line := sc.Text(); !strings.HasPrefix(line, "#") {
			if i := strings.LastIndexByte(line, ' '); i > 0 {
				out[line[:i]] = line[i+1:]
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
