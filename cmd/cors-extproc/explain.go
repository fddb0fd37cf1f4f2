package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"golang.org/x/net/http/httpguts"

	"github.com/cors-extproc/cors-extproc/internal/envoyconfig"
	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
	"github.com/cors-extproc/cors-extproc/internal/processor"
)

// headerFlag collects repeated `-H 'Name: value'` flags, in order, names lower-cased as Envoy
// sends them.
type headerFlag []*corev3.HeaderValue

func (h *headerFlag) String() string { return "" }

// Set takes one header. A name that is not an HTTP token is refused: 'Origin https://a.example'
// (the colon forgotten) would otherwise be a header named "origin https", and the request
// explained as one without an Origin.
func (h *headerFlag) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	name = strings.ToLower(strings.TrimSpace(name))
	value = strings.TrimSpace(value)
	switch {
	case !ok || name == "":
		return fmt.Errorf("want 'Name: value'")
	case !httpguts.ValidHeaderFieldName(name):
		return fmt.Errorf("%q is not a header name; want 'Name: value'", name)
	case !httpguts.ValidHeaderFieldValue(value):
		return fmt.Errorf("the value holds a control character")
	}
	*h = append(*h, &corev3.HeaderValue{Key: name, RawValue: []byte(value)})
	return nil
}

const explainSynopsis = `usage: cors-extproc explain (--policy JSON | --ref NAME --policies FILE | --config FILE --route NAME)
                            [-X METHOD] [-H 'Name: value' ...]

Shows how the server treats one request under one policy: the policy found, each step of the
decision, what the server sends Envoy and what the client gets.
`

// runExplain answers "why was this request treated this way?": it resolves the policy as the
// server would, explains each step of the decision, and shows what the server would send and
// what the client would get. The decision and the replies come from the server's own code
// (policy.Explain calls Decide and Decorate; processor.Server.Preview builds the replies).
func runExplain(_ context.Context, args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("cors-extproc explain", explainSynopsis)
	var requestHeaders, upstreamHeaders headerFlag
	inline := fs.String("policy", "", "the policy, as JSON")
	ref := fs.String("ref", "", "a policy of the --policies file, by name")
	policiesFile := fs.String("policies", "", "named-policy file (YAML: name → policy)")
	config := fs.String("config", "", "Envoy configuration file holding the route (with --route)")
	route := fs.String("route", "", `the route in --config: "vhost/route", a route name, or a virtual host name`)
	filterName := fs.String("filter-name", envoyconfig.DefaultExtProcFilter, "name of the ext_proc filter in Envoy's filter chain, under which routes set its per-route configuration")
	namespace := fs.String("metadata-namespace", "cors", "filter_metadata namespace holding a route's policy, as the server's flag")
	defaultName := fs.String("default-policy", "", "the server's --default-policy")
	reportOnly := fs.Bool("report-only", false, "as the server's --report-only")
	limits := policyLimitFlags(fs.FlagSet)
	method := fs.String("X", "GET", "request method")
	fs.Var(&requestHeaders, "H", "request header 'Name: value' (repeatable), e.g. -H 'Origin: https://app.example.com'")
	fs.Var(&upstreamHeaders, "upstream-header", "a header of the upstream's response 'Name: value' (repeatable), e.g. Vary")
	upstreamStatus := fs.Int("upstream-status", 200, "the upstream's response status")
	if err := fs.parse(args); err != nil {
		fs.printHelp(stdout, false)
		return nil
	}

	sources := 0
	for _, set := range []bool{*inline != "", *ref != "", *config != ""} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		fs.addProblem(errors.New("give exactly one policy source: --policy JSON, --ref NAME or --config FILE --route NAME"))
	}
	if *ref != "" && *policiesFile == "" {
		fs.problem("ref", "needs --policies")
	}
	if (*config != "") != (*route != "") {
		fs.addProblem(errors.New("--config and --route go together"))
	}
	if *method == "" {
		fs.problem("X", "must not be empty")
	}
	if *filterName == "" {
		fs.problem("filter-name", "must not be empty")
	}
	if len(fs.args) > 0 {
		fs.addProblem(fmt.Errorf("unexpected arguments: %s", strings.Join(fs.args, " ")))
	}
	if err := fs.err(); err != nil {
		return err
	}

	named, err := loadNamed(*policiesFile, *limits)
	if err != nil {
		return err
	}
	resolver := &processor.Resolver{Namespace: *namespace, Policies: named.policies, Limits: *limits}
	var res siteResolution
	switch {
	case *inline != "":
		res = siteResolution{Resolution: resolver.JSON(*inline), source: "--policy"}
	case *ref != "":
		r := resolver.Named(*ref, "--ref")
		res = siteResolution{Resolution: r, source: "--ref"}
	default:
		site, err := findRoute(*config, *route, envoyconfig.Options{ExtProcFilter: *filterName})
		if err != nil {
			return err
		}
		res = resolveSite(resolver, site, *defaultName)
		res.source = fmt.Sprintf("%s %s in %s: %s", site.Kind, site.Name, *config, res.source)
	}

	srv, err := processor.New(processor.Options{Namespace: *namespace, Policies: named.policies, ReportOnly: *reportOnly,
		Limits: processor.Limits{Policy: *limits}})
	if err != nil {
		return err
	}
	request := append(headerFlag{{Key: ":method", RawValue: []byte(*method)}}, requestHeaders...)
	upstream := append(headerFlag{{Key: ":status", RawValue: []byte(strconv.Itoa(*upstreamStatus))}}, upstreamHeaders...)
	return writeExplanation(stdout, res, srv, request, upstream)
}

// findRoute finds the route (or virtual host) named in an Envoy configuration file.
func findRoute(file, name string, opts envoyconfig.Options) (*envoyconfig.Site, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	sites, err := envoyconfig.Read(file, data, opts)
	if err != nil {
		return nil, err
	}
	var found []*envoyconfig.Site
	for _, s := range sites {
		short := s.Name[strings.LastIndexByte(s.Name, '/')+1:]
		if s.Name == name || (s.Kind == envoyconfig.KindRoute && short == name) {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, fmt.Errorf("--route %q: no such route or virtual host in %s", name, file)
	}
	names := make([]string, len(found))
	for i, s := range found {
		names[i] = s.Kind + " " + s.Name
	}
	return nil, fmt.Errorf("--route %q: ambiguous in %s: %s", name, file, strings.Join(names, ", "))
}

func writeExplanation(w io.Writer, res siteResolution, srv *processor.Server, request, upstream headerFlag) error {
	var b strings.Builder
	describe := res.source
	if res.Name != "" {
		describe += fmt.Sprintf(" (named policy %q)", res.Name)
	}
	fmt.Fprintf(&b, "policy: %s\n", describe)
	fmt.Fprintf(&b, "request:\n")
	for _, h := range request {
		fmt.Fprintf(&b, "  %s: %s\n", h.GetKey(), h.GetRawValue())
	}
	if res.Policy == nil {
		fmt.Fprintf(&b, "result: not a CORS route: the request and its response pass untouched\n")
		writeClient(&b, fields(upstream))
		_, err := io.WriteString(w, b.String())
		return err
	}

	r := processor.ReadRequest(request)
	e := res.Policy.Explain(&r, processor.UpstreamVaryListsOrigin(upstream))
	fmt.Fprintf(&b, "steps (the sections are those of docs/cors-semantics.md):\n")
	for i, s := range e.Steps {
		fmt.Fprintf(&b, "  %d. %s\n", i+1, s)
	}
	requestReply, responseReply := srv.Preview(res.Policy, request, upstream)
	client := fields(upstream)
	var err error
	switch {
	case requestReply.GetImmediateResponse() != nil:
		ir := requestReply.GetImmediateResponse()
		fmt.Fprintf(&b, "result: cors-extproc answers at once; the upstream is not called\n")
		status := []envoyfilter.Header{{Key: ":status", Value: strconv.Itoa(int(ir.GetStatus().GetCode()))}}
		client, err = envoyfilter.ApplyMutation(status, ir.GetHeaders(), envoyfilter.ImmediatePhase)
	case responseReply == nil:
		fmt.Fprintf(&b, "result: the request goes upstream and its response comes back untouched (no response phase)\n")
	default:
		m := responseReply.GetResponseHeaders().GetResponse().GetHeaderMutation()
		fmt.Fprintf(&b, "result: the request goes upstream; cors-extproc changes its response headers:\n")
		for _, k := range m.GetRemoveHeaders() {
			fmt.Fprintf(&b, "  remove %s\n", k)
		}
		for _, o := range m.GetSetHeaders() {
			verb := "set"
			//lint:ignore SA1019 the deprecated append flag is the one ext_proc honours (contract section 4).
			if o.GetAppend().GetValue() {
				verb = "append"
			}
			fmt.Fprintf(&b, "  %s %s: %s\n", verb, o.GetHeader().GetKey(), o.GetHeader().GetRawValue())
		}
		if m == nil {
			fmt.Fprintf(&b, "  (none)\n")
		}
		client, err = envoyfilter.ApplyMutation(client, m, envoyfilter.ResponsePhase)
	}
	if err != nil {
		// The server broke the contract: Envoy would answer 500 (contract section 5).
		return fmt.Errorf("explain: the server's reply cannot be applied as Envoy would: %w", err)
	}
	writeClient(&b, client)
	_, err = io.WriteString(w, b.String())
	return err
}

// fields turns header flags into header fields, to which a mutation is applied as Envoy
// applies it (envoyfilter.ApplyMutation).
func fields(h headerFlag) []envoyfilter.Header {
	out := make([]envoyfilter.Header, len(h))
	for i, f := range h {
		out[i] = envoyfilter.Header{Key: f.GetKey(), Value: string(f.GetRawValue())}
	}
	return out
}

// writeClient writes the response as the client gets it.
func writeClient(b *strings.Builder, fields []envoyfilter.Header) {
	fmt.Fprintf(b, "the client gets:\n")
	for _, f := range fields {
		if f.Key == ":status" {
			fmt.Fprintf(b, "  status %s\n", f.Value)
		}
	}
	for _, f := range fields {
		if f.Key != ":status" {
			fmt.Fprintf(b, "  %s: %s\n", f.Key, f.Value)
		}
	}
}
