package deploy_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	procv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cors-extproc/cors-extproc/internal/processor"
	"github.com/cors-extproc/cors-extproc/internal/realenvoy"
)

// The ext_proc messages each pinned Envoy release exchanges with cors-extproc for every case
// of routeCases in each server mode, recorded by TestRealEnvoyRoutesBehave and committed as
// testdata/envoy-recordings/VERSION.json. The simulated Envoy (internal/envoytest) must send
// the same messages for the same cases (TestEnvoyRoutesBehave), so it cannot drift from the
// Envoy releases we support without a test failing; and CI notices when a release sends
// something new.

var update = flag.Bool("update", false, "TestRealEnvoyRoutesBehave rewrites testdata/envoy-recordings from the real Envoys")

// recordingsDir holds one recording per pinned Envoy release.
const recordingsDir = "testdata/envoy-recordings"

// recording is one release's file.
type recording struct {
	Envoy string         `json:"envoy"`
	About string         `json:"about"`
	Cases []recordedCase `json:"cases"`
}

// recordingAbout heads every file, for a reader.
const recordingAbout = "Every ext_proc stream Envoy opened for each case of deploy/cases_test.go " +
	"(routeCases, with the server in each mode), each message Envoy sent and cors-extproc's reply, as protojson with the .proto's " +
	"field names (fields at their default value are left out; header values as text). Values that " +
	"change per request are placeholders in <>. Rewrite with: go test ./deploy -run TestRealEnvoyRoutesBehave -update"

// recordedCase is one case: the status the client got and the streams.
type recordedCase struct {
	Name    string                 `json:"name"`
	Status  int                    `json:"status"`
	Streams []realenvoy.Transcript `json:"streams"`
}

// record is one case played with the server in mode, named "mode/case".
func record(t *testing.T, mode processor.Mode, tc routeCase, status int, streams []*realenvoy.Stream) recordedCase {
	t.Helper()
	ts, err := realenvoy.Transcribe(streams)
	if err != nil {
		t.Fatal(err)
	}
	return recordedCase{Name: mode.String() + "/" + tc.name, Status: status, Streams: ts}
}

func recordingPath(version string) string {
	return filepath.Join(recordingsDir, version+".json")
}

// checkRecording compares the cases played with the committed recording of version, or with
// write rewrites it. When -run left cases out, it does neither: a partial recording would
// report the missing cases, or lose them.
func checkRecording(t *testing.T, version string, played []recordedCase, write bool) {
	t.Helper()
	all := len(serverModes) * len(routeCases)
	switch {
	case len(played) < all && write:
		t.Errorf("-update: %d of %d cases played; the recording of %s is left as it was", len(played), all, version)
	case len(played) < all:
		t.Logf("%d of %d cases played: the recording of %s is not compared", len(played), all, version)
	case write:
		writeRecording(t, version, played)
	default:
		compareRecording(t, version, played)
	}
}

func writeRecording(t *testing.T, version string, cases []recordedCase) {
	t.Helper()
	var raw bytes.Buffer
	enc := json.NewEncoder(&raw)
	enc.SetEscapeHTML(false) // the placeholders' <> as they are, for a reader
	enc.SetIndent("", "  ")
	if err := enc.Encode(recording{Envoy: version, About: recordingAbout, Cases: cases}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(recordingsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(recordingPath(version), raw.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", recordingPath(version))
}

// compareRecording fails the test for every case whose messages differ from the committed
// recording of version, and for every case the recording has that was not played.
func compareRecording(t *testing.T, version string, got []recordedCase) {
	t.Helper()
	raw, err := os.ReadFile(recordingPath(version))
	if err != nil {
		t.Fatalf("no recording of Envoy %s: %v (record it with `go test ./deploy -run TestRealEnvoyRoutesBehave -update` and `make envoy`)", version, err)
	}
	var want recording
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatalf("%s: %v", recordingPath(version), err)
	}
	byName := map[string]recordedCase{}
	for _, c := range want.Cases {
		byName[c.Name] = c
	}
	for _, c := range got {
		w, ok := byName[c.Name]
		if !ok {
			t.Errorf("case %q: not in %s", c.Name, recordingPath(version))
			continue
		}
		delete(byName, c.Name)
		if g, w := indent(t, c), indent(t, w); g != w {
			t.Errorf("case %q: the messages differ from %s\n%s", c.Name, recordingPath(version), lineDiff(w, g))
		}
	}
	for name := range byName {
		t.Errorf("case %q of %s was not played", name, recordingPath(version))
	}
}

func indent(t *testing.T, v any) string {
	t.Helper()
	// Through a generic tree first: a recording read back and a live one print alike.
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	out, err := json.MarshalIndent(tree, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// lineDiff shows where two JSON texts part: the lines around the first difference, recorded
// ("-") then played ("+").
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(w) && i < len(g) && w[i] == g[i] {
		i++
	}
	from := max(i-6, 0)
	var b strings.Builder
	for _, l := range w[from:i] {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	for _, l := range w[i:min(i+12, len(w))] {
		fmt.Fprintf(&b, "- %s\n", l)
	}
	for _, l := range g[i:min(i+12, len(g))] {
		fmt.Fprintf(&b, "+ %s\n", l)
	}
	return b.String()
}

// contractCases show what the recordings settle about the contract (docs/envoy-extproc.md).
var contractCases = []routeCase{
	// A reply of a filter ahead of ext_proc (RBAC): 1.36 opens no stream; 1.37 on open one
	// whose only message is response_headers, which the server lets pass. The header filters
	// have no request-phase metadata to write from.
	{name: "a filter ahead of ext_proc denies the request", route: "denied-ahead", local: localAhead,
		headers: [][2]string{origin("https://app.example.com")}, status: 403, cors: h()},
	// A route's own processing mode (response headers SKIP), and a reply whose mode_override
	// leaves every field at DEFAULT: a DEFAULT field keeps the filter's configured mode (SEND
	// here) and the route's own is dropped, on every pinned release (filterSkipCases show the
	// filter's SKIP kept). The recordings tell the two apart: the header filters decorate the
	// response from the request phase's metadata either way.
	{name: "a route that skips the response phase", route: "response-skipped",
		headers: [][2]string{origin("https://app.example.com")}, status: 200,
		cors: h(acao, "https://app.example.com", vary, "Accept-Encoding,Origin")},
	{name: "mode_override at DEFAULT sends the response phase the route skips", route: "response-skipped",
		headers: [][2]string{origin("https://app.example.com"), {alterHeader, modeOverrideDefault}},
		status:  200, cors: h(acao, "https://app.example.com", vary, "Accept-Encoding,Origin")},
}

// localAhead: a filter ahead of ext_proc replies (routeCase.local).
const localAhead = "filter ahead of ext_proc"

// contractRoutes are the routes of contractCases.
func contractRoutes(t *testing.T) []*routev3.Route {
	t.Helper()
	var routes []*routev3.Route
	for _, y := range []string{
		`{name: denied-ahead, match: {prefix: /denied-ahead/}, route: {cluster: demo-upstream},
		  typed_per_filter_config: {` + rbacAhead + `: {
		    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute,
		    rbac: {rules: {action: DENY, policies: {all: {permissions: [{any: true}], principals: [{any: true}]}}}}}}}`,
		`{name: response-skipped, match: {prefix: /response-skipped/}, route: {cluster: demo-upstream},
		  typed_per_filter_config: {envoy.filters.http.ext_proc: {
		    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute,
		    overrides: {processing_mode: {response_header_mode: SKIP}}}}}`,
	} {
		r := &routev3.Route{}
		decodeProto(t, "contract route", []byte(y), r)
		validate(t, r.GetName(), r)
		r.Metadata = policyMetadata(t, map[string]any{"origins": []any{"https://app.example.com"}})
		routes = append(routes, r)
	}
	return routes
}

// rbacAhead is an RBAC filter withFilterAhead puts ahead of every filter, enforcing nothing
// but where a route's config denies.
const rbacAhead = "rbac-ahead"

func withFilterAhead(t *testing.T, c envoyConfig) {
	t.Helper()
	f := &hcmv3.HttpFilter{}
	decodeProto(t, "filter ahead", []byte(`{name: `+rbacAhead+`, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC}}`), f)
	c.hcm.HttpFilters = append([]*hcmv3.HttpFilter{f}, c.hcm.GetHttpFilters()...)
}

// filterSkipCases run on envoy.yaml with the ext_proc filter's own processing_mode set to skip
// response headers (withFilterResponseSkip): a mode_override left at DEFAULT keeps that, where
// it dropped the route's own SKIP (contractCases). DEFAULT means "the filter's configured mode".
var filterSkipCases = []struct {
	name          string
	headers       [][2]string
	responsePhase bool // response_headers reach cors-extproc
}{
	{"the filter skips the response phase", [][2]string{origin("https://app.example.com")}, false},
	{"mode_override at DEFAULT keeps the filter's mode", [][2]string{origin("https://app.example.com"), {alterHeader, modeOverrideDefault}}, false},
}

// filterSkipRoute is the route filterSkipCases play: a policy, nothing of its own about
// ext_proc.
const filterSkipRoute = "beside-broken"

// withFilterResponseSkip sets the ext_proc filter of c (c.extProc and c.hcm) to skip response
// headers; withCheckRoutes writes c.hcm into the bootstrap.
func withFilterResponseSkip(t *testing.T, c envoyConfig) {
	t.Helper()
	c.extProc.ProcessingMode.ResponseHeaderMode = extprocv3.ProcessingMode_SKIP
	for _, f := range c.hcm.GetHttpFilters() {
		if f.GetName() == extProcFilter {
			a, err := anypb.New(c.extProc)
			if err != nil {
				t.Fatal(err)
			}
			f.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}
		}
	}
}

// alterHeader on a request makes the recorder in front of cors-extproc change the server's
// reply to it (alterReply), to show how Envoy takes a reply the server never sends.
const alterHeader = "x-test-alter"

// modeOverrideDefault: the reply to request_headers carries a mode_override with every field
// left at DEFAULT.
const modeOverrideDefault = "mode-override-default"

// alterReply is the realenvoy.Recorder's Alter of every test, real Envoy or simulated.
func alterReply(s *realenvoy.Stream, res *procv3.ProcessingResponse) {
	for _, hv := range s.Requests[0].GetRequestHeaders().GetHeaders().GetHeaders() {
		if hv.GetKey() == alterHeader && string(hv.GetRawValue()) == modeOverrideDefault && res.GetRequestHeaders() != nil {
			res.ModeOverride = &extprocv3.ProcessingMode{}
		}
	}
}
