package policy

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// elementStep is an explanation step naming the origins element that allowed the Origin.
var elementStep = regexp.MustCompile(`^origins\[(\d+)\] .*(: matches$|every (O|o)rigin is allowed)`)

// The narration agrees with the decision on the whole behaviour table: the element it says
// allowed the Origin is the one the behaviour table expects in Matched (none for a preflight
// passed upstream, which needs no origin matching), and the grant it states holds exactly the
// header fields the table expects.
func TestExplainAgreesWithDecision(t *testing.T) {
	for _, tc := range behaviourCases {
		t.Run(tc.name, func(t *testing.T) {
			p := mustCompile(t, tc.policy)
			e := p.Explain(&tc.req, tc.upstreamVary)
			named := -1
			for _, s := range e.Steps {
				if m := elementStep.FindStringSubmatch(s); m != nil {
					require.Equal(t, -1, named, "two elements named: %q", e.Steps)
					named, _ = strconv.Atoi(m[1])
				}
			}
			want := tc.matched
			if tc.kind == KindPreflightForwarded {
				want = -1
			}
			assert.Equal(t, want, named, "%q", e.Steps)

			var grant string
			for _, s := range e.Steps {
				if strings.HasPrefix(s, "the preflight is answered ") || strings.HasPrefix(s, "the actual response gets ") {
					grant = s
				}
			}
			switch tc.action {
			case ActionAnswer:
				parts := make([]string, len(tc.answer))
				for i, h := range tc.answer {
					parts[i] = h.Name + ": " + h.Value
				}
				assert.Equal(t, fmt.Sprintf("the preflight is answered %d with %s (section 7)", tc.status, listOrNone(parts)), grant)
			case ActionDecorate:
				var parts []string
				for _, h := range tc.set {
					parts = append(parts, "set "+h.Name+": "+h.Value)
				}
				if tc.appendVary {
					parts = append(parts, "add vary: Origin")
				}
				if tc.removeACAO {
					parts = append(parts, "remove access-control-allow-origin")
				}
				assert.Contains(t, grant, "the actual response gets ")
				got := strings.TrimSuffix(strings.TrimPrefix(grant, "the actual response gets "), " (section 8)")
				var gotParts []string
				for _, part := range strings.Split(got, "; ") {
					if part != "no CORS header" && !strings.HasPrefix(part, "no vary added") {
						gotParts = append(gotParts, part)
					}
				}
				assert.Equal(t, parts, gotParts, "%q", e.Steps)
			default:
				assert.Empty(t, grant, "%q", e.Steps)
			}
		})
	}
}

func TestExplainSteps(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy string
		req    Request
		want   []string
	}{
		{"list with a regex", `{"origins": ["https://a.test", "https://*.b.test", "^https://c[0-9]\\.test$"], "credentials": true}`,
			preflight("https://c7.test:443/x"), []string{
				`preflight: method OPTIONS with an Origin and access-control-request-method "GET" (section 6)`,
				`the Origin "https://c7.test:443/x" is normalized to "https://c7.test" (section 3)`,
				`origins[0] "https://a.test" (literal, normalized "https://a.test"): does not match`,
				`origins[1] "https://*.b.test" (wildcard subdomain: one or more labels in front): does not match`,
				`origins[2] "^https://c[0-9]\\.test$" (regex, anchored as a whole, against scheme://host[:port]): matches`,
				`the first matching element wins: access-control-allow-origin is the normalized Origin (section 4.4)`,
				`credentials is true: access-control-allow-credentials: true is sent, whether or not the Origin was allowed (section 5)`,
				`the preflight is answered 204 with access-control-allow-origin: https://c7.test; vary: Origin; access-control-allow-credentials: true; access-control-allow-methods: GET,HEAD,PUT,PATCH,POST,DELETE (section 7)`,
			}},
		{"single literal", `{"origin": "https://a.test", "report_only": true}`, actual("https://evil.test"), []string{
			`actual request: method GET (section 6)`,
			`origins is the single literal "https://a.test": access-control-allow-origin is that literal whatever the Origin, with Vary: Origin (section 4.3); the Origin differs from it, so the browser will refuse the response`,
			`credentials is false: no access-control-allow-credentials is added (section 5)`,
			`the actual response gets set access-control-allow-origin: https://a.test; add vary: Origin (section 8)`,
			`report_only: this decision is counted and logged, but the request and response pass untouched`,
		}},
		{"comma-joined origin", `{"origins": ["https://a.test", "https://b.test"]}`, actual("https://a.test, https://b.test"), []string{
			`actual request: method GET (section 6)`,
			`the Origin "https://a.test, https://b.test" contains a comma (two Origin headers joined): it matches no element (section 2)`,
			`credentials is false: no access-control-allow-credentials is added (section 5)`,
			`the actual response gets add vary: Origin; remove access-control-allow-origin (section 8)`,
		}},
		{"comma-joined origin, allow-all with credentials", `{"credentials": true}`, actual("https://a.test, https://b.test"), []string{
			`actual request: method GET (section 6)`,
			`the Origin "https://a.test, https://b.test" contains a comma (two Origin headers joined): it is never echoed, so the request is answered as if it had no Origin (section 2)`,
			`credentials with every origin allowed and no Origin to echo: access-control-allow-origin is *, without credentials, with Vary: Origin (section 5)`,
			`the actual response gets set access-control-allow-origin: *; add vary: Origin (section 8)`,
		}},
		{"preflight_continue", `{"preflight_continue": true}`, preflight("https://a.test"), []string{
			`preflight: method OPTIONS with an Origin and access-control-request-method "GET" (section 6)`,
			`preflight_continue: the preflight goes upstream and its response is left as it is (section 6)`,
		}},
		{"no origin ignored", `{"allow_origin_absent": false}`, actual(""), []string{
			`actual request: method GET (section 6)`,
			`no Origin and allow_origin_absent is false: no CORS treatment at all (section 6)`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := mustCompile(t, tc.policy).Explain(&tc.req, false)
			assert.Equal(t, tc.want, e.Steps)
		})
	}
	e := Unusable(assert.AnError).Explain(&Request{Method: "OPTIONS", Origin: "https://a.test", HasRequestMethod: true}, false)
	assert.Equal(t, []string{
		"the policy is unusable (section 10): " + assert.AnError.Error(),
		"a preflight is answered 403 with no CORS headers",
	}, e.Steps)
}

// report_only changes nothing in the decision itself: the processor is what lets the request
// pass untouched.
func TestReportOnly(t *testing.T) {
	enforcing := mustCompile(t, listPolicy)
	reporting := mustCompile(t, `{"origins": ["https://a.test", "https://b.test:8443"], "report_only": true}`)
	assert.False(t, enforcing.ReportOnly())
	assert.True(t, reporting.ReportOnly())
	for _, r := range []Request{preflight("https://a.test"), actual("https://evil.test"), actual("")} {
		de, dr := enforcing.Decide(&r), reporting.Decide(&r)
		assert.Equal(t, de, dr)
		assert.Equal(t, enforcing.Decorate(&de, false), reporting.Decorate(&dr, false))
	}
}
