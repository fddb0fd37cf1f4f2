package kongimport

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Warnings repeated by many cases.
const (
	warnStatus   = "preflight_status: preflights are answered with 204 here, Kong answers 200; browsers accept both, a client that checks for 200 does not (set preflight_status: 200, or use --kong-compatible)"
	warnMethods  = "methods: not set, so preflights allow GET,HEAD,PUT,PATCH,POST,DELETE here; Kong's default also allows OPTIONS,TRACE,CONNECT (set methods, or use --kong-compatible)"
	warnAllowAll = `origins null: no origins listed, so every origin is allowed; write origins: ["*"] if that is meant, or list the origins`
)

func TestForm(t *testing.T) {
	cases := []struct {
		name     string
		params   []string
		opts     Options
		want     string // the text output
		errors   int
		warnings int
	}{
		{
			// The seed document's example, Kong 0.x names: origin is a bare host, which the
			// policy validator warns about.
			name:   "seed example",
			params: []string{"config.origin=mockbin.com", "config.methods=GET, POST", "config.credentials=true"},
			want: "# warning: " + warnStatus + "\n" +
				`# warning: origins[0] "mockbin.com": has no scheme, so it never matches: browsers send scheme://host[:port], e.g. "https://mockbin.com"` + "\n" +
				"origins:\n  - mockbin.com\nmethods:\n  - GET\n  - POST\ncredentials: true\n",
			warnings: 2,
		},
		{
			name:   "seed example, kong-compatible",
			params: []string{"name=cors", "config.origin=mockbin.com", "config.methods=GET, POST", "config.credentials=true"},
			opts:   Options{KongCompatible: true},
			want: `# warning: origins[0] "mockbin.com": has no scheme, so it never matches: browsers send scheme://host[:port], e.g. "https://mockbin.com"` + "\n" +
				"origins:\n  - mockbin.com\nmethods:\n  - GET\n  - POST\ncredentials: true\npreflight_status: 200\n",
			warnings: 1,
		},
		{
			name: "repeated and indexed array parameters, 3.x fields",
			params: []string{"config.origins[]=https://a.example", "config.origins[]=https://b.example",
				"config.origins[3]=https://c.example", "config.exposed_headers=X-A,X-B", "config.max_age=120",
				"config.private_network=true", "config.allow_origin_absent=false", "config.preflight_continue=false",
				"config.headers="},
			opts: Options{KongCompatible: true},
			want: "origins:\n  - https://a.example\n  - https://b.example\n  - https://c.example\n" +
				"methods:\n  - GET\n  - HEAD\n  - PUT\n  - PATCH\n  - POST\n  - DELETE\n  - OPTIONS\n  - TRACE\n  - CONNECT\n" +
				"exposed_headers:\n  - X-A\n  - X-B\nmax_age: 120\nprivate_network: true\nallow_origin_absent: false\npreflight_status: 200\n",
		},
		{
			// An origin as users write it: Kong sent the single literal as it is; here it is
			// normalized, and each change is reported.
			name: "literal origins normalized",
			params: []string{"config.origins[]=https://App.Example.com/", "config.origins[]=HTTP://b.example:80",
				"config.origins[]=https://*.C.example:443", "config.origins[]=https://d.example",
				"config.preflight_continue=true"},
			want: `# warning: origins[0] "https://App.Example.com/": written as "https://app.example.com": an origin is scheme://host[:port], lower-case, without a path or default port; Kong sent this element as written where it was the only one (browsers refuse such an access-control-allow-origin) and compared it as written in a list` + "\n" +
				`# warning: origins[1] "HTTP://b.example:80": written as "http://b.example": an origin is scheme://host[:port], lower-case, without a path or default port; Kong sent this element as written where it was the only one (browsers refuse such an access-control-allow-origin) and compared it as written in a list` + "\n" +
				`# warning: origins[2] "https://*.C.example:443": written as "https://*.c.example": an origin is scheme://host[:port], lower-case, without a path or default port; Kong sent this element as written where it was the only one (browsers refuse such an access-control-allow-origin) and compared it as written in a list` + "\n" +
				`# warning: origins[2] "https://*.C.example:443": a wildcard subdomain here: it allows every subdomain of C.example; Kong reads it as a regex in which "/*" repeats the slash, so it allowed none of them` + "\n" +
				"origins:\n  - https://app.example.com\n  - http://b.example\n  - https://*.c.example\n  - https://d.example\npreflight_continue: true\n",
			warnings: 4,
		},
		{
			name:     "preflights passed upstream: status and methods do not matter",
			params:   []string{"config.origins=*", "config.preflight_continue=true"},
			want:     "origins:\n  - '*'\npreflight_continue: true\n",
			warnings: 0,
		},
		{
			name:     "fractional max_age",
			params:   []string{"config.max_age=0.5", "config.methods=GET"},
			want:     `# warning: max_age 0.5: Kong sends the fraction as it is ("0.5"), which browsers need not accept as a number of seconds; written as 0, rounded down` + "\n# warning: " + warnStatus + "\n# warning: " + warnAllowAll + "\nmethods:\n  - GET\nmax_age: 0\n",
			warnings: 3,
		},
		{
			name:   "placement keys are ignored",
			params: []string{"route.id=481a9539", "protocols[]=http", "config.methods=GET", "config.preflight_continue=true"},
			want: "# warning: route.id: ignored: it says where or how Kong runs the plugin; on Envoy, the route that refers to the policy decides where it applies\n" +
				"# warning: protocols[]: ignored: it says where or how Kong runs the plugin; on Envoy, the route that refers to the policy decides where it applies\n" +
				"# warning: " + warnAllowAll + "\n" +
				"methods:\n  - GET\npreflight_continue: true\n",
			warnings: 3,
		},
		{
			name: "errors: PCRE regex, both origin names, wrong types, consumer, other plugin",
			params: []string{"name=rate-limiting", "consumer.id=42", "config.origin=https://a.example",
				"config.origins=^https://(?<=x)a$", "config.credentials=yes", "config.max_age=soon", "novalue"},
			want: `# warning: ` + warnMethods + "\n# warning: " + warnStatus + "\n" +
				`# error: name "rate-limiting": not the CORS plugin: only "cors" is imported` + "\n" +
				"# error: consumer.id: Kong's CORS plugin cannot be scoped to a consumer (its schema has consumer = typedefs.no_consumer)\n" +
				`# error: "novalue": want key=value` + "\n" +
				`# error: origin "https://a.example": set together with origins: Kong 0.10 renamed origin to origins, write only one` + "\n" +
				`# error: credentials "yes": want true or false` + "\n" +
				`# error: max_age "soon": want a number of seconds` + "\n" +
				`# error: origins[0] "^https://(?<=x)a$": invalid regex: invalid named capture (Kong's PCRE also has look-around, back-references, atomic groups and possessive quantifiers; Go's RE2 has none of them: rewrite the regex)` + "\n",
			errors:   7,
			warnings: 2,
		},
		{
			name:     "disabled",
			params:   []string{"enabled=false", "config.methods=GET", "config.preflight_continue=true"},
			want:     "# warning: " + warnAllowAll + "\n# error: enabled=false: a disabled plugin does nothing in Kong; there is no policy to import\n",
			errors:   1,
			warnings: 1,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Form(c.params, c.opts)
			var b bytes.Buffer
			require.NoError(t, r.WriteText(&b))
			assert.Equal(t, c.want, b.String())
			assert.Len(t, r.Errors, c.errors)
			assert.Len(t, r.Warnings, c.warnings)
			assert.Equal(t, c.errors == 0, r.Policy != nil)
		})
	}
}
