package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cors-extproc/cors-extproc/internal/envoyconfig"
	"github.com/cors-extproc/cors-extproc/internal/policy"
	"github.com/cors-extproc/cors-extproc/internal/processor"
)

// finding is one line of validate's report.
type finding struct {
	File    string `json:"file"`
	Kind    string `json:"kind"` // route, virtual host, HTTPRoute, Gateway, policy
	Name    string `json:"name"`
	Status  string `json:"status"` // ok, error, warning
	Message string `json:"message"`
}

const validateSynopsis = `usage: cors-extproc validate [flags] [ENVOY-CONFIG ...]

Checks every policy that Envoy configuration, Kubernetes manifests and a named-policy file hold,
through every channel the server reads, with the server's own code. ENVOY-CONFIG is a file, a
directory (every YAML and JSON file under it) or "-" for standard input, e.g.
  kubectl kustomize deploy/k8s/base | cors-extproc validate -
In rendered manifests the named-policy file of a cors-extproc Deployment (the ConfigMap key its
--policies path lies in) is found and used when --policies is not given.
Exit status 1 on any error, and with --strict on any warning.
`

// runValidate checks every policy that the given Envoy configuration and named-policy file hold,
// through every channel the server reads, before they are applied. It exits 1 on any error.
func runValidate(_ context.Context, args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("cors-extproc validate", validateSynopsis)
	policiesFile := fs.String("policies", "", "named-policy file (YAML: name → policy), as the server's flag")
	namespace := fs.String("metadata-namespace", "cors", "filter_metadata namespace holding a route's policy, as the server's flag")
	defaultName := fs.String("default-policy", "", "the server's --default-policy, for routes that name no policy")
	format := fs.String("format", "text", "output format: text or json")
	strict := fs.Bool("strict", false, "warnings fail too (exit status 1)")
	filterName := fs.String("filter-name", envoyconfig.DefaultExtProcFilter, "name of the ext_proc filter in Envoy's filter chain, under which routes set its per-route configuration")
	modeName := fs.String("mode", "two-phase", "the server's --mode: filter chains are checked against it")
	headersNS := fs.String("dynamic-metadata-namespace", "cors-extproc", "the server's --dynamic-metadata-namespace, which the header filters read")
	limits := policyLimitFlags(fs.FlagSet)
	maxSourceBytes := fs.Int("max-policy-bytes", processor.DefaultLimits.MaxSourceBytes, "as the server's flag: longest policy source (x-cors-policy value, route or virtual-host metadata text on one line) parsed")
	if err := fs.parse(args); err != nil {
		fs.printHelp(stdout, false)
		return nil
	}
	if *format != "text" && *format != "json" {
		fs.problem("format", "want text or json")
	}
	mode, err := processor.ParseMode(*modeName)
	if err != nil {
		fs.problem("mode", "%v", err)
	}
	if *policiesFile == "" && len(fs.args) == 0 {
		fs.addProblem(errors.New("nothing to validate: give --policies FILE and/or Envoy configuration files"))
	}
	if *defaultName != "" && *policiesFile == "" && len(fs.args) == 0 {
		fs.problem("default-policy", "needs --policies")
	}
	if *maxSourceBytes <= 0 {
		fs.problem("max-policy-bytes", "must be positive")
	}
	if *filterName == "" {
		fs.problem("filter-name", "must not be empty")
	}
	if err := fs.err(); err != nil {
		return err
	}

	var (
		findings []finding
		inputs   []input
	)
	for _, arg := range fs.args {
		in, err := readInputs(arg)
		if err != nil {
			findings = append(findings, finding{File: arg, Status: "error", Message: err.Error()})
		}
		inputs = append(inputs, in...)
	}
	named, err := loadNamed(*policiesFile, *limits)
	if err != nil {
		return err
	}
	// The named-policy files of rendered manifests; without --policies, the first is the set
	// refs resolve in.
	files, problems := manifestPolicyFiles(inputs, *limits)
	if *policiesFile != "" {
		findings = append(findings, namedFindings(named)...)
	} else if len(files) > 0 {
		named = files[0]
	}
	findings = append(findings, problems...)
	for _, file := range files {
		findings = append(findings, namedFindings(file)...)
	}
	if *defaultName != "" {
		switch _, ok := named.policies[*defaultName]; {
		case named.path == "":
			findings = append(findings, finding{Kind: "policy", Name: *defaultName, Status: "error",
				Message: "--default-policy: no named-policy file to find it in (give --policies FILE)"})
		case !ok:
			findings = append(findings, finding{File: named.path, Kind: "policy", Name: *defaultName, Status: "error",
				Message: "--default-policy names a policy the file lacks"})
		}
	}
	check := siteCheck{
		resolver:       &processor.Resolver{Namespace: *namespace, Policies: named.policies, Limits: *limits},
		limits:         processor.Limits{MaxSourceBytes: *maxSourceBytes},
		defaultName:    *defaultName,
		noNamedFile:    named.path == "",
		envoyconfigOpt: envoyconfig.Options{ExtProcFilter: *filterName},
	}
	for _, in := range inputs {
		findings = append(findings, check.fileFindings(in)...)
		findings = append(findings, chainFindings(in, mode, *headersNS)...)
	}

	failed := false
	for _, f := range findings {
		failed = failed || f.Status == "error" || (*strict && f.Status == "warning")
	}
	if err := writeFindings(stdout, *format, findings); err != nil {
		return err
	}
	if failed {
		return errReported
	}
	return nil
}

// input is one file of configuration to check.
type input struct {
	name        string
	data        []byte
	err         error
	named       bool // named on the command line (not found in a directory)
	policyFiles int  // named-policy files of cors-extproc workloads found in it
}

// readInputs reads a command-line argument: "-" is standard input, a file is itself, a
// directory is every YAML and JSON file under it, in lexical order.
func readInputs(arg string) ([]input, error) {
	if arg == "-" {
		data, err := io.ReadAll(os.Stdin)
		return []input{{name: "-", data: data, err: err, named: true}}, nil
	}
	files, err := configFiles(arg)
	var out []input
	for _, file := range files {
		data, readErr := os.ReadFile(file)
		out = append(out, input{name: file, data: data, err: readErr, named: file == arg})
	}
	return out, err
}

// manifestPolicyFiles finds the named-policy files that the cors-extproc workloads of rendered
// manifests mount, noting in each input how many it holds.
func manifestPolicyFiles(inputs []input, limits policy.Limits) ([]namedFile, []finding) {
	var (
		out      []namedFile
		problems []finding
	)
	for i := range inputs {
		in := &inputs[i]
		if in.err != nil {
			continue
		}
		files, err := envoyconfig.PolicyFiles(in.name, in.data)
		if err != nil {
			continue // reported with the file's sites
		}
		in.policyFiles = len(files)
		for _, f := range files {
			named, err := parseNamed(f.Where, f.Data, limits)
			if err != nil {
				problems = append(problems, finding{File: f.Where, Status: "error", Message: err.Error()})
				continue
			}
			out = append(out, named)
		}
	}
	return out, problems
}

// namedFindings reports each policy of the named-policy file.
func namedFindings(f namedFile) []finding {
	if f.path == "" {
		return nil
	}
	byName := map[string][]finding{}
	for _, p := range f.problems {
		byName[p.Policy] = append(byName[p.Policy], finding{Status: "error", Message: problemText(p)})
	}
	for _, w := range f.warnings {
		byName[w.Policy] = append(byName[w.Policy], finding{Status: "warning", Message: warningText(w)})
	}
	names := make([]string, 0, len(f.policies))
	for name := range f.policies {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []finding
	for _, name := range names {
		lines := byName[name]
		if len(lines) == 0 || f.policies[name].Err() == nil {
			lines = append([]finding{{Status: "ok", Message: "valid"}}, lines...)
		}
		for _, l := range lines {
			l.File, l.Kind, l.Name = f.path, "policy", name
			out = append(out, l)
		}
	}
	return out
}

// configFiles expands a command-line argument: a file is itself, a directory is every YAML and
// JSON file under it, in lexical order.
func configFiles(arg string) ([]string, error) {
	info, err := os.Stat(arg)
	if err != nil || !info.IsDir() {
		return []string{arg}, nil
	}
	var files []string
	err = filepath.WalkDir(arg, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml", ".json":
			if !d.IsDir() {
				files = append(files, path)
			}
		}
		return nil
	})
	return files, err
}

// siteCheck is how validate judges each site: as the server configured by its flags would.
type siteCheck struct {
	resolver       *processor.Resolver
	limits         processor.Limits
	defaultName    string
	noNamedFile    bool // neither --policies nor a policy ConfigMap: refs cannot be checked
	envoyconfigOpt envoyconfig.Options
}

// fileFindings reports each site of one input. A file named on the command line that holds
// none is reported, as it was probably not meant; one found in a directory is not (a directory
// of manifests holds many other resources).
func (c siteCheck) fileFindings(in input) []finding {
	if in.err != nil {
		return []finding{{File: in.name, Status: "error", Message: in.err.Error()}}
	}
	sites, err := envoyconfig.Read(in.name, in.data, c.envoyconfigOpt)
	var out []finding
	if err != nil {
		for _, e := range strings.Split(err.Error(), "\n") {
			out = append(out, finding{File: in.name, Status: "error", Message: e})
		}
	}
	if len(sites) == 0 && err == nil && in.named && in.policyFiles == 0 {
		out = append(out, finding{File: in.name, Status: "warning", Message: "no route, virtual host or annotated resource found"})
	}
	for _, s := range sites {
		res := resolveSite(c.resolver, s, c.defaultName)
		if err := c.oversized(s); err != nil {
			res.Resolution = processor.Resolution{Found: true, Policy: policy.Unusable(err), Where: res.Where}
		}
		base := finding{File: s.File, Kind: s.Kind, Name: s.Name}
		out = append(out, siteFindings(base, res, c.noNamedFile)...)
	}
	return out
}

// chainFindings reports each HTTP filter chain of one file that holds cors-extproc's ext_proc
// filter or its header filters: whether they match the server's mode (docs/envoy-extproc.md
// section 7). An input that cannot be read was reported by fileFindings.
func chainFindings(in input, mode processor.Mode, ns string) []finding {
	if in.err != nil {
		return nil
	}
	file := in.name
	chains, _ := envoyconfig.ReadChains(file, in.data)
	var out []finding
	for _, c := range chains {
		base := finding{File: file, Kind: "filter chain", Name: c.Name}
		errs, warnings := c.Check(mode == processor.ModeOneTrip, ns)
		for _, e := range errs {
			f := base
			f.Status, f.Message = "error", e
			out = append(out, f)
		}
		for _, w := range warnings {
			f := base
			f.Status, f.Message = "warning", w
			out = append(out, f)
		}
		if len(errs)+len(warnings) == 0 {
			base.Status, base.Message = "ok", "ext_proc and header filters fit --mode "+mode.String()
			out = append(out, base)
		}
	}
	return out
}

// oversized is the error of a site whose policy source is over --max-policy-bytes, as the server
// would find it: the x-cors-policy value, or the route's metadata text on one line.
func (c siteCheck) oversized(s *envoyconfig.Site) error {
	switch {
	case s.HasGRPCPolicy:
		return c.limits.SourceError("x-cors-policy", len(s.GRPCPolicy))
	case s.Metadata != nil:
		return c.limits.SourceError("metadata", processor.MetadataTextSize(s.Metadata))
	}
	return nil
}

// siteFindings turns a site's resolution into report lines. A problem of an inherited policy is
// reported where it is written (the virtual host's line, the named-policy file), not again here.
func siteFindings(base finding, res siteResolution, noNamedFile bool) []finding {
	line := func(status, msg string) finding {
		f := base
		f.Status, f.Message = status, msg
		return f
	}
	if !res.Found {
		return []finding{line("ok", res.source)}
	}
	describe := res.source
	if res.Name != "" {
		describe = fmt.Sprintf("policy %q via %s", res.Name, res.source)
	}
	var out []finding
	if err := res.Policy.Err(); err != nil {
		switch {
		case res.inherited:
			out = append(out, line("error", "the policy it inherits ("+describe+") is unusable"))
		case res.Name != "" && noNamedFile:
			out = append(out, line("error", fmt.Sprintf("%s cannot be checked: no named-policy file was given (--policies FILE)", describe)))
		case res.Name != "" && !strings.Contains(err.Error(), "is not in the named-policy file"):
			out = append(out, line("error", fmt.Sprintf("%s is unusable (see the named-policy file)", describe)))
		default:
			out = append(out, errorLines(line, err)...)
		}
	} else {
		out = append(out, line("ok", describe))
	}
	if !res.inherited {
		for _, w := range res.Warnings {
			out = append(out, line("warning", warningText(w)))
		}
	}
	return out
}

// errorLines gives each problem of a policy error its own line.
func errorLines(line func(status, msg string) finding, err error) []finding {
	var invalid *policy.InvalidError
	if errors.As(err, &invalid) {
		prefix := strings.TrimSuffix(err.Error(), invalid.Error())
		out := make([]finding, len(invalid.Problems))
		for i, p := range invalid.Problems {
			out[i] = line("error", prefix+problemText(p))
		}
		return out
	}
	return []finding{line("error", err.Error())}
}

// problemText renders a problem without its policy name, which the line already carries.
func problemText(p *policy.FieldError) string {
	q := *p
	q.Policy = ""
	return q.Error()
}

func warningText(w policy.Warning) string {
	w.Policy = ""
	return w.String()
}

func writeFindings(w io.Writer, format string, findings []finding) error {
	if format == "json" {
		var errorsN, warningsN int
		for _, f := range findings {
			switch f.Status {
			case "error":
				errorsN++
			case "warning":
				warningsN++
			}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Findings []finding `json:"findings"`
			Errors   int       `json:"errors"`
			Warnings int       `json:"warnings"`
		}{findings, errorsN, warningsN})
	}
	for _, f := range findings {
		where := f.File
		if f.Kind != "" {
			where += ": " + f.Kind + " " + f.Name
		}
		line := fmt.Sprintf("%s: %s: %s", where, strings.ToUpper(f.Status), f.Message)
		if f.Status == "ok" {
			line = fmt.Sprintf("%s: OK (%s)", where, f.Message)
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}
