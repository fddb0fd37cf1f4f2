package policy

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// FieldError is one validation problem: the field path, the offending value and what is wrong
// with it. Validation reports every problem at once (semantics section 1), in an InvalidError.
type FieldError struct {
	Policy  string // the policy's name in the named-policy file, "" elsewhere
	Field   string // path of the field, e.g. "max_age" or "origins[2]"; "" for a whole policy
	Value   any    // the value as decoded: string, float64, int, bool, nil (null), list or map
	Message string
}

// Error renders the problem as `field value: message`, the value quoted when it is a string,
// e.g. `origins[2] "https://(bad": invalid regex: missing closing )`.
func (e *FieldError) Error() string { return describe(e.Policy, e.Field, e.Value, e.Message) }

// InvalidError is the error of a policy (or named-policy file) that failed validation. It holds
// every problem found, in field order.
type InvalidError struct {
	Problems []*FieldError
}

// Error joins the problems with "; " so that the whole report fits one log line.
func (e *InvalidError) Error() string {
	s := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		s[i] = p.Error()
	}
	return strings.Join(s, "; ")
}

// Unwrap gives errors.As access to each FieldError.
func (e *InvalidError) Unwrap() []error {
	errs := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		errs[i] = p
	}
	return errs
}

// Warning is something valid but probably not what its author meant. Warnings never make a
// policy unusable; they are meant for logs and tooling.
type Warning struct {
	Policy  string // the policy's name in the named-policy file, "" elsewhere
	Field   string
	Value   any
	Message string
}

// String renders the warning like a FieldError: `field "value": message`.
func (w Warning) String() string { return describe(w.Policy, w.Field, w.Value, w.Message) }

func describe(policy, field string, value any, message string) string {
	var b strings.Builder
	if policy != "" {
		b.WriteString(policy)
		b.WriteString(": ")
	}
	if field != "" {
		b.WriteString(field)
		b.WriteByte(' ')
	}
	b.WriteString(render(value))
	b.WriteString(": ")
	b.WriteString(message)
	return b.String()
}

// maxShown bounds how much of a string value a message repeats: policy text comes from route
// metadata, and a megabyte-long value must not become a megabyte-long log line.
const maxShown = 120

// render writes a decoded value the way JSON would show it, strings quoted, lists and maps
// abbreviated.
func render(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		if len(v) > maxShown {
			return strconv.Quote(v[:maxShown]) + "…(" + strconv.Itoa(len(v)) + " bytes)"
		}
		return strconv.Quote(v)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case []any, []string:
		return "[…]"
	case map[string]any, map[any]any:
		return "{…}"
	}
	return fmt.Sprint(v)
}

// problems collects the errors and warnings of one policy, checked against limits.
type problems struct {
	limits Limits
	errs   []*FieldError
	warns  []Warning
}

func (p *problems) fail(field string, value any, message string) {
	p.errs = append(p.errs, &FieldError{Field: field, Value: value, Message: message})
}

func (p *problems) warn(field string, value any, message string) {
	p.warns = append(p.warns, Warning{Field: field, Value: value, Message: message})
}

// Messages of the validation errors (semantics section 1).
const (
	msgUnknownField = "unknown field"
	msgRefHere      = "not allowed here: a policy is given in full, it cannot refer to another"
	msgList         = "want a list of strings"
	msgString       = "want a string"
	msgListOrString = "want a list of strings or a comma-separated string"
	msgBool         = "want true or false"
	msgMaxAge       = "want a non-negative integer (seconds)"
	msgStatus       = "want 200 or 204"
	msgOriginBoth   = "not allowed together with origins"
	msgEmptyOrigin  = "empty origin"
	msgMethod       = "not an HTTP method token (RFC 9110)"
	msgHeader       = "not an HTTP header name token (RFC 9110)"
	msgRegex        = "invalid regex: "
)

// Field names, in the order validation reports them.
const (
	fieldOrigins           = "origins"
	fieldOrigin            = "origin"
	fieldMethods           = "methods"
	fieldHeaders           = "headers"
	fieldExposedHeaders    = "exposed_headers"
	fieldCredentials       = "credentials"
	fieldMaxAge            = "max_age"
	fieldPreflightContinue = "preflight_continue"
	fieldPrivateNetwork    = "private_network"
	fieldAllowOriginAbsent = "allow_origin_absent"
	fieldPreflightStatus   = "preflight_status"
	fieldReportOnly        = "report_only"
	fieldRef               = "ref"
)

var knownFields = map[string]bool{
	fieldOrigins: true, fieldOrigin: true, fieldMethods: true, fieldHeaders: true,
	fieldExposedHeaders: true, fieldCredentials: true, fieldMaxAge: true,
	fieldPreflightContinue: true, fieldPrivateNetwork: true, fieldAllowOriginAbsent: true,
	fieldPreflightStatus: true, fieldReportOnly: true,
}

// defaultMethods is the default method list (semantics sections 1 and 9.2).
var defaultMethods = []string{"GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"}

// config is a policy's fields, decoded and checked field by field, before compilation.
type config struct {
	// origins are the valid elements of `origins`, or the one of `origin`.
	origins     []element
	methods     []string // the default when the field is unset
	headers     []string
	exposed     []string
	credentials bool
	maxAge      uint64
	hasMaxAge   bool
	continues   bool // preflight_continue
	privateNet  bool
	allowAbsent bool
	status      int
	reportOnly  bool
}

// parseConfig decodes the fields of m, reporting every problem to pr. A field set to null is
// unset (section 1).
func parseConfig(m map[string]any, pr *problems) config {
	c := config{methods: defaultMethods, allowAbsent: true, status: 204}
	if v := m[fieldOrigins]; v != nil {
		c.origins = parseOrigins(v, pr)
	}
	if v := m[fieldOrigin]; v != nil {
		switch s, ok := v.(string); {
		case !ok:
			pr.fail(fieldOrigin, v, msgString)
		case m[fieldOrigins] != nil:
			pr.fail(fieldOrigin, v, msgOriginBoth)
		case s == "":
			pr.fail(fieldOrigin, v, msgEmptyOrigin)
		default:
			if el, ok := checkOrigin(fieldOrigin, 0, s, pr); ok {
				c.origins = []element{el}
			}
		}
	}
	if v := m[fieldMethods]; v != nil {
		c.methods = parseTokens(fieldMethods, v, msgMethod, pr)
	}
	if v := m[fieldHeaders]; v != nil {
		c.headers = parseTokens(fieldHeaders, v, msgHeader, pr)
	}
	if v := m[fieldExposedHeaders]; v != nil {
		c.exposed = parseTokens(fieldExposedHeaders, v, msgHeader, pr)
	}
	parseBool(m, fieldCredentials, &c.credentials, pr)
	if v := m[fieldMaxAge]; v != nil {
		if n, ok := wholeNumber(v); ok {
			c.maxAge, c.hasMaxAge = n, true
		} else {
			pr.fail(fieldMaxAge, v, msgMaxAge)
		}
	}
	parseBool(m, fieldPreflightContinue, &c.continues, pr)
	parseBool(m, fieldPrivateNetwork, &c.privateNet, pr)
	parseBool(m, fieldAllowOriginAbsent, &c.allowAbsent, pr)
	parseBool(m, fieldReportOnly, &c.reportOnly, pr)
	if v := m[fieldPreflightStatus]; v != nil {
		if n, ok := wholeNumber(v); ok && (n == 200 || n == 204) {
			c.status = int(n)
		} else {
			pr.fail(fieldPreflightStatus, v, msgStatus)
		}
	}
	if v, ok := m[fieldRef]; ok {
		pr.fail(fieldRef, v, msgRefHere)
	}
	var unknown []string
	for k := range m {
		if !knownFields[k] && k != fieldRef {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	for _, k := range unknown {
		pr.fail(k, m[k], msgUnknownField)
	}
	return c
}

func parseBool(m map[string]any, field string, dst *bool, pr *problems) {
	v := m[field]
	if v == nil {
		return
	}
	if b, ok := v.(bool); ok {
		*dst = b
	} else {
		pr.fail(field, v, msgBool)
	}
}

// parseOrigins decodes and checks the `origins` list, reporting every bad element; the valid
// ones are returned.
func parseOrigins(v any, pr *problems) []element {
	list, ok := stringsOf(v)
	if !ok {
		pr.fail(fieldOrigins, v, msgList)
		return nil
	}
	if len(list) > pr.limits.MaxOrigins {
		pr.fail(fieldOrigins, v, fmt.Sprintf("%d elements, over the limit of %d", len(list), pr.limits.MaxOrigins))
		return nil
	}
	out := make([]element, 0, len(list))
	for i, e := range list {
		path := indexed(fieldOrigins, i)
		switch s, ok := e.(string); {
		case !ok:
			pr.fail(path, e, msgString)
		case s == "":
			pr.fail(path, e, msgEmptyOrigin)
		default:
			if el, ok := checkOrigin(path, i, s, pr); ok {
				out = append(out, el)
			}
		}
	}
	return out
}

// stringsOf returns the elements of a decoded list: []any from JSON, YAML or a Struct, or
// []string from a Go caller.
func stringsOf(v any) ([]any, bool) {
	switch v := v.(type) {
	case []any:
		return v, true
	case []string:
		out := make([]any, len(v))
		for i, s := range v {
			out[i] = s
		}
		return out, true
	}
	return nil, false
}

// parseTokens decodes `methods`, `headers` or `exposed_headers`: a list of strings, or one
// comma-separated string whose items are trimmed of spaces and tabs (section 1). "" is the
// empty list. Each item must be an RFC 9110 token.
func parseTokens(field string, v any, msg string, pr *problems) []string {
	var items []any
	if s, ok := v.(string); ok {
		if s != "" {
			for _, item := range strings.Split(s, ",") {
				items = append(items, strings.Trim(item, " \t"))
			}
		}
	} else if items, ok = stringsOf(v); !ok {
		pr.fail(field, v, msgListOrString)
		return nil
	}
	out := make([]string, 0, len(items))
	for i, e := range items {
		switch s, ok := e.(string); {
		case !ok:
			pr.fail(indexed(field, i), e, msgString)
		case !isToken(s):
			pr.fail(indexed(field, i), e, msg)
		default:
			out = append(out, s)
		}
	}
	return out
}

func indexed(field string, i int) string { return field + "[" + strconv.Itoa(i) + "]" }

// isToken reports whether s is an RFC 9110 token: one or more tchar.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// wholeNumber accepts a non-negative integer however the decoder typed it: int (YAML), int64 or
// uint64 (YAML, large values), or an integral float64 (JSON, Struct).
func wholeNumber(v any) (uint64, bool) {
	switch n := v.(type) {
	case int:
		return uint64(n), n >= 0
	case int64:
		return uint64(n), n >= 0
	case uint64:
		return n, true
	case float64:
		if n >= 0 && n < math.MaxUint64 && n == math.Trunc(n) {
			return uint64(n), true
		}
	}
	return 0, false
}

// ParseJSON decodes JSON text into the generic map (numbers as float64, like a Struct); a
// non-object or malformed text is an error that names the problem.
func ParseJSON(data []byte) (map[string]any, error) {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("policy JSON: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("policy JSON: want an object, got %s", kindOf(v))
	}
	return m, nil
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "a list"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

// RefName reports whether m is a reference to a named policy: the single field `ref: NAME`.
// `ref` beside any other field, or a ref that is not a non-empty string, is an error; isRef is
// then true all the same, since m was meant as a reference.
func RefName(m map[string]any) (name string, isRef bool, err error) {
	v, ok := m[fieldRef]
	if !ok {
		return "", false, nil
	}
	var pr problems
	if s, ok := v.(string); !ok || s == "" {
		pr.fail(fieldRef, v, "want a non-empty policy name")
	} else {
		name = s
	}
	if len(m) > 1 {
		var others []string
		for k := range m {
			if k != fieldRef {
				others = append(others, k)
			}
		}
		slices.Sort(others)
		pr.fail(fieldRef, v, "must be the only field, found also "+strings.Join(others, ", "))
	}
	if pr.errs != nil {
		return "", true, &InvalidError{Problems: pr.errs}
	}
	return name, true, nil
}
