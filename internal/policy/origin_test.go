package policy

import (
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNormalizeOrigin(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://a.test", "https://a.test"},
		{"null", "null"},
		{"a.test", "a.test"},
		{"http://a.test:80", "http://a.test"},
		{"https://a.test:443", "https://a.test"},
		{"http://a.test:443", "http://a.test:443"},
		{"https://a.test:80", "https://a.test:80"},
		{"HTTP://a.test:80", "HTTP://a.test:80"},
		{"https://A.Test", "https://A.Test"},
		{"http://a.test:8080", "http://a.test:8080"},
		{"http://a.test:", "http://a.test:"},
		{"http://a.test/", "http://a.test"},
		{"http://a.test:80/path?q=1#f", "http://a.test"},
		{"http://a.test?q", "http://a.test"},
		{"http://a.test#f", "http://a.test"},
		{"http://a.test;p=1", "http://a.test"},
		{"http://user:pw@a.test:8080/x", "http://a.test:8080"},
		{"http://user@a.test", "http://a.test"},
		{"http://a@b@a.test", "http://a.test"},
		{"http://[::1]:8080", "http://[::1]:8080"},
		{"http://[::1]:80", "http://[::1]"},
		{"http://[::1]", "http://[::1]"},
		{"http://[::1]/x", "http://[::1]"},
		{"http://[::1", "http://[::1"},
		{"http://a.test:80:80", "http://a.test:80:80"},
		{"file://", "file://"},
		{"//a.test:80", "//a.test:80"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, normalizeOrigin(tt.in), "normalizeOrigin(%q)", tt.in)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		elem string
		want elementKind
	}{
		{"*", kindStar},
		{"https://a.test", kindLiteral},
		{"https://a-b.test:8443/path/", kindLiteral},
		{"null", kindLiteral},
		{"example.com", kindLiteral},
		{"http://[::1]:8080", kindLiteral},
		{"http://[::1]", kindLiteral},
		{"https://[2001:db8::1.2.3.4]:", kindLiteral},
		{"http://[::1]/x", kindRegex},
		{"http://[fe80::1%25eth0]", kindRegex},
		{"http://[::g]", kindRegex},
		{"://[::1]", kindRegex},
		{"https://*.example.com", kindWildcard},
		{"https://*.example.com:8443", kindWildcard},
		{"https://*.example.com/", kindWildcard},
		{"*.example.com", kindRegex},
		{"https://*.", kindRegex},
		{"https://*..example.com", kindRegex},
		{"https://*.:8443", kindRegex},
		{"https://a.*.example.com", kindRegex},
		{"https://*.*.example.com", kindRegex},
		{"ht_tp://*.example.com", kindRegex},
		{"http://my_site.test", kindRegex},
		{`https://.*\.test`, kindRegex},
		{`foo\.test|bar\.test`, kindRegex},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, classify(tt.elem), "classify(%q)", tt.elem)
	}
}

func TestNormalizeOriginIsASubstring(t *testing.T) {
	for _, s := range []string{"https://a.test", "https://a.test:443/x?y", "http://[::1]:80#f", "null", "x//y"} {
		var got string
		allocs := testing.AllocsPerRun(10, func() { got = normalizeOrigin(s) })
		assert.Zero(t, allocs, s)
		assert.True(t, strings.HasPrefix(s, got), s)
		if len(got) > 0 {
			assert.Same(t, unsafe.StringData(s), unsafe.StringData(got), "%q shares the input's bytes", s)
		}
	}
}

func TestCompilePatternAnchoring(t *testing.T) {
	tests := []struct {
		elem, subject string
		want          bool
	}{
		{`foo\.test|bar\.test`, "foo.test", true},
		{`foo\.test|bar\.test`, "foo.test.evil.test", false},
		{`foo\.test|bar\.test`, "evil.bar.test", false},
		{`^a\.test$`, "a.test", true},
		{`^^a\.test`, "^a.test", false},
		{`a\$`, "a$", true},
		{`a\\$`, `a\`, true},
		{`a$$`, "a", true},
		{`(?i)A\.TEST`, "a.test", true},
	}
	for _, tt := range tests {
		p, err := compilePattern(tt.elem)
		require.NoError(t, err, tt.elem)
		assert.Equal(t, tt.want, p.re.MatchString(tt.subject), "%q on %q", tt.elem, tt.subject)
	}
}

func TestNormalizeLiteral(t *testing.T) {
	tests := []struct{ in, norm, problem string }{
		{"https://a.test", "https://a.test", ""},
		{"HTTPS://App.Example.COM", "https://app.example.com", ""},
		{"https://a.test:443", "https://a.test", ""},
		{"HTTPS://a.test:443", "https://a.test", ""},
		{"Http://a.test:80", "http://a.test", ""},
		{"http://a.test:443", "http://a.test:443", ""},
		{"http://a.test:", "http://a.test:", ""},
		{"http://[::1]:80", "http://[::1]", ""},
		{"http://[::AB]:8080", "http://[::ab]:8080", ""},
		{"null", "null", ""},
		{"App.test", "App.test", ""},
		{"https://a.test/", "https://a.test", "path"},
		{"https://a.test:443/x/y", "https://a.test", "path"},
		{"https://", "https://", "host"},
	}
	for _, tt := range tests {
		norm, problem := NormalizeLiteral(tt.in)
		assert.Equal(t, tt.norm, norm, "NormalizeLiteral(%q)", tt.in)
		assert.Contains(t, problem, tt.problem, "NormalizeLiteral(%q)", tt.in)
		if tt.problem == "" {
			assert.Empty(t, problem, "NormalizeLiteral(%q)", tt.in)
			again, _ := NormalizeLiteral(norm)
			assert.Equal(t, norm, again, "idempotent on %q", tt.in)
		}
	}
}
