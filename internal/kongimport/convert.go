package kongimport

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/cors-extproc/cors-extproc/internal/policy"
)

// Fields is a policy as the importer writes it: the fields of semantics section 1 in their
// documented order, leaving out those equal to the default (Kong's and this service's defaults
// agree for all of them but methods and preflight_status).
type Fields struct {
	Origins []string `json:"origins,omitempty" yaml:"origins,omitempty"`
	// Methods is nil when unset; an empty list is Kong's `methods: []`: Kong then sends an
	// empty access-control-allow-methods and the policy sends none, which both allow only the
	// CORS-safelisted methods.
	Methods        *[]string `json:"methods,omitempty" yaml:"methods,omitempty"`
	Headers        []string  `json:"headers,omitempty" yaml:"headers,omitempty"`
	ExposedHeaders []string  `json:"exposed_headers,omitempty" yaml:"exposed_headers,omitempty"`
	Credentials    bool      `json:"credentials,omitempty" yaml:"credentials,omitempty"`
	MaxAge         *uint64   `json:"max_age,omitempty" yaml:"max_age,omitempty"`
	// PreflightContinue, PrivateNetwork: written only when true.
	PreflightContinue bool `json:"preflight_continue,omitempty" yaml:"preflight_continue,omitempty"`
	PrivateNetwork    bool `json:"private_network,omitempty" yaml:"private_network,omitempty"`
	// AllowOriginAbsent is written only when false (its default is true).
	AllowOriginAbsent *bool `json:"allow_origin_absent,omitempty" yaml:"allow_origin_absent,omitempty"`
	PreflightStatus   int   `json:"preflight_status,omitempty" yaml:"preflight_status,omitempty"`
}

// policyMap returns the policy as the generic map policy.Compile takes, through its JSON form, so
// that what is compiled is exactly what is written.
func (f Fields) policyMap() (map[string]any, error) {
	b, err := json.Marshal(f)
	if err != nil {
		return nil, err
	}
	return policy.ParseJSON(b)
}

// Options changes what the importer writes.
type Options struct {
	// KongCompatible writes `preflight_status: 200` and, where the plugin does not set methods,
	// Kong 3.x's default methods, so that preflights are answered as Kong answers them
	// (semantics sections 9.1 and 9.2) instead of warning about it.
	KongCompatible bool
}

// kongDefaultMethods is the default of `methods` in Kong's CORS schema since Kong 1.4 (commit
// "feat(cors) add OPTIONS, TRACE, and CONNECT to default allowed methods"), and the handler's
// fallback when methods is null.
var kongDefaultMethods = []string{"GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT"}

// kongFields are the config fields of Kong 3.11's CORS schema, and `origin`, the single origin
// of Kong 0.x that Kong 0.10 renamed `origins`.
var kongFields = map[string]bool{
	"origins": true, "origin": true, "methods": true, "headers": true, "exposed_headers": true,
	"max_age": true, "credentials": true, "private_network": true, "preflight_continue": true,
	"allow_origin_absent": true,
}

// conversion is the outcome of converting one plugin configuration.
type conversion struct {
	fields   Fields
	warnings []string
	errs     []string
}

func (c *conversion) warn(field string, value any, format string, args ...any) {
	c.warnings = append(c.warnings, problem(field, value, fmt.Sprintf(format, args...)))
}

func (c *conversion) fail(field string, value any, format string, args ...any) {
	c.errs = append(c.errs, problem(field, value, fmt.Sprintf(format, args...)))
}

// problem renders like policy.Warning does: `field "value": message`, the value left out when
// nil.
func problem(field string, value any, message string) string {
	var b strings.Builder
	b.WriteString(field)
	switch v := value.(type) {
	case nil:
	case string:
		b.WriteString(" " + strconv.Quote(v))
	case float64:
		b.WriteString(" " + strconv.FormatFloat(v, 'g', -1, 64))
	default:
		b.WriteString(fmt.Sprint(" ", v))
	}
	b.WriteString(": " + message)
	return b.String()
}

// convert turns a Kong CORS plugin config into a policy. A null field is an unset one, as in
// Kong's schema. Afterwards the policy is compiled: its warnings join the importer's, and its
// errors make the plugin one that cannot be migrated.
func convert(config map[string]any, opts Options) conversion {
	var c conversion
	var unknown []string
	for k := range config {
		if !kongFields[k] {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	for _, k := range unknown {
		c.fail(k, nil, "not a field of Kong's CORS plugin (origins, methods, headers, exposed_headers, "+
			"max_age, credentials, private_network, preflight_continue, allow_origin_absent)")
	}

	origins := config["origins"]
	if o := config["origin"]; o != nil {
		if origins != nil {
			c.fail("origin", o, "set together with origins: Kong 0.10 renamed origin to origins, write only one")
		} else {
			// Kong 0.10's own migration did the same: origins = { origin }.
			origins = []any{o}
		}
	}
	c.fields.Origins = c.stringList("origins", origins)
	for i, o := range c.fields.Origins {
		c.fields.Origins[i] = c.normalizeOrigin("origins["+strconv.Itoa(i)+"]", o)
		c.originDifferences("origins["+strconv.Itoa(i)+"]", o)
	}
	c.fields.Headers = c.tokenList("headers", config["headers"])
	c.fields.ExposedHeaders = c.tokenList("exposed_headers", config["exposed_headers"])
	c.fields.Credentials = c.boolean("credentials", config["credentials"], false)
	c.fields.PreflightContinue = c.boolean("preflight_continue", config["preflight_continue"], false)
	c.fields.PrivateNetwork = c.boolean("private_network", config["private_network"], false)
	if !c.boolean("allow_origin_absent", config["allow_origin_absent"], true) {
		c.fields.AllowOriginAbsent = new(false)
	}
	c.maxAge(config["max_age"])

	answers := !c.fields.PreflightContinue // preflights are answered here, not passed upstream
	if m := config["methods"]; m != nil {
		methods := c.tokenList("methods", m)
		if methods == nil {
			methods = []string{}
		}
		c.fields.Methods = &methods
	} else if answers && opts.KongCompatible {
		c.fields.Methods = new(slices.Clone(kongDefaultMethods))
	} else if answers {
		c.warn("methods", nil, "not set, so preflights allow GET,HEAD,PUT,PATCH,POST,DELETE here; "+
			"Kong's default also allows OPTIONS,TRACE,CONNECT (set methods, or use --kong-compatible)")
	}
	if answers && opts.KongCompatible {
		c.fields.PreflightStatus = 200
	} else if answers {
		c.warn("preflight_status", nil, "preflights are answered with 204 here, Kong answers 200; "+
			"browsers accept both, a client that checks for 200 does not (set preflight_status: 200, "+
			"or use --kong-compatible)")
	}
	c.compile()
	return c
}

// compile runs the policy validator on the converted policy: its warnings are the importer's
// too, and its errors mean the plugin cannot be migrated.
func (c *conversion) compile() {
	m, err := c.fields.policyMap()
	if err != nil {
		c.errs = append(c.errs, err.Error())
		return
	}
	_, warns, err := policy.Compile(m)
	for _, w := range warns {
		c.warnings = append(c.warnings, w.String())
	}
	var invalid *policy.InvalidError
	if errors.As(err, &invalid) {
		for _, p := range invalid.Problems {
			msg := p.Error()
			if strings.HasPrefix(p.Field, "origin") && strings.Contains(p.Message, "invalid regex") {
				msg += " (Kong's PCRE also has look-around, back-references, atomic groups and " +
					"possessive quantifiers; Go's RE2 has none of them: rewrite the regex)"
			}
			c.errs = append(c.errs, msg)
		}
	} else if err != nil {
		c.errs = append(c.errs, err.Error())
	}
}

// stringList reads a Kong array of strings; null is unset.
func (c *conversion) stringList(field string, v any) []string {
	if v == nil {
		return nil
	}
	list, ok := v.([]any)
	if !ok {
		c.fail(field, v, "want a list of strings")
		return nil
	}
	out := make([]string, 0, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			c.fail(field+"["+strconv.Itoa(i)+"]", e, "want a string")
			continue
		}
		out = append(out, s)
	}
	return out
}

// tokenList reads methods, headers or exposed_headers. Kong joins the elements with "," into
// the header value, so an element "Content-Type, X-Token" (which Kong accepts as one string)
// means two names: each element is split at commas and trimmed, which sends the same list.
func (c *conversion) tokenList(field string, v any) []string {
	var out []string
	for _, e := range c.stringList(field, v) {
		for item := range strings.SplitSeq(e, ",") {
			if item = strings.Trim(item, " \t"); item != "" {
				out = append(out, item)
			}
		}
	}
	return out
}

func (c *conversion) boolean(field string, v any, def bool) bool {
	if v == nil {
		return def
	}
	b, ok := v.(bool)
	if !ok {
		c.fail(field, v, "want true or false")
		return def
	}
	return b
}

// maxAge reads Kong's max_age, a `number` in its schema: fractions and negative values pass
// Kong's validation. The handler sends tostring(max_age), e.g. "600.5", which is not the
// delta-seconds the Fetch standard's Access-Control-Max-Age grammar wants. Here max_age is a
// whole number of seconds: a fraction is rounded down (the nearest whole number that never
// caches longer than asked), with a warning; a negative value has no counterpart and is an
// error.
func (c *conversion) maxAge(v any) {
	var f float64
	switch n := v.(type) {
	case nil:
		return
	case int:
		f = float64(n)
	case int64:
		f = float64(n)
	case uint64:
		f = float64(n)
	case float64:
		f = n
	default:
		c.fail("max_age", v, "want a number of seconds")
		return
	}
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0) || f >= 1<<53:
		c.fail("max_age", v, "want a number of seconds")
	case f < 0:
		c.fail("max_age", f, "negative: Kong sends it as it is, a policy here needs a non-negative whole number of seconds (remove it, or write 0 to disable preflight caching)")
	default:
		whole := uint64(f)
		if float64(whole) != f {
			c.warn("max_age", f, "Kong sends the fraction as it is (%q), which browsers need not accept as a number of seconds; written as %d, rounded down",
				strconv.FormatFloat(f, 'f', -1, 64), whole)
		}
		c.fields.MaxAge = &whole
	}
}

// normalizeOrigin returns a literal or wildcard origins element as the policy validator wants
// it, normalized (docs/cors-semantics.md section 3): a path or trailing slash dropped, scheme and
// host lower-cased, a default port dropped. Each change is reported: Kong sent a single literal
// as written, which browsers refuse unless it is exactly scheme://host[:port], and compared
// literals in a list without lower-casing them.
func (c *conversion) normalizeOrigin(field, e string) string {
	if !(allLiteral(e) || isIPv6Origin(e) || isWildcardOrigin(e)) {
		return e
	}
	norm, _ := policy.NormalizeLiteral(e)
	if norm == e || !strings.Contains(norm, "//") || strings.HasSuffix(norm, "//") {
		return e
	}
	c.warn(field, e, "written as %q: an origin is scheme://host[:port], lower-case, without a path "+
		"or default port; Kong sent this element as written where it was the only one (browsers "+
		"refuse such an access-control-allow-origin) and compared it as written in a list", norm)
	return norm
}

// originDifferences warns about an origins element that matches differently here than in
// Kong's handler, which treats every element with a character outside [A-Za-z0-9.:/-] as a
// PCRE regex, anchored with the "a" flag and a "$" appended to the element.
func (c *conversion) originDifferences(field, e string) {
	switch {
	case isIPv6Origin(e):
		c.warn(field, e, "an IPv6 origin: Kong reads it as a regex in which \"[…]\" is a character "+
			"class, and drops the brackets from the request's host, so it never allowed this origin; "+
			"here it is a literal that matches it")
	case isWildcardOrigin(e):
		c.warn(field, e, "a wildcard subdomain here: it allows every subdomain of %s; Kong reads it "+
			"as a regex in which \"/*\" repeats the slash, so it allowed none of them",
			wildcardDomain(e))
	case isRegexOrigin(e) && topLevelAlternation(e):
		c.warn(field, e, "a regex with top-level alternation: Kong anchors only its last "+
			"alternative at the end, so each earlier one also allowed every origin that merely "+
			"starts with it (with \"foo\\.test|bar\\.test\", \"foo.test.evil.test\"); here the whole "+
			"regex must match the origin")
	}
}

// isLiteralOriginByte is Kong's test for a literal element, `^[A-Za-z0-9.:/-]+$`, byte by
// byte; the policy package uses the same set (semantics section 3.2).
func isLiteralOriginByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == ':' || c == '/' || c == '-'
}

func allLiteral(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isLiteralOriginByte(s[i]) {
			return false
		}
	}
	return true
}

// isRegexOrigin reports whether Kong, and this service (apart from the IPv6 and wildcard forms
// checked before it), read e as a regex.
func isRegexOrigin(e string) bool { return e != "*" && !allLiteral(e) }

// schemeEnd returns the index just past "scheme://" when e starts with a plausible scheme
// followed by "://" and then the byte next, or -1.
func schemeEnd(e string, next byte) int {
	i := strings.Index(e, "://")
	if i <= 0 || i+3 >= len(e) || e[i+3] != next {
		return -1
	}
	for j := 0; j < i; j++ {
		if c := e[j]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '+' || c == '-' || c == '.') {
			return -1
		}
	}
	return i + 3
}

// isIPv6Origin reports whether e is scheme://[addr] or scheme://[addr]:port, the form the
// policy package takes as an IPv6 literal (semantics section 3.2).
func isIPv6Origin(e string) bool {
	start := schemeEnd(e, '[')
	if start < 0 {
		return false
	}
	addr, rest, ok := strings.Cut(e[start+1:], "]")
	if !ok || addr == "" || strings.Trim(addr, "0123456789abcdefABCDEF:.") != "" {
		return false
	}
	port, hasPort := strings.CutPrefix(rest, ":")
	return rest == "" || hasPort && strings.Trim(port, "0123456789") == ""
}

// isWildcardOrigin reports whether e is scheme://*.domain with a literal domain, a wildcard
// subdomain here (semantics section 3.3).
func isWildcardOrigin(e string) bool {
	start := schemeEnd(e, '*')
	if start < 0 || !strings.HasPrefix(e[start:], "*.") {
		return false
	}
	rest := e[start+2:]
	return rest != "" && rest[0] != ':' && rest[0] != '/' && rest[0] != '.' && allLiteral(rest)
}

// wildcardDomain is the domain of a wildcard element, without port or path.
func wildcardDomain(e string) string {
	rest := e[schemeEnd(e, '*')+2:]
	if i := strings.IndexAny(rest, ":/"); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// topLevelAlternation reports whether the regex e has a "|" outside every group and character
// class: the case where Kong's appended "$" anchors only the last alternative.
func topLevelAlternation(e string) bool {
	depth := 0
	for i := 0; i < len(e); i++ {
		switch e[i] {
		case '\\':
			i++
		case '[':
			i = classEnd(e, i)
		case '(':
			depth++
		case ')':
			depth--
		case '|':
			if depth == 0 {
				return true
			}
		}
	}
	return false
}

// classEnd returns the index of the "]" closing the character class that opens at i; a "]"
// first in the class (after an optional "^") is a literal one.
func classEnd(e string, i int) int {
	j := i + 1
	if j < len(e) && e[j] == '^' {
		j++
	}
	if j < len(e) && e[j] == ']' {
		j++
	}
	for ; j < len(e); j++ {
		switch e[j] {
		case '\\':
			j++
		case ']':
			return j
		}
	}
	return len(e)
}
