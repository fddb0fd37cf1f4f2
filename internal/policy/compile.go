package policy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Policy is a compiled, immutable CORS policy, made by Compile, ParseNamed or Unusable (the zero
// Policy is not one). Its methods are safe for concurrent use. Every header value it can
// produce, other than an echoed request value, is computed by Compile.
type Policy struct {
	// err is non-nil for the stand-in of a policy that failed validation (section 10); no other
	// field is then used.
	err error

	// allowAll: origins unset, empty or exactly ["*"] (section 4.1).
	allowAll bool
	// star is the index of a "*" element: in a longer list it allows every present Origin
	// (section 4.4); with allowAll it is 0 for ["*"]. -1 when there is none.
	star int
	// single is the one literal element, normalized, when origins is exactly that (section
	// 4.3): the ACAO value whatever the Origin, and what a request Origin must equal, once
	// normalized, to be counted as allowed.
	single string
	// Literal elements by normalized text, to their first index: a slice when there are few, a
	// map when there are many so that a miss among thousands stays cheap.
	literals   []literal
	literalMap map[string]int
	// others are the wildcard and regex elements, in list order.
	others []matcher

	// origins are the valid elements in list order, kept for Explain.
	origins []element

	credentials       bool
	reportOnly        bool
	preflightContinue bool
	privateNetwork    bool
	allowOriginAbsent bool
	status            int
	methods           string // ACAM value; "" sends none
	headers           string // ACAH value; "" copies the request's ACRH
	exposed           string // ACEH value; "" sends none
	maxAge            string // ACMA value; "" sends none

	// The decision for a request without an Origin, the most common kind (same-origin and
	// server-to-server traffic), made once by finish; Decide returns a copy of it once finished
	// is set, doing no work at all.
	noOrigin RequestDecision
	finished bool
}

// finish computes the decisions that do not depend on the request.
func (p *Policy) finish() *Policy {
	p.noOrigin = p.Decide(&Request{})
	p.finished = true
	return p
}

type literal struct {
	norm  string
	index int
}

// matcher is a wildcard or regex element; pattern.re is nil for a wildcard.
type matcher struct {
	index    int
	wildcard wildcard
	pattern  pattern
}

func (m *matcher) match(raw string, o *originParts, parsed bool) bool {
	if m.pattern.re != nil {
		return m.pattern.match(raw, o, parsed)
	}
	return parsed && m.wildcard.match(o)
}

// mapThreshold is the number of literal elements from which they are looked up in a map rather
// than compared one by one.
const mapThreshold = 8

// Compile parses, validates and compiles a policy given as a generic map (a Struct's AsMap,
// decoded JSON or YAML). A `ref` field here is an error. On error the *Policy is nil and the
// error is an *InvalidError listing every problem; warnings are returned whatever the outcome.
func Compile(m map[string]any) (*Policy, []Warning, error) {
	return DefaultLimits.Compile(m)
}

// Limits bound what one policy may cost to compile and evaluate. Policies come from route
// metadata, which many people and tools write; a policy over a limit is invalid, so it grants
// nothing (section 10) instead of slowing every request of its route.
type Limits struct {
	// MaxOrigins bounds the elements of origins. Literals are looked up in a map, but every
	// wildcard and regex element is tried in turn.
	MaxOrigins int
	// MaxRegexInsts bounds one regex element's RE2 program, in instructions: matching costs
	// time in proportion to it (and to the Origin, at most 1024 bytes).
	MaxRegexInsts int
}

// DefaultLimits are generous for real policies: a few dozen origins, regexes of a few hundred
// instructions.
var DefaultLimits = Limits{MaxOrigins: 10000, MaxRegexInsts: 2000}

// Compile is the package's Compile under limits l.
func (l Limits) Compile(m map[string]any) (*Policy, []Warning, error) {
	p, pr := compile(m, l)
	if pr.errs != nil {
		return nil, pr.warns, &InvalidError{Problems: pr.errs}
	}
	return p, pr.warns, nil
}

func compile(m map[string]any, l Limits) (*Policy, problems) {
	pr := problems{limits: l}
	c := parseConfig(m, &pr)
	p := &Policy{
		star:              -1,
		origins:           c.origins,
		credentials:       c.credentials,
		reportOnly:        c.reportOnly,
		preflightContinue: c.continues,
		privateNetwork:    c.privateNet,
		allowOriginAbsent: c.allowAbsent,
		status:            c.status,
		methods:           strings.Join(c.methods, ","),
		headers:           strings.Join(c.headers, ","),
		exposed:           strings.Join(c.exposed, ","),
	}
	if c.hasMaxAge {
		p.maxAge = strconv.FormatUint(c.maxAge, 10)
	}
	p.compileOrigins(c.origins)
	p.finish()
	if c.credentials && (p.allowAll || p.star >= 0) {
		pr.warn(fieldCredentials, true, "every site gets credentialed reads: with all origins "+
			"allowed, the request's Origin is echoed in access-control-allow-origin")
	}
	if p.allowAll && p.star < 0 && pr.errs == nil {
		pr.warn(fieldOrigins, m[fieldOrigins], `no origins listed, so every origin is allowed; `+
			`write origins: ["*"] if that is meant, or list the origins`)
	}
	if c.credentials {
		for _, f := range [...]struct {
			field string
			items []string
			what  string
		}{{fieldMethods, c.methods, "a method"}, {fieldHeaders, c.headers, "a header"}, {fieldExposedHeaders, c.exposed, "a header"}} {
			if slices.Contains(f.items, "*") {
				pr.warn(f.field, "*", "a wildcard only without credentials: with credentials: true, "+
					"browsers read it as "+f.what+` named "*"; list the names instead`)
			}
		}
	}
	return p, pr
}

// element is one valid origins element, classified and compiled (section 3).
type element struct {
	index   int
	text    string
	kind    elementKind
	norm    string  // a literal's normalized text
	matcher matcher // a wildcard's or regex's
}

// checkOrigin classifies and compiles the non-empty origins element e, found at index, whose
// field path is path. It reports an invalid regex as an error, and an element that probably
// does not mean what its author meant as a warning.
func checkOrigin(path string, index int, e string, pr *problems) (element, bool) {
	el := element{index: index, text: e, kind: classify(e)}
	switch el.kind {
	case kindLiteral:
		norm, problem := NormalizeLiteral(e)
		if problem != "" {
			pr.fail(path, e, problem)
			return el, false
		}
		el.norm = norm
		if !strings.Contains(e, "//") && e != "null" {
			pr.warn(path, e, "has no scheme, so it never matches: browsers send "+
				"scheme://host[:port], e.g. "+strconv.Quote("https://"+e))
		}
	case kindWildcard:
		// Normalized like a literal: "https://*.Example.com:443" is "https://*.example.com".
		norm, problem := NormalizeLiteral(e)
		if problem != "" {
			pr.fail(path, e, problem)
			return el, false
		}
		el.matcher = matcher{index: index, wildcard: newWildcard(norm)}
	case kindRegex:
		if !strings.ContainsAny(e, regexSyntax) && hasUserInfoOrFragment(e) {
			norm, _ := NormalizeLiteral(normalizeOrigin(e))
			pr.fail(path, e, "has user information or a fragment, which an origin never has, so it never matches; write "+strconv.Quote(norm))
			return el, false
		}
		pat, err := compilePattern(e)
		if err != nil {
			pr.fail(path, e, msgRegex+err.Error())
			return el, false
		}
		if n := pat.insts; n > pr.limits.MaxRegexInsts {
			pr.fail(path, e, fmt.Sprintf("regex of %d RE2 instructions, over the limit of %d", n, pr.limits.MaxRegexInsts))
			return el, false
		}
		el.matcher = matcher{index: index, pattern: pat}
		if !strings.ContainsAny(e, regexSyntax) {
			pr.warn(path, e, accidentalRegex(e))
		} else if !pat.wholeOrigin {
			pr.warn(path, e, "has no \":\", so it is matched against the host alone and allows every "+
				"scheme and port, http:// included; match scheme://host[:port] to require one, e.g. "+
				strconv.Quote("^https://"+strings.TrimPrefix(e, "^")))
		}
	}
	return el, true
}

// compileOrigins arranges the origins elements for matching (sections 3 and 4).
func (p *Policy) compileOrigins(origins []element) {
	if len(origins) == 0 || len(origins) == 1 && origins[0].kind == kindStar {
		p.allowAll = true
		if len(origins) == 1 {
			p.star = 0
		}
		return
	}
	seen := make(map[string]bool)
	for _, el := range origins {
		switch el.kind {
		case kindStar:
			if p.star < 0 {
				p.star = el.index
			}
		case kindLiteral:
			if !seen[el.norm] {
				seen[el.norm] = true
				p.literals = append(p.literals, literal{norm: el.norm, index: el.index})
			}
		default:
			p.others = append(p.others, el.matcher)
		}
	}
	if len(origins) == 1 && origins[0].kind == kindLiteral {
		p.single = origins[0].norm
	}
	if len(p.literals) >= mapThreshold {
		p.literalMap = make(map[string]int, len(p.literals))
		for _, l := range p.literals {
			p.literalMap[l.norm] = l.index
		}
		p.literals = nil
	}
}

// regexSyntax are the bytes that make an element a regex on purpose; an element that is not a
// literal but has none of them is probably a literal with a typo (accidentalRegex).
const regexSyntax = `\+*?()|[]{}^$`

// hasUserInfoOrFragment reports whether e, read as an origin, has user information or a
// fragment: a "@" or "#" after its "//".
func hasUserInfoOrFragment(e string) bool {
	_, rest, ok := strings.Cut(e, "//")
	return ok && strings.ContainsAny(rest, "@#")
}

// accidentalRegex explains the warning for an element that has no regex syntax but is not a
// literal either, such as "http://my_site.test": it is matched as a regex.
func accidentalRegex(e string) string {
	var culprit string
	for i := 0; i < len(e); i++ {
		if !isLiteralByte(e[i]) {
			r, _ := utf8.DecodeRuneInString(e[i:])
			culprit = string(r)
			break
		}
	}
	msg := "treated as a regex, not a literal, because of " + strconv.Quote(culprit)
	if strings.Contains(e, ".") {
		msg += `, so each "." in it matches any character (write "\." to match a dot only)`
	}
	return msg
}

// ParseNamed reads the named-policy file: YAML (JSON is YAML), a flat map name → policy. Every
// error and warning carries the policy name (`<name>: origins[0] ...`); a ref inside this file
// is an error; an empty file is an empty set.
//
// A file that is not such a map gives a nil map and the error. Otherwise the map holds every
// name: a policy that failed validation is there as Unusable(its error), so that routes naming
// it are handled as section 10 says, and the returned *InvalidError lists the problems of all
// of them.
func ParseNamed(data []byte) (map[string]*Policy, []Warning, error) {
	return DefaultLimits.ParseNamed(data)
}

// ParseNamed is the package's ParseNamed under limits l.
func (l Limits) ParseNamed(data []byte) (map[string]*Policy, []Warning, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("named policies: %w", err)
	}
	names := make([]string, 0, len(doc))
	for name := range doc {
		names = append(names, name)
	}
	slices.Sort(names)
	out := make(map[string]*Policy, len(doc))
	var warns []Warning
	var errs []*FieldError
	for _, name := range names {
		m, ok := doc[name].(map[string]any)
		if !ok {
			fe := &FieldError{Policy: name, Value: doc[name], Message: "want a policy (a map of fields)"}
			errs = append(errs, fe)
			out[name] = Unusable(&InvalidError{Problems: []*FieldError{fe}})
			continue
		}
		p, pr := compile(m, l)
		for _, w := range pr.warns {
			w.Policy = name
			warns = append(warns, w)
		}
		if pr.errs != nil {
			for _, fe := range pr.errs {
				fe.Policy = name
			}
			errs = append(errs, pr.errs...)
			p = Unusable(&InvalidError{Problems: pr.errs})
		}
		out[name] = p
	}
	if errs != nil {
		return out, warns, &InvalidError{Problems: errs}
	}
	return out, warns, nil
}

// Unusable returns the policy that stands in for one that failed validation (section 10): no
// Origin → ActionPass; a preflight → ActionAnswer 403 with no headers; an actual request with an
// Origin → ActionDecorate whose decoration only removes ACAO. It grants nothing. A nil err is
// replaced by a generic one, so that Err always tells an unusable policy apart.
func Unusable(err error) *Policy {
	if err == nil {
		err = errors.New("unusable CORS policy")
	}
	return (&Policy{err: err}).finish()
}

// Err returns the validation error of an unusable policy, and nil for a usable one.
func (p *Policy) Err() error { return p.err }

// Element returns the origins element at index i as written in the policy (the one
// RequestDecision.Matched names), or "" when there is none.
func (p *Policy) Element(i int) string {
	for _, el := range p.origins {
		if el.index == i {
			return el.text
		}
	}
	return ""
}

// ReportOnly reports whether the policy is in report-only mode: its decisions are to be
// computed, counted and logged, but not applied, so that CORS can be rolled out on a live API
// without breaking it (in the spirit of Envoy's shadow_enabled).
func (p *Policy) ReportOnly() bool { return p.reportOnly }
