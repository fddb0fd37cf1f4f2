package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cors-extproc/cors-extproc/internal/kongimport"
)

// formParams collects repeated --form values.
type formParams []string

func (f *formParams) String() string     { return strings.Join(*f, " ") }
func (f *formParams) Set(v string) error { *f = append(*f, v); return nil }

const importKongUsage = `usage: cors-extproc import-kong [flags] FILE
       cors-extproc import-kong [flags] --form KEY=VALUE [--form KEY=VALUE ...]

Converts Kong CORS plugins to cors-extproc policies. FILE is a Kong declarative file (decK or
"kong config db_export", YAML or JSON; "-" reads stdin). The report goes to stdout; with
--output-policies the named-policy file (the server's --policies) is written too. With --form,
one plugin given as Kong admin API form parameters is printed as a policy.
Exit status 1 when any plugin could not be migrated (after writing everything else).
`

// runImportKong is `cors-extproc import-kong`: the whole logic is in internal/kongimport; this
// reads the input, writes the outputs and turns errors into the exit status.
func runImportKong(_ context.Context, args []string, stdout, _ io.Writer) error {
	var (
		form           formParams
		outputPolicies string
		format         string
		opts           kongimport.Options
	)
	fs := newFlagSet("cors-extproc import-kong", importKongUsage)
	fs.Var(&form, "form", "one Kong admin API form parameter, e.g. config.origins=https://a.example (repeatable); imports one plugin instead of a FILE")
	fs.StringVar(&outputPolicies, "output-policies", "", "write the named-policy file (the server's --policies format) here")
	fs.StringVar(&format, "format", "text", "report format: text, yaml or json")
	fs.BoolVar(&opts.KongCompatible, "kong-compatible", false, "write preflight_status: 200 and, where a plugin sets no methods, Kong's default methods, to answer preflights as Kong does")
	if err := fs.parse(args); err != nil {
		fs.printHelp(stdout, false)
		return nil
	}
	files := fs.args

	if format != "text" && format != "yaml" && format != "json" {
		fs.problem("format", "want text, yaml or json")
	}
	switch {
	case len(form) > 0 && len(files) > 0:
		fs.addProblem(errors.New("import-kong: give a FILE or --form parameters, not both"))
	case len(form) > 0 && outputPolicies != "":
		fs.addProblem(errors.New("--output-policies: not with --form, which prints one policy"))
	case len(form) == 0 && len(files) != 1:
		fs.addProblem(fmt.Errorf("import-kong: want one FILE (or --form parameters), got %d", len(files)))
	}
	if err := fs.err(); err != nil {
		return err
	}

	if len(form) > 0 {
		report := kongimport.Form(form, opts)
		if err := writeReport(stdout, format, report, report.WriteText); err != nil {
			return err
		}
		if n := len(report.Errors); n > 0 {
			return fmt.Errorf("import-kong: the plugin could not be migrated: %s", pluralErrors(n))
		}
		return nil
	}

	data, err := readInput(files[0])
	if err != nil {
		return err
	}
	report, err := kongimport.File(data, opts)
	if err != nil {
		return fmt.Errorf("import-kong %s: %w", files[0], err)
	}
	if outputPolicies != "" {
		out, err := report.PolicyFile()
		if err != nil {
			return err
		}
		if err := os.WriteFile(outputPolicies, out, 0o644); err != nil {
			return fmt.Errorf("--output-policies: %w", err)
		}
	}
	if err := writeReport(stdout, format, report, report.WriteText); err != nil {
		return err
	}
	if n := len(report.Errors); n > 0 {
		return fmt.Errorf("import-kong %s: %s (the other policies were written)", files[0], pluralErrors(n))
	}
	return nil
}

func pluralErrors(n int) string {
	if n == 1 {
		return "1 error"
	}
	return fmt.Sprintf("%d errors", n)
}

func readInput(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(name)
}

func writeReport(w io.Writer, format string, report any, text func(io.Writer) error) error {
	switch format {
	case "yaml":
		return kongimport.WriteYAML(w, report)
	case "json":
		return kongimport.WriteJSON(w, report)
	}
	return text(w)
}
