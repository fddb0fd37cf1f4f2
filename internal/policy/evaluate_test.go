package policy

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// behaviourCase is one request against one policy, with both phases' expected outcome. The
// shape (policy as JSON text, request header values, expected header fields in order) is the
// one the processor's end-to-end tests reuse.
type behaviourCase struct {
	name   string
	policy string  // policy JSON text
	req    Request // the request's header values

	action  Action
	kind    Kind
	origin  OriginResult
	matched int      // RequestDecision.Matched
	status  int      // ActionAnswer: status of the answer
	answer  []Header // ActionAnswer: header fields of the answer, in order

	// ActionDecorate: the upstream's Vary already lists Origin, and the expected decoration.
	upstreamVary bool
	set          []Header
	appendVary   bool
	removeACAO   bool
}

func preflight(origin string) Request {
	return Request{Method: "OPTIONS", Origin: origin, RequestMethod: "GET", HasRequestMethod: true}
}

func actual(origin string) Request { return Request{Method: "GET", Origin: origin} }

func withACRH(r Request, acrh string) Request { r.RequestHeaders = acrh; return r }

func withACRPN(r Request, v string) Request { r.RequestPrivateNetwork = v; return r }

const (
	defaultACAM = "GET,HEAD,PUT,PATCH,POST,DELETE"
	listPolicy  = `{"origins": ["https://a.test", "https://b.test:8443"]}`
)

var (
	hACAO    = func(v string) Header { return Header{HeaderAllowOrigin, v} }
	hVary    = Header{HeaderVary, VaryOrigin}
	hACAC    = Header{HeaderAllowCredentials, "true"}
	hACAM    = Header{HeaderAllowMethods, defaultACAM}
	hACAH    = func(v string) Header { return Header{HeaderAllowHeaders, v} }
	hACEH    = func(v string) Header { return Header{HeaderExposeHeaders, v} }
	hACMA    = func(v string) Header { return Header{HeaderMaxAge, v} }
	hACAPN   = Header{HeaderAllowPrivateNetwork, "true"}
	hAnyACAO = hACAO("*")
)

var behaviourCases = []behaviourCase{
	// Section 4.1: allow all.
	{name: "allow-all/actual", policy: `{}`, req: actual("https://a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: -1,
		set: []Header{hAnyACAO}},
	{name: "allow-all/actual no origin", policy: `{}`, req: actual(""),
		action: ActionDecorate, kind: KindActual, origin: OriginAbsent, matched: -1,
		set: []Header{hAnyACAO}},
	{name: "allow-all/preflight", policy: `{}`, req: preflight("https://a.test"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginAllowed, matched: -1,
		status: 204, answer: []Header{hAnyACAO, hACAM}},
	{name: "allow-all/empty list", policy: `{"origins": []}`, req: actual("https://a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: -1,
		set: []Header{hAnyACAO}},
	{name: "allow-all/star alone", policy: `{"origins": ["*"]}`, req: actual("https://a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hAnyACAO}},
	{name: "allow-all/null origins", policy: `{"origins": null}`, req: actual("https://a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: -1,
		set: []Header{hAnyACAO}},

	// Section 4.2 and 4.4: a list of literals.
	{name: "list/allowed", policy: listPolicy, req: actual("https://a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://a.test")}, appendVary: true},
	{name: "list/allowed second", policy: listPolicy, req: actual("https://b.test:8443"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 1,
		set: []Header{hACAO("https://b.test:8443")}, appendVary: true},
	{name: "list/default port dropped", policy: listPolicy, req: actual("https://a.test:443"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://a.test")}, appendVary: true},
	{name: "list/path query userinfo stripped", policy: listPolicy,
		req:    actual("https://u:pw@a.test/x?y#z"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://a.test")}, appendVary: true},
	{name: "list/element normalized", policy: `{"origins": ["HTTP://A.test:80", "http://b.test"]}`,
		req:    actual("http://a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("http://a.test")}, appendVary: true},
	{name: "list/other port rejected", policy: listPolicy, req: actual("https://b.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		appendVary: true, removeACAO: true},
	{name: "list/other scheme rejected", policy: listPolicy, req: actual("http://a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		appendVary: true, removeACAO: true},
	{name: "list/no lower-casing", policy: listPolicy, req: actual("https://A.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		appendVary: true, removeACAO: true},
	{name: "list/comma joined never matches", policy: listPolicy,
		req:    actual("https://a.test, https://a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		appendVary: true, removeACAO: true},
	{name: "list/no origin", policy: listPolicy, req: actual(""),
		action: ActionDecorate, kind: KindActual, origin: OriginAbsent, matched: -1,
		appendVary: true, removeACAO: true},
	{name: "list/upstream vary lists origin", policy: listPolicy, req: actual("https://a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		upstreamVary: true, set: []Header{hACAO("https://a.test")}},
	{name: "list/preflight allowed", policy: listPolicy, req: preflight("https://a.test"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginAllowed, matched: 0,
		status: 204, answer: []Header{hACAO("https://a.test"), hVary, hACAM}},
	{name: "list/preflight rejected still answered", policy: listPolicy,
		req:    preflight("https://evil.test"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginRejected, matched: -1,
		status: 204, answer: []Header{hVary, hACAM}},
	{name: "list/null origin rejected", policy: listPolicy, req: actual("null"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		appendVary: true, removeACAO: true},
	{name: "list/IPv6 keeps brackets", policy: `{"origins": ["http://[::1]:8080", "https://a.test"]}`,
		req:    actual("http://[::1]:8080"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("http://[::1]:8080")}, appendVary: true},
	{name: "list/many literals", policy: manyLiterals(20), req: actual("https://o19.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 19,
		set: []Header{hACAO("https://o19.test")}, appendVary: true},
	{name: "list/many literals miss", policy: manyLiterals(20), req: actual("https://o20.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		appendVary: true, removeACAO: true},
	{name: "list/first match wins", policy: `{"origins": ["https://.*\\.test", "https://a.test"]}`,
		req:    actual("https://a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://a.test")}, appendVary: true},

	{name: "list/literal after a regex that misses", policy: `{"origins": ["https://x\\.test", "https://a.test"]}`,
		req:    actual("https://a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 1,
		set: []Header{hACAO("https://a.test")}, appendVary: true},
	{name: "list/normalized literal after a wildcard that misses", policy: `{"origins": ["https://*.x.test", "https://a.test"]}`,
		req:    actual("https://a.test:443"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 1,
		set: []Header{hACAO("https://a.test")}, appendVary: true},
	{name: "list/star after a literal, credentials", policy: `{"origins": ["https://a.test", "*"], "credentials": true}`,
		req:    actual("https://a.test:443"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://a.test:443"), hACAC}, appendVary: true},

	// Section 4.3: the single literal.
	{name: "single/matching", policy: `{"origins": ["https://a.test"]}`, req: actual("https://a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://a.test")}, appendVary: true},
	{name: "single/normalized whatever O", policy: `{"origins": ["HTTPS://App.A.test:443"]}`,
		req:    actual("https://evil.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		set: []Header{hACAO("https://app.a.test")}, appendVary: true},
	{name: "single/normalized comparison", policy: `{"origins": ["https://App.a.test:443"]}`,
		req:    actual("https://app.a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://app.a.test")}, appendVary: true},
	{name: "single/what is sent is what is counted", policy: `{"origins": ["https://App.a.test"]}`,
		req:    actual("https://App.a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		set: []Header{hACAO("https://app.a.test")}, appendVary: true},
	{name: "list/upper-case literal matches", policy: `{"origins": ["https://App.a.test", "https://b.test"]}`,
		req:    actual("https://app.a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://app.a.test")}, appendVary: true},
	{name: "wildcard/upper-case element", policy: `{"origins": ["https://*.Example.COM"]}`,
		req:    actual("https://a.example.com"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://a.example.com")}, appendVary: true},
	{name: "single/absent O", policy: `{"origins": ["https://a.test"]}`, req: actual(""),
		action: ActionDecorate, kind: KindActual, origin: OriginAbsent, matched: -1,
		set: []Header{hACAO("https://a.test")}, appendVary: true},
	{name: "single/preflight", policy: `{"origins": ["https://a.test"]}`, req: preflight("https://b.test"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginRejected, matched: -1,
		status: 204, answer: []Header{hACAO("https://a.test"), hVary, hACAM}},
	{name: "single/legacy origin field", policy: `{"origin": "https://a.test"}`, req: actual("https://b.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		set: []Header{hACAO("https://a.test")}, appendVary: true},
	{name: "single/regex is no shortcut", policy: `{"origins": ["https://.*\\.a\\.test"]}`,
		req:    actual("https://b.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		appendVary: true, removeACAO: true},

	// Section 4.4: `*` inside a longer list.
	{name: "star in list/any origin", policy: `{"origins": ["https://a.test", "*"]}`,
		req:    actual("https://evil.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 1,
		set: []Header{hAnyACAO}, appendVary: true},
	{name: "star in list/earlier element matches", policy: `{"origins": ["https://a.test", "*"]}`,
		req:    actual("https://a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hAnyACAO}, appendVary: true},
	{name: "star in list/absent O", policy: `{"origins": ["https://a.test", "*"]}`, req: actual(""),
		action: ActionDecorate, kind: KindActual, origin: OriginAbsent, matched: -1,
		appendVary: true, removeACAO: true},
	{name: "star in list/credentials echo O", policy: `{"origins": ["*", "https://a.test"], "credentials": true}`,
		req:    actual("https://evil.test:8443"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://evil.test:8443"), hACAC}, appendVary: true},

	// Section 5: credentials.
	{name: "credentials/allowed", policy: `{"origins": ["https://a.test", "https://b.test"], "credentials": true}`,
		req:    actual("https://a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://a.test"), hACAC}, appendVary: true},
	{name: "credentials/rejected still ACAC", policy: `{"origins": ["https://a.test", "https://b.test"], "credentials": true}`,
		req:    actual("https://c.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		set: []Header{hACAC}, appendVary: true, removeACAO: true},
	{name: "credentials/allow-all echoes raw O", policy: `{"credentials": true}`,
		req:    actual("https://a.test:443/x"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: -1,
		set: []Header{hACAO("https://a.test:443/x"), hACAC}, appendVary: true},
	{name: "credentials/allow-all echoes null", policy: `{"credentials": true, "exposed_headers": "x-a, x-b"}`,
		req:    actual("null"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: -1,
		set: []Header{hACAO("null"), hACAC, hACEH("x-a,x-b")}, appendVary: true},
	{name: "credentials/allow-all absent O varies", policy: `{"credentials": true}`, req: actual(""),
		action: ActionDecorate, kind: KindActual, origin: OriginAbsent, matched: -1,
		set: []Header{hAnyACAO}, appendVary: true},
	{name: "credentials/allow-all absent O, upstream vary", policy: `{"credentials": true}`, req: actual(""),
		upstreamVary: true,
		action:       ActionDecorate, kind: KindActual, origin: OriginAbsent, matched: -1,
		set: []Header{hAnyACAO}},
	{name: "credentials/allow-all comma origin not echoed", policy: `{"credentials": true}`,
		req:    actual("https://a.test, https://evil.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		set: []Header{hAnyACAO}, appendVary: true},
	{name: "credentials/allow-all comma origin preflight", policy: `{"credentials": true, "origins": ["*"]}`,
		req:    preflight("https://a.test,https://evil.test"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginRejected, matched: -1,
		status: 204, answer: []Header{hAnyACAO, hVary, hACAM}},
	{name: "credentials/star in list comma origin not echoed", policy: `{"origins": ["https://a.test", "*"], "credentials": true}`,
		req:    actual("https://a.test, https://evil.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		set: []Header{hACAC}, appendVary: true, removeACAO: true},
	{name: "allow-all/comma origin without credentials", policy: `{}`,
		req:    actual("https://a.test, https://evil.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: -1,
		set: []Header{hAnyACAO}},
	{name: "credentials/allow-all preflight", policy: `{"credentials": true, "origins": ["*"]}`,
		req:    preflight("https://a.test"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginAllowed, matched: 0,
		status: 204, answer: []Header{hACAO("https://a.test"), hVary, hACAC, hACAM}},
	{name: "credentials/allow-all vary kept once", policy: `{"credentials": true}`,
		req: actual("https://a.test"), upstreamVary: true,
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: -1,
		set: []Header{hACAO("https://a.test"), hACAC}},

	// Section 3.3: wildcard subdomains.
	{name: "wildcard/one level", policy: `{"origins": ["https://*.example.com"]}`,
		req:    actual("https://a.example.com"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://a.example.com")}, appendVary: true},
	{name: "wildcard/two levels", policy: `{"origins": ["https://*.example.com"]}`,
		req:    actual("https://a.b.example.com:443"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://a.b.example.com")}, appendVary: true},
	{name: "wildcard/apex rejected", policy: `{"origins": ["https://*.example.com"]}`,
		req:    actual("https://example.com"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		appendVary: true, removeACAO: true},
	{name: "wildcard/suffix without dot rejected", policy: `{"origins": ["https://*.example.com"]}`,
		req:    actual("https://evilexample.com"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		appendVary: true, removeACAO: true},
	{name: "wildcard/other port rejected", policy: `{"origins": ["https://*.example.com"]}`,
		req:    actual("https://a.example.com:8443"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		appendVary: true, removeACAO: true},
	{name: "wildcard/other scheme rejected", policy: `{"origins": ["https://*.example.com"]}`,
		req:    actual("http://a.example.com"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		appendVary: true, removeACAO: true},
	{name: "wildcard/empty label rejected", policy: `{"origins": ["https://*.example.com"]}`,
		req:    actual("https://.example.com"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		appendVary: true, removeACAO: true},
	{name: "wildcard/with port", policy: `{"origins": ["https://*.example.com:8443"]}`,
		req:    actual("https://a.example.com:8443"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://a.example.com:8443")}, appendVary: true},
	{name: "wildcard/with port, none sent", policy: `{"origins": ["https://*.example.com:8443"]}`,
		req:    actual("https://a.example.com"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		appendVary: true, removeACAO: true},

	// Section 3.4: regexes.
	{name: "regex/top-level alternation anchored", policy: `{"origins": ["foo\\.test|bar\\.test"]}`,
		req:    actual("https://foo.test.evil.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		appendVary: true, removeACAO: true},
	{name: "regex/host subject", policy: `{"origins": ["foo\\.test|bar\\.test"]}`,
		req:    actual("https://bar.test:8080"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://bar.test:8080")}, appendVary: true},
	{name: "regex/origin subject", policy: `{"origins": ["^https://(foo|bar)\\.test$"]}`,
		req:    actual("https://foo.test:443"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://foo.test")}, appendVary: true},
	{name: "regex/origin subject other scheme", policy: `{"origins": ["^https://(foo|bar)\\.test$"]}`,
		req:    actual("http://foo.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		appendVary: true, removeACAO: true},
	{name: "regex/underscore makes a regex", policy: `{"origins": ["http://my_site.test"]}`,
		req:    actual("http://my_siteXtest"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("http://my_siteXtest")}, appendVary: true},
	{name: "regex/comma joined never matches", policy: `{"origins": [".*"]}`,
		req:    actual("https://a.test,https://b.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		appendVary: true, removeACAO: true},

	{name: "regex/subject too long", policy: `{"origins": ["https://a+\\.test"]}`,
		req:    actual("https://" + strings.Repeat("a", maxRegexSubject) + ".test"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		appendVary: true, removeACAO: true},
	{name: "regex/subject at the limit", policy: `{"origins": ["https://a+\\.test"]}`,
		req:    actual("https://" + strings.Repeat("a", maxRegexSubject-len("https://.test")) + ".test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set:        []Header{hACAO("https://" + strings.Repeat("a", maxRegexSubject-len("https://.test")) + ".test")},
		appendVary: true},

	// Section 6: classification and allow_origin_absent.
	{name: "classify/OPTIONS without ACRM is actual", policy: listPolicy,
		req:    Request{Method: "OPTIONS", Origin: "https://a.test"},
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://a.test")}, appendVary: true},
	{name: "classify/empty ACRM present is a preflight", policy: listPolicy,
		req:    Request{Method: "OPTIONS", Origin: "https://a.test", HasRequestMethod: true},
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginAllowed, matched: 0,
		status: 204, answer: []Header{hACAO("https://a.test"), hVary, hACAM}},
	{name: "classify/lower-case options is actual", policy: listPolicy,
		req:    Request{Method: "options", Origin: "https://a.test", HasRequestMethod: true},
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: 0,
		set: []Header{hACAO("https://a.test")}, appendVary: true},
	{name: "classify/OPTIONS without Origin is actual", policy: listPolicy,
		req:    Request{Method: "OPTIONS", HasRequestMethod: true, RequestMethod: "GET"},
		action: ActionDecorate, kind: KindActual, origin: OriginAbsent, matched: -1,
		appendVary: true, removeACAO: true},
	{name: "absent/false ignores", policy: `{"allow_origin_absent": false}`, req: actual(""),
		action: ActionPass, kind: KindIgnored, origin: OriginAbsent, matched: -1},
	{name: "absent/false with origin", policy: `{"allow_origin_absent": false}`, req: actual("https://a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: -1,
		set: []Header{hAnyACAO}},
	{name: "absent/true single literal", policy: `{"origin": "https://a.test", "allow_origin_absent": true}`,
		req:    actual(""),
		action: ActionDecorate, kind: KindActual, origin: OriginAbsent, matched: -1,
		set: []Header{hACAO("https://a.test")}, appendVary: true},
	{name: "preflight_continue/forwarded", policy: `{"preflight_continue": true, "origins": ["https://a.test", "https://b.test"]}`,
		req:    preflight("https://a.test"),
		action: ActionPass, kind: KindPreflightForwarded, origin: OriginAllowed, matched: 0},
	{name: "preflight_continue/actual still decorated", policy: `{"preflight_continue": true}`,
		req:    actual("https://a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: -1,
		set: []Header{hAnyACAO}},

	// Section 7: the preflight answer.
	{name: "answer/ACRH copied", policy: `{}`, req: withACRH(preflight("https://a.test"), "x-a, X-B"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginAllowed, matched: -1,
		status: 204, answer: []Header{hAnyACAO, hACAH("x-a, X-B"), hACAM}},
	{name: "answer/headers configured", policy: `{"headers": "origin, content-type , accepts", "methods": ["GET", "POST"]}`,
		req:    withACRH(preflight("https://a.test"), "x-other"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginAllowed, matched: -1,
		status: 204, answer: []Header{hAnyACAO, hACAH("origin,content-type,accepts"),
			{HeaderAllowMethods, "GET,POST"}}},
	{name: "answer/headers empty list copies", policy: `{"headers": []}`,
		req:    withACRH(preflight("https://a.test"), "x-a"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginAllowed, matched: -1,
		status: 204, answer: []Header{hAnyACAO, hACAH("x-a"), hACAM}},
	{name: "answer/methods empty", policy: `{"methods": []}`, req: preflight("https://a.test"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginAllowed, matched: -1,
		status: 204, answer: []Header{hAnyACAO}},
	{name: "answer/methods comma string", policy: `{"methods": " GET ,PURGE"}`, req: preflight("https://a.test"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginAllowed, matched: -1,
		status: 204, answer: []Header{hAnyACAO, {HeaderAllowMethods, "GET,PURGE"}}},
	{name: "answer/max_age 0", policy: `{"max_age": 0}`, req: preflight("https://a.test"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginAllowed, matched: -1,
		status: 204, answer: []Header{hAnyACAO, hACAM, hACMA("0")}},
	{name: "answer/max_age large", policy: `{"max_age": 9007199254740992}`, req: preflight("https://a.test"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginAllowed, matched: -1,
		status: 204, answer: []Header{hAnyACAO, hACAM, hACMA("9007199254740992")}},
	{name: "answer/max_age float integral", policy: `{"max_age": 3600.0}`, req: preflight("https://a.test"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginAllowed, matched: -1,
		status: 204, answer: []Header{hAnyACAO, hACAM, hACMA("3600")}},
	{name: "answer/status 200", policy: `{"preflight_status": 200}`, req: preflight("https://a.test"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginAllowed, matched: -1,
		status: 200, answer: []Header{hAnyACAO, hACAM}},
	{name: "answer/private network true", policy: `{"private_network": true}`,
		req:    withACRPN(preflight("https://a.test"), "true"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginAllowed, matched: -1,
		status: 204, answer: []Header{hAnyACAO, hACAM, hACAPN}},
	{name: "answer/private network TRUE", policy: `{"private_network": true}`,
		req:    withACRPN(preflight("https://a.test"), "TRUE"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginAllowed, matched: -1,
		status: 204, answer: []Header{hAnyACAO, hACAM}},
	{name: "answer/private network off", policy: `{}`,
		req:    withACRPN(preflight("https://a.test"), "true"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginAllowed, matched: -1,
		status: 204, answer: []Header{hAnyACAO, hACAM}},
	{name: "answer/every header in order",
		policy: `{"origins": ["https://a.test", "https://b.test"], "credentials": true, "headers": ["x-a"],
			"exposed_headers": ["x-e"], "max_age": 600, "private_network": true}`,
		req:    withACRPN(withACRH(preflight("https://b.test"), "x-z"), "true"),
		action: ActionAnswer, kind: KindPreflightAnswered, origin: OriginAllowed, matched: 1,
		status: 204, answer: []Header{hACAO("https://b.test"), hVary, hACAC, hACAH("x-a"), hACAM,
			hACMA("600"), hACAPN}},

	// Section 8: exposed headers on actual responses.
	{name: "decorate/exposed headers", policy: `{"exposed_headers": ["x-a", "x-b"]}`,
		req:    actual("https://a.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginAllowed, matched: -1,
		set: []Header{hAnyACAO, hACEH("x-a,x-b")}},
	{name: "decorate/exposed headers on rejected", policy: `{"exposed_headers": "x-a", "origins": ["https://a.test", "https://b.test"]}`,
		req:    actual("https://c.test"),
		action: ActionDecorate, kind: KindActual, origin: OriginRejected, matched: -1,
		set: []Header{hACEH("x-a")}, appendVary: true, removeACAO: true},
}

// manyLiterals is a policy with n literal origins https://o0.test … (a map lookup from 8 on).
func manyLiterals(n int) string {
	var b strings.Builder
	b.WriteString(`{"origins": [`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"https://o` + strconv.Itoa(i) + `.test"`)
	}
	b.WriteString(`]}`)
	return b.String()
}

func mustCompile(t testing.TB, policy string) *Policy {
	t.Helper()
	m, err := ParseJSON([]byte(policy))
	require.NoError(t, err)
	p, _, err := Compile(m)
	require.NoError(t, err)
	return p
}

func headerList(h Headers) []Header {
	var out []Header
	for i := range h.Len() {
		out = append(out, h.At(i))
	}
	return out
}

func TestBehaviour(t *testing.T) {
	for _, tc := range behaviourCases {
		t.Run(tc.name, func(t *testing.T) {
			p := mustCompile(t, tc.policy)
			d := p.Decide(&tc.req)
			var rd ResponseDecision
			if d.Action == ActionDecorate {
				rd = p.Decorate(&d, tc.upstreamVary)
			}
			assert.Equal(t, tc.action, d.Action, "action")
			assert.Equal(t, tc.kind, d.Kind, "kind")
			assert.Equal(t, tc.origin, d.Origin, "origin result")
			assert.Equal(t, tc.matched, d.Matched, "matched element")
			if tc.action == ActionAnswer {
				assert.Equal(t, tc.status, d.Status, "status")
				assert.Equal(t, tc.answer, headerList(d.Headers), "answer headers")
			} else {
				assert.Zero(t, d.Headers.Len(), "headers outside an answer")
			}
			if tc.action != ActionDecorate {
				return
			}
			assert.Equal(t, tc.set, headerList(rd.Set), "set headers")
			assert.Equal(t, tc.appendVary, rd.AppendVary, "append vary")
			assert.Equal(t, tc.removeACAO, rd.RemoveAllowOrigin, "remove ACAO")
		})
	}
}

func TestUnusable(t *testing.T) {
	p := Unusable(assert.AnError)
	assert.Equal(t, assert.AnError, p.Err())
	assert.Error(t, Unusable(nil).Err())
	assert.NoError(t, mustCompile(t, `{}`).Err())

	tests := []struct {
		name   string
		req    Request
		action Action
		kind   Kind
		status int
	}{
		{"no origin", actual(""), ActionPass, KindIgnored, 0},
		{"preflight", withACRH(preflight("https://a.test"), "x-a"), ActionAnswer, KindPreflightAnswered, 403},
		{"actual", actual("https://a.test"), ActionDecorate, KindActual, 0},
		{"OPTIONS without ACRM", Request{Method: "OPTIONS", Origin: "https://a.test"}, ActionDecorate, KindActual, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Decide(&tt.req)
			assert.Equal(t, tt.action, d.Action)
			assert.Equal(t, tt.kind, d.Kind)
			assert.Equal(t, tt.status, d.Status)
			assert.Zero(t, d.Headers.Len())
			assert.Equal(t, -1, d.Matched)
			if tt.req.Origin == "" {
				assert.Equal(t, OriginAbsent, d.Origin)
			} else {
				assert.Equal(t, OriginRejected, d.Origin)
			}
		})
	}
	d := p.Decide(&Request{Method: "GET", Origin: "https://a.test"})
	assert.Equal(t, ResponseDecision{RemoveAllowOrigin: true}, p.Decorate(&d, false))
}

func TestVaryListsOrigin(t *testing.T) {
	tests := []struct {
		value string
		want  bool
	}{
		{"Origin", true},
		{"origin", true},
		{"Accept-Encoding, ORIGIN", true},
		{"accept-encoding,\torigin\t", true},
		{"*", true},
		{" * ", true},
		{"", false},
		{"Accept-Encoding", false},
		{"Origins", false},
		{"X-Origin", false},
		{"Origin-Agent-Cluster, Accept", false},
		{",,", false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, VaryListsOrigin(tt.value), "VaryListsOrigin(%q)", tt.value)
	}
}

func TestIsPreflight(t *testing.T) {
	assert.True(t, IsPreflight(&Request{Method: "OPTIONS", Origin: "o", HasRequestMethod: true}))
	assert.False(t, IsPreflight(&Request{Method: "OPTIONS", Origin: "", HasRequestMethod: true}))
	assert.False(t, IsPreflight(&Request{Method: "OPTIONS", Origin: "o"}))
	assert.False(t, IsPreflight(&Request{Method: "GET", Origin: "o", HasRequestMethod: true}))
	assert.False(t, IsPreflight(&Request{Method: "Options", Origin: "o", HasRequestMethod: true}))
}

// TestZeroAllocs asserts that evaluation does not allocate on its four paths, for every kind of
// origins element.
func TestZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector (sync.Pool drops items at random)")
	}
	policies := map[string]string{
		"allow-all":   `{}`,
		"credentials": `{"credentials": true, "exposed_headers": ["x-a"]}`,
		"single":      `{"origins": ["https://a.test"]}`,
		"list":        `{"origins": ["https://b.test", "https://a.test", "https://*.c.test", "^https://d\\.test$"], "credentials": true, "max_age": 60, "headers": "x-a"}`,
		"many":        manyLiterals(100),
		"star":        `{"origins": ["https://b.test", "*"], "credentials": true}`,
		"regex":       `{"origins": ["https://(a|b)\\.test", "c\\.test"]}`,
	}
	requests := map[string]Request{
		"allowed preflight": withACRH(preflight("https://a.test:443"), "x-a, x-b"),
		"allowed actual":    actual("https://a.test"),
		"rejected origin":   actual("https://evil.test"),
		"no origin":         actual(""),
	}
	for pname, policy := range policies {
		p := mustCompile(t, policy)
		for rname, req := range requests {
			allocs := testing.AllocsPerRun(100, func() {
				d := p.Decide(&req)
				if d.Action == ActionDecorate {
					p.Decorate(&d, false)
				}
			})
			assert.Zero(t, allocs, "%s / %s", pname, rname)
		}
	}
}
