package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// flagSet is the command line of one command. Unlike the flag package alone it reports every
// bad flag (and, for the server, every bad environment variable) at once, each on one line
// naming the flag or variable, the value and the form expected, and never dumps the usage on
// an error: the usage is for --help.
type flagSet struct {
	*flag.FlagSet
	synopsis string // the usage lines printed above the flags by --help
	problems []error
	// from names how each flag set was given: "--name" on the command line, or the
	// environment variable's name; absent for a flag left at its default.
	from map[string]string
	args []string        // the positional arguments, wherever they stood among the flags
	bad  map[string]bool // flags whose value was refused: the checks that follow skip them
}

func newFlagSet(name, synopsis string) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), synopsis: synopsis, from: map[string]string{}, bad: map[string]bool{}}
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parse reads args; flags may follow positional arguments ("--" ends the flags). It returns
// flag.ErrHelp for -h or --help, and nil otherwise: the problems are kept for err.
func (fs *flagSet) parse(args []string) error {
	restore := fs.checkValues(true)
	defer restore()
	for len(args) > 0 {
		err := fs.Parse(args)
		rest := fs.Args()
		switch {
		case errors.Is(err, flag.ErrHelp):
			return flag.ErrHelp
		case err != nil:
			fs.problems = append(fs.problems, fs.syntaxProblem(err))
		case len(rest) > 0:
			ended := len(args) > len(rest) && args[len(args)-len(rest)-1] == "--"
			if ended {
				fs.args = append(fs.args, rest...)
				rest = nil
			} else {
				fs.args = append(fs.args, rest[0])
				rest = rest[1:]
			}
		}
		args = rest
	}
	fs.Visit(func(f *flag.Flag) { fs.from[f.Name] = dashed(f.Name) })
	return nil
}

// checkValues makes each flag's Set record a bad value as a problem (so that parsing goes on to
// the next flag) until the returned function restores the flags.
func (fs *flagSet) checkValues(dashes bool) (restore func()) {
	var wrapped []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		name := f.Name
		if dashes {
			name = dashed(name)
		}
		f.Value = &checkedValue{Value: f.Value, fs: fs, flag: f.Name, name: name}
		wrapped = append(wrapped, f)
	})
	return func() {
		for _, f := range wrapped {
			f.Value = f.Value.(*checkedValue).Value
		}
	}
}

// syntaxProblem rewrites the flag package's errors about the command line itself.
func (fs *flagSet) syntaxProblem(err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		name = strings.TrimLeft(name, "-")
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		if near := closest(name, names); near != "" {
			return fmt.Errorf("%s: no such flag; did you mean %s?", dashed(name), dashed(near))
		}
		return fmt.Errorf("%s: no such flag (--help lists them)", dashed(name))
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Errorf("%s: needs a value", dashed(strings.TrimLeft(name, "-")))
	}
	return err
}

// checkedValue is a flag's value during parsing.
type checkedValue struct {
	flag.Value
	fs   *flagSet
	flag string
	name string // "--name" or the environment variable
}

func (v *checkedValue) Set(s string) error {
	if err := v.Value.Set(s); err != nil {
		v.fs.bad[v.flag] = true
		v.fs.problems = append(v.fs.problems, fmt.Errorf("%s: %s", v.fs.given(v.name, s), expected(v.Value, err)))
	}
	return nil
}

// IsBoolFlag keeps a bool flag usable without a value.
func (v *checkedValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// expected says what form a flag's value takes, for the error about a value of another form.
func expected(v flag.Value, err error) string {
	g, _ := v.(flag.Getter)
	if g == nil {
		return err.Error()
	}
	switch g.Get().(type) {
	case time.Duration:
		return "want a duration such as 5s, 1m30s or 250ms"
	case int, int64:
		return "want a whole number"
	case uint, uint64:
		return "want a whole number, 0 or more"
	case bool:
		return "want true or false"
	}
	return err.Error()
}

// given renders how a value was given: `--name "value"`, or `VARIABLE="value"`.
func (fs *flagSet) given(how, value string) string {
	if strings.HasPrefix(how, "-") {
		return fmt.Sprintf("%s %q", how, value)
	}
	return fmt.Sprintf("%s=%q", how, value)
}

// problem records a problem with a flag's value, naming the flag or the variable that set it.
func (fs *flagSet) problem(name, format string, args ...any) {
	if fs.bad[name] {
		return
	}
	how, ok := fs.from[name]
	if !ok {
		how = dashed(name)
	}
	fs.problems = append(fs.problems, fmt.Errorf("%s: %s", fs.given(how, fs.Lookup(name).Value.String()), fmt.Sprintf(format, args...)))
}

// name is how a flag was given (the flag or its variable), for problems that involve another
// flag.
func (fs *flagSet) name(flagName string) string {
	if how, ok := fs.from[flagName]; ok {
		return how
	}
	return dashed(flagName)
}

// dashed writes a flag as the help does: -X and -H (curl's), --long-name.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// addProblem records a problem that names no single value.
func (fs *flagSet) addProblem(err error) { fs.problems = append(fs.problems, err) }

// err is every problem found, one a line.
func (fs *flagSet) err() error { return errors.Join(fs.problems...) }

// envVar is the environment variable that stands in for a server flag: --grpc-addr is
// CORS_EXTPROC_GRPC_ADDR.
func envVar(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseEnv sets each flag not given on the command line from its environment variable, when
// the variable is set, even to the empty string (which a flag may allow: an empty --admin-addr
// disables the admin server). A CORS_EXTPROC_ variable that stands for no flag is a problem,
// as a misspelt one would otherwise be silently ignored. flags without a variable (--version)
// are listed in except.
func (fs *flagSet) parseEnv(environ []string, except ...string) {
	known := map[string]*flag.Flag{}
	fs.VisitAll(func(f *flag.Flag) {
		if !slices.Contains(except, f.Name) {
			known[envVar(f.Name)] = f
		}
	})
	names := make([]string, 0, len(known))
	for name := range known {
		names = append(names, name)
	}
	slices.Sort(names)
	set := map[string]string{}
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) {
			continue
		}
		if _, ok := known[name]; !ok {
			if near := closest(name, names); near != "" {
				fs.addProblem(fmt.Errorf("%s: no such variable; did you mean %s?", name, near))
			} else {
				fs.addProblem(fmt.Errorf("%s: no such variable (--help lists them)", name))
			}
			continue
		}
		set[name] = value
	}
	restore := fs.checkValues(false)
	defer restore()
	for _, name := range names {
		f := known[name]
		value, ok := set[name]
		if !ok || fs.from[f.Name] != "" {
			continue
		}
		fs.from[f.Name] = name
		cv := f.Value.(*checkedValue)
		cv.name = name
		before := len(fs.problems)
		_ = cv.Set(value)
		if len(fs.problems) > before {
			// Back to the default, so that the checks that follow report only this problem.
			_ = cv.Value.Set(f.DefValue)
		}
	}
}

// closest returns what s probably meant: the one candidate it begins, or the candidate nearest
// to it in edit distance, if near enough; "" otherwise.
func closest(s string, candidates []string) string {
	var prefixed []string
	for _, c := range candidates {
		if len(s) >= 3 && strings.HasPrefix(strings.ToLower(c), strings.ToLower(s)) {
			prefixed = append(prefixed, c)
		}
	}
	if len(prefixed) == 1 {
		return prefixed[0]
	}
	best, bestDist := "", -1
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), strings.ToLower(c)); bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	if bestDist < 0 || bestDist > max(2, len(s)/3) {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// printHelp writes the synopsis and every flag: its value's kind, what it does, its default
// and, for the server, its environment variable.
func (fs *flagSet) printHelp(w io.Writer, withEnv bool, except ...string) {
	var b strings.Builder
	b.WriteString(fs.synopsis)
	b.WriteString("\nFlags:\n")
	fs.VisitAll(func(f *flag.Flag) {
		kind, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "  %s", dashed(f.Name))
		if kind != "" {
			fmt.Fprintf(&b, " %s", kind)
		}
		if withEnv && !slices.Contains(except, f.Name) {
			fmt.Fprintf(&b, "  (%s)", envVar(f.Name))
		}
		b.WriteString("\n")
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
			if kind == "string" {
				usage += fmt.Sprintf(" (default %q)", f.DefValue)
			} else {
				usage += fmt.Sprintf(" (default %s)", f.DefValue)
			}
		}
		for _, line := range wrap(usage, 92) {
			fmt.Fprintf(&b, "      %s\n", line)
		}
	})
	io.WriteString(w, b.String())
}

// wrap breaks text into lines of at most width bytes, at spaces.
func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		if line != "" && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	return append(lines, line)
}
