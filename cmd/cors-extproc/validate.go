package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
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

// runValidate checks every policy that the given Envoy configuration and named-policy file hold,
// through every channel the server reads, before they are applied. It exits 1 on any error.
func runValidate(_ context.Context, args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("cors-extproc validate", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: cors-extproc validate [--policies FILE] [flags] [ENVOY-CONFIG ...]")
		flags.PrintDefaults()
	}
	policiesFile := flags.String("policies", "", "named-policy file (YAML: name → policy)")
	namespace := flags.String("metadata-namespace", "cors", "filter_metadata namespace holding a route's policy, as the server's flag")
	defaultName := flags.String("default-policy", "", "the server's --default-policy, for routes that name no policy")
	format := flags.String("format", "text", "output format: text or json")
	modeName := flags.String("mode", "two-phase", "the server's --mode: filter chains are checked against it")
	headersNS := flags.String("dynamic-metadata-namespace", "cors-extproc", "the server's --dynamic-metadata-namespace, which the header filters read")
	limits := policyLimitFlags(flags)
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	var errs []error
	if *format != "text" && *format != "json" {
		errs = append(errs, fmt.Errorf("--format %q: want text or json", *format))
	}
	mode, err := processor.ParseMode(*modeName)
	if err != nil {
		errs = append(errs, fmt.Errorf("--mode: %w", err))
	}
	if *policiesFile == "" && flags.NArg() == 0 {
		errs = append(errs, errors.New("nothing to validate: give --policies FILE and/or Envoy configuration files"))
	}
	if *defaultName != "" && *policiesFile == "" {
		errs = append(errs, fmt.Errorf("--default-policy %q: needs --policies", *defaultName))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	named, err := loadNamed(*policiesFile, *limits)
	if err != nil {
		return err
	}
	findings := namedFindings(named)
	if *defaultName != "" {
		if _, ok := named.policies[*defaultName]; !ok {
			findings = append(findings, finding{File: named.path, Kind: "policy", Name: *defaultName, Status: "error",
				Message: "--default-policy names a policy the file lacks"})
		}
	}
	resolver := &processor.Resolver{Namespace: *namespace, Policies: named.policies, Limits: *limits}
	for _, arg := range flags.Args() {
		files, err := configFiles(arg)
		if err != nil {
			findings = append(findings, finding{File: arg, Status: "error", Message: err.Error()})
		}
		for _, file := range files {
			findings = append(findings, fileFindings(resolver, file, *defaultName, file == arg)...)
			findings = append(findings, chainFindings(file, mode, *headersNS)...)
		}
	}

	failed := false
	for _, f := range findings {
		failed = failed || f.Status == "error"
	}
	if err := writeFindings(stdout, *format, findings); err != nil {
		return err
	}
	if failed {
		return errReported
	}
	return nil
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

// fileFindings reports each site of one Envoy configuration file. A file named on the command
// line that holds none is reported, as it was probably not meant; one found in a directory is
// not (a directory of manifests holds many other resources).
func fileFindings(r *processor.Resolver, file, defaultName string, named bool) []finding {
	data, err := os.ReadFile(file)
	if err != nil {
		return []finding{{File: file, Status: "error", Message: err.Error()}}
	}
	sites, err := envoyconfig.Read(file, data)
	var out []finding
	if err != nil {
		for _, e := range strings.Split(err.Error(), "\n") {
			out = append(out, finding{File: file, Status: "error", Message: e})
		}
	}
	if len(sites) == 0 && err == nil && named {
		out = append(out, finding{File: file, Status: "warning", Message: "no route, virtual host or annotated resource found"})
	}
	for _, s := range sites {
		res := resolveSite(r, s, defaultName)
		base := finding{File: s.File, Kind: s.Kind, Name: s.Name}
		out = append(out, siteFindings(base, res)...)
	}
	return out
}

// chainFindings reports each HTTP filter chain of one file that holds cors-extproc's ext_proc
// filter or its header filters: whether they match the server's mode (docs/envoy-extproc.md
// section 7). A file that cannot be read was reported by fileFindings.
func chainFindings(file string, mode processor.Mode, ns string) []finding {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	chains, _ := envoyconfig.ReadChains(file, data)
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

// siteFindings turns a site's resolution into report lines. A problem of an inherited policy is
// reported where it is written (the virtual host's line, the named-policy file), not again here.
func siteFindings(base finding, res siteResolution) []finding {
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
