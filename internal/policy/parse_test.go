package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func compileJSON(t *testing.T, policy string) (*Policy, []Warning, error) {
	t.Helper()
	m, err := ParseJSON([]byte(policy))
	require.NoError(t, err)
	return Compile(m)
}

func TestValidationErrors(t *testing.T) {
	tests := []struct {
		policy string
		want   []string // every problem, in order
	}{
		{`{"origins": ["https://a.test", "https://b.test", "https://(bad"]}`,
			[]string{`origins[2] "https://(bad": invalid regex: missing closing )`}},
		{`{"origins": ["a)|(b", "[z-a]"]}`, []string{
			`origins[0] "a)|(b": invalid regex: unexpected )`,
			`origins[1] "[z-a]": invalid regex: invalid character class range`}},
		{`{"origins": ["*.example.com", "https://a.test"]}`,
			[]string{`origins[0] "*.example.com": invalid regex: missing argument to repetition operator`}},
		{`{"origins": ["(?=x)y", "https://a.test"]}`,
			[]string{`origins[0] "(?=x)y": invalid regex: invalid or unsupported Perl syntax`}},
		{`{"origins": ["https://a.test", ""]}`, []string{`origins[1] "": empty origin`}},
		{`{"origins": ["https://App.example.com/", "http://a.test:80/x", "https://*.B.test/", "https://"]}`, []string{
			`origins[0] "https://App.example.com/": has a path, which an origin never has: browsers send scheme://host[:port], so it never matches; write "https://app.example.com"`,
			`origins[1] "http://a.test:80/x": has a path, which an origin never has: browsers send scheme://host[:port], so it never matches; write "http://a.test"`,
			`origins[2] "https://*.B.test/": has a path, which an origin never has: browsers send scheme://host[:port], so it never matches; write "https://*.b.test"`,
			`origins[3] "https://": has no host, so it never matches: write scheme://host[:port]`}},
		{`{"origins": ["https://user@a.test", "https://a.test#top"]}`, []string{
			`origins[0] "https://user@a.test": has user information or a fragment, which an origin never has, so it never matches; write "https://a.test"`,
			`origins[1] "https://a.test#top": has user information or a fragment, which an origin never has, so it never matches; write "https://a.test"`}},
		{`{"origin": "https://a.test/"}`, []string{
			`origin "https://a.test/": has a path, which an origin never has: browsers send scheme://host[:port], so it never matches; write "https://a.test"`}},
		{`{"origins": ["https://a.test", 5, null, true]}`, []string{
			`origins[1] 5: want a string`, `origins[2] null: want a string`, `origins[3] true: want a string`}},
		{`{"origins": "https://a.test"}`, []string{`origins "https://a.test": want a list of strings`}},
		{`{"origin": "https://a.test", "origins": ["https://b.test"]}`,
			[]string{`origin "https://a.test": not allowed together with origins`}},
		{`{"origin": ""}`, []string{`origin "": empty origin`}},
		{`{"origin": ["https://a.test"]}`, []string{`origin […]: want a string`}},
		{`{"methods": ["GET", "BAD METHOD", "", 7]}`, []string{
			`methods[1] "BAD METHOD": not an HTTP method token (RFC 9110)`,
			`methods[2] "": not an HTTP method token (RFC 9110)`,
			`methods[3] 7: want a string`}},
		{`{"methods": "GET,,POST"}`, []string{`methods[1] "": not an HTTP method token (RFC 9110)`}},
		{`{"methods": {"a": 1}}`, []string{`methods {…}: want a list of strings or a comma-separated string`}},
		{`{"headers": ["x-ok", "x bad", "x:colon"]}`, []string{
			`headers[1] "x bad": not an HTTP header name token (RFC 9110)`,
			`headers[2] "x:colon": not an HTTP header name token (RFC 9110)`}},
		{`{"exposed_headers": "x-a, x(b)"}`,
			[]string{`exposed_headers[1] "x(b)": not an HTTP header name token (RFC 9110)`}},
		{`{"max_age": -1}`, []string{`max_age -1: want a non-negative integer (seconds)`}},
		{`{"max_age": 1.5}`, []string{`max_age 1.5: want a non-negative integer (seconds)`}},
		{`{"max_age": "600"}`, []string{`max_age "600": want a non-negative integer (seconds)`}},
		{`{"max_age": 1e300}`, []string{`max_age 1e+300: want a non-negative integer (seconds)`}},
		{`{"preflight_status": 201}`, []string{`preflight_status 201: want 200 or 204`}},
		{`{"preflight_status": "204"}`, []string{`preflight_status "204": want 200 or 204`}},
		{`{"credentials": "true", "preflight_continue": 1, "private_network": "yes", "allow_origin_absent": [], "report_only": "no"}`,
			[]string{
				`credentials "true": want true or false`,
				`preflight_continue 1: want true or false`,
				`private_network "yes": want true or false`,
				`allow_origin_absent […]: want true or false`,
				`report_only "no": want true or false`}},
		{`{"credential": true, "Origins": ["x"]}`, []string{
			`Origins […]: unknown field`, `credential true: unknown field`}},
		{`{"ref": "web"}`, []string{
			`ref "web": not allowed here: a policy is given in full, it cannot refer to another`}},
		{`{"origins": [` + strings.Repeat(`"(", `, 1) + `"x"], "bogus": "` + strings.Repeat("y", 200) + `"}`, []string{
			`origins[0] "(": invalid regex: missing closing )`,
			`bogus "` + strings.Repeat("y", 120) + `"…(200 bytes): unknown field`}},
		// Several problems at once, reported in field order.
		{`{"origins": ["https://(bad", ""], "methods": "GET, P OST", "max_age": -5, "preflight_status": 302, "x": null}`,
			[]string{
				`origins[0] "https://(bad": invalid regex: missing closing )`,
				`origins[1] "": empty origin`,
				`methods[1] "P OST": not an HTTP method token (RFC 9110)`,
				`max_age -5: want a non-negative integer (seconds)`,
				`preflight_status 302: want 200 or 204`,
				`x null: unknown field`}},
	}
	for _, tt := range tests {
		t.Run(tt.policy, func(t *testing.T) {
			p, _, err := compileJSON(t, tt.policy)
			assert.Nil(t, p)
			var inv *InvalidError
			require.ErrorAs(t, err, &inv)
			var got []string
			for _, fe := range inv.Problems {
				got = append(got, fe.Error())
			}
			assert.Equal(t, tt.want, got)
			assert.Equal(t, strings.Join(tt.want, "; "), err.Error())
			var fe *FieldError
			assert.ErrorAs(t, err, &fe)
		})
	}
}

func TestValidPolicies(t *testing.T) {
	tests := []string{
		`{}`,
		`{"origins": null, "origin": null, "methods": null, "headers": null, "exposed_headers": null,
		  "credentials": null, "max_age": null, "preflight_continue": null, "private_network": null,
		  "allow_origin_absent": null, "preflight_status": null, "report_only": null}`,
		`{"report_only": true}`,
		`{"origin": "https://a.test", "origins": null}`,
		`{"methods": "", "headers": "", "exposed_headers": ""}`,
		`{"methods": ["PURGE", "M-SEARCH", "get"], "headers": ["*"]}`,
		`{"origins": ["[\\w-_]+\\.test"]}`,
		`{"origins": ["foo\\$"]}`,
		`{"max_age": 0, "preflight_status": 200.0}`,
	}
	for _, policy := range tests {
		_, _, err := compileJSON(t, policy)
		assert.NoError(t, err, policy)
	}
}

func TestGoTypes(t *testing.T) {
	// What a Go caller or the YAML decoder hands over: int, int64, uint64, []string.
	for _, v := range []any{int(60), int64(60), uint64(60), float64(60)} {
		p, _, err := Compile(map[string]any{"max_age": v, "preflight_status": v, "methods": []string{"GET"}})
		require.Error(t, err)
		assert.Equal(t, `preflight_status 60: want 200 or 204`, err.Error())
		assert.Nil(t, p)
		p, _, err = Compile(map[string]any{"max_age": v, "origins": []string{"https://a.test", "https://b.test"}})
		require.NoError(t, err)
		assert.Equal(t, "60", p.maxAge)
	}
	_, _, err := Compile(map[string]any{"max_age": int64(-1), "preflight_status": int(204)})
	assert.EqualError(t, err, `max_age -1: want a non-negative integer (seconds)`)
}

// noOrigins is the warning of a policy that lists no origins, whose origins field is value.
func noOrigins(value string) string {
	return `origins ` + value + `: no origins listed, so every origin is allowed; write origins: ["*"] if that is meant, or list the origins`
}

func TestWarnings(t *testing.T) {
	tests := []struct {
		policy string
		want   []string
	}{
		{`{"credentials": true}`, []string{
			`credentials true: every site gets credentialed reads: with all origins allowed, ` +
				`the request's Origin is echoed in access-control-allow-origin`, noOrigins("null")}},
		{`{}`, []string{noOrigins("null")}},
		{`{"origins": []}`, []string{noOrigins("[…]")}},
		{`{"origins": ["*"]}`, nil},
		{`{"origins": ["[a-z]+\\.a\\.test", "^a\\.test$", "https://b\\.test", "c_d.test"]}`, []string{
			`origins[0] "[a-z]+\\.a\\.test": has no ":", so it is matched against the host alone and allows ` +
				`every scheme and port, http:// included; match scheme://host[:port] to require one, e.g. "^https://[a-z]+\\.a\\.test"`,
			`origins[1] "^a\\.test$": has no ":", so it is matched against the host alone and allows ` +
				`every scheme and port, http:// included; match scheme://host[:port] to require one, e.g. "^https://a\\.test$"`,
			`origins[3] "c_d.test": treated as a regex, not a literal, because of "_", ` +
				`so each "." in it matches any character (write "\." to match a dot only)`}},
		{`{"origins": ["https://a.test", "https://b.test"], "credentials": true, "methods": "GET,*", "headers": ["*"], "exposed_headers": "*"}`, []string{
			`methods "*": a wildcard only without credentials: with credentials: true, browsers read it as a method named "*"; list the names instead`,
			`headers "*": a wildcard only without credentials: with credentials: true, browsers read it as a header named "*"; list the names instead`,
			`exposed_headers "*": a wildcard only without credentials: with credentials: true, browsers read it as a header named "*"; list the names instead`}},
		{`{"origins": ["https://a.test", "https://b.test"], "methods": "GET,*", "headers": ["*"], "exposed_headers": "*"}`, nil},
		{`{"credentials": true, "origins": ["https://a.test", "*"]}`, []string{
			`credentials true: every site gets credentialed reads: with all origins allowed, ` +
				`the request's Origin is echoed in access-control-allow-origin`}},
		{`{"origins": ["example.com", "localhost:3000", "null", "https://a.test"]}`, []string{
			`origins[0] "example.com": has no scheme, so it never matches: browsers send ` +
				`scheme://host[:port], e.g. "https://example.com"`,
			`origins[1] "localhost:3000": has no scheme, so it never matches: browsers send ` +
				`scheme://host[:port], e.g. "https://localhost:3000"`}},
		{`{"origin": "example.com"}`, []string{
			`origin "example.com": has no scheme, so it never matches: browsers send ` +
				`scheme://host[:port], e.g. "https://example.com"`}},
		{`{"origins": ["http://my_site.test", "http://my_site:8080"]}`, []string{
			`origins[0] "http://my_site.test": treated as a regex, not a literal, because of "_", ` +
				`so each "." in it matches any character (write "\." to match a dot only)`,
			`origins[1] "http://my_site:8080": treated as a regex, not a literal, because of "_"`}},
		{`{"origins": ["https://a.test", "https://(a|b)\\.test", "https://*.c.test", "https://[::1]:8443"]}`, nil},
		{`{"credentials": true, "origins": ["https://a.test"]}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.policy, func(t *testing.T) {
			_, warns, err := compileJSON(t, tt.policy)
			require.NoError(t, err)
			var got []string
			for _, w := range warns {
				got = append(got, w.String())
			}
			assert.Equal(t, tt.want, got)
		})
	}
	// Warnings come back with errors too.
	_, warns, err := compileJSON(t, `{"credentials": true, "max_age": -1}`)
	assert.Error(t, err)
	assert.Len(t, warns, 1)
}

func TestParseJSON(t *testing.T) {
	m, err := ParseJSON([]byte(`{"max_age": 60, "origins": ["a"]}`))
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"max_age": float64(60), "origins": []any{"a"}}, m)

	tests := []struct{ text, want string }{
		{`[]`, `policy JSON: want an object, got a list`},
		{`null`, `policy JSON: want an object, got null`},
		{`"x"`, `policy JSON: want an object, got a string`},
		{`3`, `policy JSON: want an object, got a number`},
		{`{"a":`, `policy JSON: unexpected end of JSON input`},
		{`{} x`, `policy JSON: invalid character 'x' after top-level value`},
		{``, `policy JSON: unexpected end of JSON input`},
	}
	for _, tt := range tests {
		_, err := ParseJSON([]byte(tt.text))
		assert.EqualError(t, err, tt.want, tt.text)
	}
}

func TestRefName(t *testing.T) {
	tests := []struct {
		m     map[string]any
		name  string
		isRef bool
		err   string
	}{
		{map[string]any{"ref": "web"}, "web", true, ""},
		{map[string]any{"origins": []any{"https://a.test"}}, "", false, ""},
		{map[string]any{}, "", false, ""},
		{map[string]any{"ref": ""}, "", true, `ref "": want a non-empty policy name`},
		{map[string]any{"ref": nil}, "", true, `ref null: want a non-empty policy name`},
		{map[string]any{"ref": 3.0}, "", true, `ref 3: want a non-empty policy name`},
		{map[string]any{"ref": "web", "origins": nil, "credentials": true}, "", true,
			`ref "web": must be the only field, found also credentials, origins`},
	}
	for _, tt := range tests {
		name, isRef, err := RefName(tt.m)
		assert.Equal(t, tt.name, name)
		assert.Equal(t, tt.isRef, isRef)
		if tt.err == "" {
			assert.NoError(t, err)
		} else {
			assert.EqualError(t, err, tt.err)
		}
	}
}

func TestParseNamed(t *testing.T) {
	const file = `
web:
  origins: ["https://a.test", "https://b.test"]
  max_age: 600
  credentials: true
open: {}
legacy:
  origin: https://a.test
  methods: GET, POST
json-ish: {"origins": ["*"], "credentials": true, "preflight_status": 200}
`
	set, warns, err := ParseNamed([]byte(file))
	require.NoError(t, err)
	assert.Len(t, set, 4)
	assert.Equal(t, "600", set["web"].maxAge)
	assert.Equal(t, "GET,POST", set["legacy"].methods)
	assert.Equal(t, "https://a.test", set["legacy"].single)
	assert.Equal(t, 200, set["json-ish"].status)
	require.Len(t, warns, 2)
	assert.Equal(t, `json-ish: credentials true: every site gets credentialed reads: with all `+
		`origins allowed, the request's Origin is echoed in access-control-allow-origin`, warns[0].String())
	assert.Equal(t, `open: `+noOrigins("null"), warns[1].String())

	for _, empty := range []string{"", "# nothing\n", "---\n", "{}"} {
		set, warns, err := ParseNamed([]byte(empty))
		require.NoError(t, err, empty)
		assert.Empty(t, set)
		assert.NotNil(t, set)
		assert.Empty(t, warns)
	}
}

func TestParseNamedErrors(t *testing.T) {
	const file = `
good:
  origins: [https://a.test, https://b.test]
bad:
  origins: ["https://(bad", example.com]
  max_age: 1.5
alias:
  ref: good
notamap: [1, 2]
nothing:
numbered: {1: x}
typo:
  orgins: [https://a.test]
`
	set, warns, err := ParseNamed([]byte(file))
	require.Error(t, err)
	assert.Equal(t, strings.Join([]string{
		`alias: ref "good": not allowed here: a policy is given in full, it cannot refer to another`,
		`bad: origins[0] "https://(bad": invalid regex: missing closing )`,
		`bad: max_age 1.5: want a non-negative integer (seconds)`,
		`notamap: […]: want a policy (a map of fields)`,
		`nothing: null: want a policy (a map of fields)`,
		`numbered: {…}: want a policy (a map of fields)`,
		`typo: orgins […]: unknown field`,
	}, "; "), err.Error())
	require.Len(t, warns, 1)
	assert.Equal(t, `bad: origins[1] "example.com": has no scheme, so it never matches: `+
		`browsers send scheme://host[:port], e.g. "https://example.com"`, warns[0].String())
	assert.Equal(t, "bad", warns[0].Policy)

	// Every name is there; the bad ones are unusable stand-ins carrying their own problems.
	require.Len(t, set, 7)
	assert.NoError(t, set["good"].Err())
	for _, name := range []string{"alias", "bad", "notamap", "nothing", "numbered", "typo"} {
		require.Error(t, set[name].Err(), name)
		assert.True(t, strings.HasPrefix(set[name].Err().Error(), name+": "), name)
	}
	var fe *FieldError
	require.True(t, errors.As(set["bad"].Err(), &fe))
	assert.Equal(t, "bad", fe.Policy)
	assert.Equal(t, "origins[0]", fe.Field)

	for _, text := range []string{"- a\n- b\n", "a: [\n", "a: 1\na: 2\n"} {
		set, _, err := ParseNamed([]byte(text))
		assert.Error(t, err, text)
		assert.Nil(t, set, text)
		assert.True(t, strings.HasPrefix(err.Error(), "named policies: "), err.Error())
	}
}
