package kongimport

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestOriginDifferences lists which origins elements get which Kong-difference warning.
func TestOriginDifferences(t *testing.T) {
	const (
		none        = ""
		ipv6        = "an IPv6 origin"
		wildcard    = "a wildcard subdomain here"
		alternation = "a regex with top-level alternation"
	)
	cases := []struct{ element, want string }{
		{"https://app.example.com", none},
		{"*", none},
		{"http://[::1]:3000", ipv6},
		{"https://[2001:db8::1]", ipv6},
		{"https://[::1]:port", none},             // not an IPv6 literal: a regex in both
		{"https://*.example.com", wildcard},      // every subdomain here
		{"https://*.example.com:8443", wildcard}, // with its port
		{"https://*example.com", none},           // a regex in both, no alternation
		{"https://*.ex_ample.com", none},         // "_" is not literal: a regex in both
		{`a\.test|b\.test`, alternation},
		{`^https://(a|b)\.test$`, none},
		{`^https://[|a]\.test$`, none},
		{`^https://a\|b\.test$`, none},
		{`^https://[]|]\.test$`, none},
		{`(a)|b`, alternation},
	}
	for _, c := range cases {
		var conv conversion
		conv.originDifferences("origins[0]", c.element)
		if c.want == none {
			assert.Empty(t, conv.warnings, c.element)
			continue
		}
		if assert.Len(t, conv.warnings, 1, c.element) {
			assert.Contains(t, conv.warnings[0], c.want, c.element)
		}
	}
}

// TestConvertFields covers the mapping of each Kong field that is not a plain copy.
func TestConvertFields(t *testing.T) {
	conv := convert(map[string]any{
		"origins":         []any{"https://a.example"},
		"methods":         []any{},
		"headers":         []any{"Content-Type, X-Token", " Accept "},
		"exposed_headers": []any{},
		"max_age":         3600.0,
		"credentials":     false,
	}, Options{})
	assert.Empty(t, conv.errs)
	assert.Equal(t, []string{warnStatus}, conv.warnings)
	assert.Equal(t, []string{"https://a.example"}, conv.fields.Origins)
	if assert.NotNil(t, conv.fields.Methods) {
		assert.Empty(t, *conv.fields.Methods, "methods: [] stays an empty list: Kong sends no method either")
	}
	assert.Equal(t, []string{"Content-Type", "X-Token", "Accept"}, conv.fields.Headers)
	assert.Nil(t, conv.fields.ExposedHeaders)
	if assert.NotNil(t, conv.fields.MaxAge) {
		assert.EqualValues(t, 3600, *conv.fields.MaxAge)
	}
	m, err := conv.fields.policyMap()
	assert.NoError(t, err)
	assert.Equal(t, map[string]any{"origins": []any{"https://a.example"}, "methods": []any{},
		"headers": []any{"Content-Type", "X-Token", "Accept"}, "max_age": 3600.0}, m)

	conv = convert(map[string]any{"origins": "https://a.example", "max_age": -2, "headers": []any{"X A"}}, Options{})
	assert.Equal(t, []string{
		`origins "https://a.example": want a list of strings`,
		"max_age -2: negative: Kong sends it as it is, a policy here needs a non-negative whole number of seconds (remove it, or write 0 to disable preflight caching)",
		`headers[0] "X A": not an HTTP header name token (RFC 9110)`,
	}, conv.errs)
}
