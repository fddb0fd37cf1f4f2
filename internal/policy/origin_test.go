package policy

import (
	"testing"

	"github.com/stretchr/testify/assert"
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
