package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

// call is one fetch made by the page's JavaScript.
type call struct {
	// API names the route whose host is called ("simple" calls simple.api.example.test); empty
	// calls the page's own origin.
	API string
	// Path follows /c/<case>/ in the URL. The prefix ties every request the front sees to its
	// case, and keeps the browser's preflight cache (keyed by URL) from carrying over between
	// cases.
	Path string
	// Init is fetch's second argument: method, headers, body, credentials.
	Init map[string]any
	// Read lists response headers the page tries to read.
	Read []string
	// Wait is a pause before the call.
	Wait time.Duration
}

// url is the address the page fetches for case name.
func (c call) url(name string) string {
	p := "/c/" + name + "/" + c.Path
	if c.API == "" {
		return p
	}
	return "http://" + c.API + apiDomain + p
}

// browserCase is one thing the browser must allow or refuse.
type browserCase struct {
	Group, Name string
	// Page is the origin whose page makes the calls.
	Page string
	// Grant is a permission the page's origin is given before the page loads (DevTools
	// Browser.setPermission), as a user answering the browser's prompt would.
	Grant string
	// Want says in words what must happen, for the results page.
	Want  string
	Calls []call
	Check check
	// RealEnvoyOnly: the case calls a route Envoy answers itself (ownReply), which only the
	// real-Envoy front makes; the envoytest front lists it as not played.
	RealEnvoyOnly bool
}

// caseRun is what happened in one case.
type caseRun struct {
	Case browserCase
	// Out holds what the page's JavaScript got, one per call.
	Out []outcome
	// Seen holds the exchanges of the case in the order they reached the front: what Chromium
	// sent and got, joined to what the front side did (wire_test.go).
	Seen []exchange
	// Console holds what Chromium logged about the case's URLs.
	Console []string
	svc     *servicetest.Service
	// Note says what a check observed beyond its verdict.
	Note string
	// Observed: the case records what the browser does rather than judging it.
	Observed bool
	// NotPlayed: the front cannot play the case (RealEnvoyOnly on the envoytest front).
	NotPlayed bool
	Err       error
}

// check judges a case; nil is a pass.
type check func(r *caseRun) error

func checks(cs ...check) check {
	return func(r *caseRun) error {
		for _, c := range cs {
			if err := c(r); err != nil {
				return err
			}
		}
		return nil
	}
}

// readable: fetch i resolved with a 2xx status, so the page read the response.
func readable(i int) check {
	return func(r *caseRun) error {
		o := r.Out[i]
		switch {
		case !o.Resolved:
			return fmt.Errorf("call %d: the page could not read the response: %s", i+1, o.Error)
		case o.Status < 200 || o.Status > 299:
			return fmt.Errorf("call %d: the page read status %d", i+1, o.Status)
		}
		return nil
	}
}

// readStatus: fetch i resolved, and the page read one of the statuses.
func readStatus(i int, statuses ...int) check {
	return func(r *caseRun) error {
		o := r.Out[i]
		switch {
		case !o.Resolved:
			return fmt.Errorf("call %d: the page could not read the response: %s", i+1, o.Error)
		case !slices.Contains(statuses, o.Status):
			return fmt.Errorf("call %d: the page read status %d, want %v", i+1, o.Status, statuses)
		}
		return nil
	}
}

// replied: the browser got exchange i of the case (in the order the front saw them) with status
// and Access-Control-Allow-Origin acao ("" for none), after the service handled its request
// phase without answering it.
func replied(i, status int, acao string) check {
	return func(r *caseRun) error {
		if i >= len(r.Seen) {
			return fmt.Errorf("%d request(s) of the case reached the front, want at least %d", len(r.Seen), i+1)
		}
		ex := r.Seen[i]
		if ex.Answered || ex.Unserved {
			return fmt.Errorf("%s %s: answered by the service (%v) or by Envoy without asking the service (%v), want the service asked, then Envoy's own reply",
				ex.Method, ex.Path, ex.Answered, ex.Unserved)
		}
		if ex.Status != status {
			return fmt.Errorf("%s %s: the browser got status %d, want %d", ex.Method, ex.Path, ex.Status, status)
		}
		if got := strings.Join(ex.Response.Values("access-control-allow-origin"), ", "); got != acao {
			return fmt.Errorf("%s %s: the browser got access-control-allow-origin %q, want %q", ex.Method, ex.Path, got, acao)
		}
		return nil
	}
}

// blocked: fetch i rejected with TypeError, which is how a browser reports a CORS failure.
func blocked(i int) check {
	return func(r *caseRun) error {
		o := r.Out[i]
		if o.Resolved {
			return fmt.Errorf("call %d: the page read the response (status %d, body %s); the browser should have blocked it", i+1, o.Status, o.Body)
		}
		if !strings.HasPrefix(o.Error, "TypeError") {
			return fmt.Errorf("call %d: fetch failed with %s, not a TypeError", i+1, o.Error)
		}
		return nil
	}
}

// bodyHas: the page read a body of fetch i containing s.
func bodyHas(i int, s string) check {
	return func(r *caseRun) error {
		if !strings.Contains(r.Out[i].Body, s) {
			return fmt.Errorf("call %d: body %q lacks %q", i+1, r.Out[i].Body, s)
		}
		return nil
	}
}

// jsHeader: the page's JavaScript read response header name of fetch i as want; nil means the
// browser hid it (headers.get returned null).
func jsHeader(i int, name string, want *string) check {
	return func(r *caseRun) error {
		got := r.Out[i].Headers[name]
		switch {
		case want == nil && got != nil:
			return fmt.Errorf("call %d: the page read %s: %q; it should be hidden", i+1, name, *got)
		case want != nil && got == nil:
			return fmt.Errorf("call %d: the page could not read %s (want %q)", i+1, name, *want)
		case want != nil && *got != *want:
			return fmt.Errorf("call %d: the page read %s: %q, want %q", i+1, name, *got, *want)
		}
		return nil
	}
}

// preflights: the front saw n preflights in the case.
func preflights(n int) check {
	return func(r *caseRun) error {
		got := 0
		for _, ex := range r.Seen {
			if ex.Preflight {
				got++
			}
		}
		if got != n {
			return fmt.Errorf("the browser sent %d preflight(s), want %d", got, n)
		}
		return nil
	}
}

// upstreamGot: n requests with method reached the upstream in the case.
func upstreamGot(method string, n int) check {
	return func(r *caseRun) error {
		got := 0
		for _, ex := range r.Seen {
			if ex.Method == method && ex.UpstreamCalled {
				got++
			}
		}
		if got != n {
			return fmt.Errorf("%d %s request(s) reached the upstream, want %d", got, method, n)
		}
		return nil
	}
}

// sent: the browser got header name with value want ("" for absent) on the case's first
// exchange with method.
func sent(method, name, want string) check {
	return func(r *caseRun) error {
		ex, err := first(r, method)
		if err != nil {
			return err
		}
		if got := strings.Join(ex.Response.Values(name), ", "); got != want {
			return fmt.Errorf("%s %s: the browser got %s: %q, want %q", method, ex.Path, name, got, want)
		}
		return nil
	}
}

// upstreamSent: the upstream answered the case's first exchange with method with header name
// set to want; it shows what the service changed.
func upstreamSent(method, name, want string) check {
	return func(r *caseRun) error {
		ex, err := first(r, method)
		if err != nil {
			return err
		}
		if got := strings.Join(ex.UpstreamHeader.Values(name), ", "); got != want {
			return fmt.Errorf("%s %s: the upstream answered %s: %q, want %q", method, ex.Path, name, got, want)
		}
		return nil
	}
}

// answeredWith: the service answered the case's first preflight itself with status.
func answeredWith(status int) check {
	return func(r *caseRun) error {
		ex, err := first(r, "OPTIONS")
		switch {
		case err != nil:
			return err
		case !ex.Answered:
			return fmt.Errorf("preflight %s: passed to the upstream, want answered by the service", ex.Path)
		case ex.Status != status:
			return fmt.Errorf("preflight %s: answered %d, want %d", ex.Path, ex.Status, status)
		}
		return nil
	}
}

// cookieSent: the browser sent the cookie the case's login set with the request to path.
func cookieSent(path string) check {
	return func(r *caseRun) error {
		want := "session=" + r.Case.Name
		for _, ex := range r.Seen {
			if strings.HasSuffix(ex.Path, "/"+path) {
				if got := ex.Request.Get("Cookie"); !strings.Contains(got, want) {
					return fmt.Errorf("%s: the browser sent Cookie %q, want it to hold %q", ex.Path, got, want)
				}
				return nil
			}
		}
		return fmt.Errorf("no request to %s reached the front", path)
	}
}

// logged: the service logged one line holding every part.
func logged(parts ...string) check {
	return func(r *caseRun) error {
		if !r.svc.Logged(parts...) {
			return fmt.Errorf("the service logged no line with %q", parts)
		}
		return nil
	}
}

func first(r *caseRun, method string) (exchange, error) {
	for _, ex := range r.Seen {
		if ex.Method == method {
			return ex, nil
		}
	}
	return exchange{}, fmt.Errorf("no %s request of the case reached the front", method)
}

// privateNetwork records whether Chromium sent Access-Control-Request-Private-Network, and holds
// the service to the policy's private_network only when it did: a request the browser does not
// make is not faked. In that case, the case only records what happened.
func privateNetwork(r *caseRun) error {
	var with []exchange
	for _, ex := range r.Seen {
		if ex.Request.Get("Access-Control-Request-Private-Network") != "" {
			with = append(with, ex)
		}
	}
	if len(with) == 0 {
		r.Observed = true
		r.Note = fmt.Sprintf("Access-Control-Request-Private-Network: not sent by this Chromium (%d request(s) of the case reached the front, none with it)",
			len(r.Seen))
		return nil
	}
	for _, ex := range with {
		if got := strings.Join(ex.Response.Values("access-control-allow-private-network"), ", "); ex.Preflight && got != "true" {
			return fmt.Errorf("preflight %s carried Access-Control-Request-Private-Network: %q; answered Access-Control-Allow-Private-Network %q, want \"true\"",
				ex.Path, ex.Request.Get("Access-Control-Request-Private-Network"), got)
		}
	}
	r.Note = fmt.Sprintf("Access-Control-Request-Private-Network sent on %d request(s) and answered with Access-Control-Allow-Private-Network: true", len(with))
	return nil
}

func ptr(s string) *string { return &s }

// JSON PUT with a custom header: not a simple request, so the browser preflights it.
var putJSON = map[string]any{
	"method":  "PUT",
	"headers": map[string]string{"content-type": "application/json", "x-request-id": "e2e-1"},
	"body":    `{"hello":"browser"}`,
}

// putWithID is a PUT whose only non-safelisted header is x-request-id.
var putWithID = map[string]any{"method": "PUT", "headers": map[string]string{"x-request-id": "e2e-2"}}

var credentialed = map[string]any{"credentials": "include"}

var loginCall = map[string]any{"method": "POST", "credentials": "include"}

// ownReplyGroup is the group of the cases whose route Envoy answers itself.
const ownReplyGroup = "Envoy's own replies after the request phase (real Envoy only)"

// ownReplyCases: for each reply Envoy makes itself after ext_proc's request phase (ownReply),
// a credentialed fetch from an origin the policy grants reads the status and Envoy's own body,
// and from an origin it rejects fails with TypeError though the same reply reached the browser.
// The header filters after ext_proc write the grant from the request phase's metadata
// (docs/envoy-extproc.md section 7). The rate-limited route's bucket holds one token an hour:
// each of its cases calls twice, the first call taking the token if one is left, so the second
// is always the 429 whichever case runs first.
func ownReplyCases() []browserCase {
	type reply struct {
		api, name, what string
		status          int
		body            string
	}
	var out []browserCase
	for _, rp := range []reply{
		{"down", "503", "no healthy upstream (router 503)", http.StatusServiceUnavailable, "no healthy upstream"},
		{"slow", "504", "upstream timeout (router 504)", http.StatusGatewayTimeout, "upstream request timeout"},
		{"direct", "direct", "direct_response " + strconv.Itoa(directStatus), directStatus, directBody},
		{"denied", "403", "403 from RBAC after ext_proc", http.StatusForbidden, "RBAC: access denied"},
		{"limited", "429", "429 from the local rate limit after ext_proc", http.StatusTooManyRequests, "local_rate_limited"},
	} {
		c := call{API: rp.api, Path: "data", Init: credentialed}
		calls, last := []call{c}, 0
		allowedChecks := []check{readStatus(0, rp.status), bodyHas(0, rp.body)}
		if rp.api == "limited" {
			// The filter's x-ratelimit-limit, which the policy exposes.
			c.Read = []string{"x-ratelimit-limit"}
			calls, last = []call{c, c}, 1
			allowedChecks = []check{readStatus(0, http.StatusOK, rp.status), readStatus(1, rp.status), bodyHas(1, rp.body),
				jsHeader(1, "x-ratelimit-limit", ptr("1"))}
		}
		out = append(out,
			browserCase{Group: ownReplyGroup, Name: "own-" + rp.name + "-allowed", Page: appOrigin, RealEnvoyOnly: true,
				Want:  rp.what + ": the granted origin's credentialed fetch reads the status and Envoy's body",
				Calls: calls,
				Check: checks(append(allowedChecks, replied(last, rp.status, appOrigin), sent("GET", "access-control-allow-credentials", "true"))...)},
			browserCase{Group: ownReplyGroup, Name: "own-" + rp.name + "-rejected", Page: evilOrigin, RealEnvoyOnly: true,
				Want:  rp.what + ": a rejected origin gets no Access-Control-Allow-Origin, so its fetch fails",
				Calls: calls,
				Check: checks(blocked(last), replied(last, rp.status, ""))},
		)
	}
	return out
}

// browserCases are the cases, in the order they run; publicOrigin is the page origin on the
// front's public port. Each blocked case also checks at the front that the request did reach it,
// so that a refusal is the browser's CORS check, not a network failure.
func browserCases(publicOrigin string) []browserCase {
	return append([]browserCase{
		{Group: "Simple GET", Name: "simple-allowed", Page: appOrigin,
			Want:  "readable from an allowed origin; no preflight",
			Calls: []call{{API: "simple", Path: "data"}},
			Check: checks(readable(0), bodyHas(0, `"method":"GET"`), preflights(0), sent("GET", "access-control-allow-origin", appOrigin))},
		{Group: "Simple GET", Name: "simple-other-origin", Page: evilOrigin,
			Want:  "blocked from another origin, though the request reached the upstream",
			Calls: []call{{API: "simple", Path: "data"}},
			Check: checks(blocked(0), upstreamGot("GET", 1), sent("GET", "access-control-allow-origin", ""))},

		{Group: "Preflighted PUT", Name: "put-allowed", Page: appOrigin,
			Want:  "PUT with x-request-id and a JSON body: preflight answered by the service, then readable",
			Calls: []call{{API: "put", Path: "item", Init: putJSON}},
			Check: checks(readable(0), bodyHas(0, `"request_id":"e2e-1"`), bodyHas(0, `hello`), preflights(1), answeredWith(204), upstreamGot("PUT", 1))},
		{Group: "Preflighted PUT", Name: "put-other-origin", Page: evilOrigin,
			Want:  "blocked by origin (a single literal origin is sent as it is, whatever the Origin): the PUT is never sent",
			Calls: []call{{API: "put", Path: "item", Init: putJSON}},
			Check: checks(blocked(0), preflights(1), sent("OPTIONS", "access-control-allow-origin", appOrigin), upstreamGot("PUT", 0))},
		{Group: "Preflighted PUT", Name: "put-method-not-allowed", Page: appOrigin,
			Want: "blocked by method: DELETE is not in methods [GET, PUT]",
			Calls: []call{{API: "put", Path: "item", Init: map[string]any{
				"method": "DELETE", "headers": map[string]string{"x-request-id": "e2e-3"}}}},
			Check: checks(blocked(0), preflights(1), sent("OPTIONS", "access-control-allow-methods", "GET,PUT"), upstreamGot("DELETE", 0))},
		{Group: "Preflighted PUT", Name: "put-header-not-allowed", Page: appOrigin,
			Want: "blocked by header: x-debug is not in headers [content-type, x-request-id]",
			Calls: []call{{API: "put", Path: "item", Init: map[string]any{
				"method": "PUT", "headers": map[string]string{"x-debug": "1"}}}},
			Check: checks(blocked(0), preflights(1), sent("OPTIONS", "access-control-allow-headers", "content-type,x-request-id"), upstreamGot("PUT", 0))},

		{Group: "Credentials", Name: "creds-allowed", Page: appOrigin,
			Want: "credentials: true for this origin: the login's cookie goes along and the response is readable",
			Calls: []call{{API: "creds", Path: "login", Init: loginCall},
				{API: "creds", Path: "whoami", Init: credentialed}},
			Check: checks(readable(0), readable(1), cookieSent("whoami"), bodyHas(1, `"cookie":"session=creds-allowed"`),
				sent("GET", "access-control-allow-credentials", "true"))},
		{Group: "Credentials", Name: "creds-not-in-policy", Page: appOrigin,
			Want: "credentials unset: the cookie still reaches the upstream, but the page cannot read the answer",
			Calls: []call{{API: "nocreds", Path: "login", Init: loginCall},
				{API: "nocreds", Path: "whoami", Init: credentialed}},
			Check: checks(blocked(1), cookieSent("whoami"), sent("GET", "access-control-allow-credentials", ""))},
		{Group: "Credentials", Name: "creds-other-origin", Page: evilOrigin,
			Want:  "credentials: true, but for another origin: blocked",
			Calls: []call{{API: "creds", Path: "whoami", Init: credentialed}},
			Check: checks(blocked(0), upstreamGot("GET", 1), sent("GET", "access-control-allow-origin", appOrigin),
				sent("GET", "access-control-allow-credentials", "true"))},
		{Group: "Credentials", Name: "creds-allow-all-reflects", Page: evilOrigin,
			Want: "allow all with credentials: the origin is reflected, so any site reads credentialed answers",
			Calls: []call{{API: "anycreds", Path: "login", Init: loginCall},
				{API: "anycreds", Path: "whoami", Init: credentialed}},
			Check: checks(readable(0), readable(1), bodyHas(1, `"cookie":"session=creds-allow-all-reflects"`),
				sent("GET", "access-control-allow-origin", evilOrigin), sent("GET", "access-control-allow-credentials", "true"),
				sent("GET", "vary", "Origin"))},

		{Group: "Exposed headers", Name: "expose-configured", Page: appOrigin,
			Want:  "x-total-count is exposed and readable; x-secret is not",
			Calls: []call{{API: "expose", Path: "list", Read: []string{"x-total-count", "x-secret"}}},
			Check: checks(readable(0), jsHeader(0, "x-total-count", ptr("42")), jsHeader(0, "x-secret", nil))},
		{Group: "Exposed headers", Name: "expose-not-configured", Page: appOrigin,
			Want:  "no exposed_headers: x-total-count is sent but hidden from JavaScript",
			Calls: []call{{API: "simple", Path: "list", Read: []string{"x-total-count"}}},
			Check: checks(readable(0), jsHeader(0, "x-total-count", nil), sent("GET", "x-total-count", "42"))},

		{Group: "max_age", Name: "maxage-600", Page: appOrigin,
			Want: "max_age 600: the same PUT again after 6 s (past Chromium's 5 s default) sends no second preflight",
			Calls: []call{{API: "maxage", Path: "item", Init: putWithID},
				{API: "maxage", Path: "item", Init: putWithID, Wait: 6 * time.Second}},
			Check: checks(readable(0), readable(1), preflights(1), sent("OPTIONS", "access-control-max-age", "600"), upstreamGot("PUT", 2))},
		{Group: "max_age", Name: "maxage-0", Page: appOrigin,
			Want: "max_age 0: the same PUT again at once is preflighted again",
			Calls: []call{{API: "maxage0", Path: "item", Init: putWithID},
				{API: "maxage0", Path: "item", Init: putWithID}},
			Check: checks(readable(0), readable(1), preflights(2), upstreamGot("PUT", 2))},

		{Group: "preflight_continue", Name: "continue-upstream-allows", Page: appOrigin,
			Want: "the upstream answers the preflight (PATCH, x-upstream-ok) and the browser follows it",
			Calls: []call{{API: "continue", Path: "item", Init: map[string]any{
				"method": "PATCH", "headers": map[string]string{"x-upstream-ok": "1"}}}},
			Check: checks(readable(0), preflights(1), upstreamGot("OPTIONS", 1),
				sent("OPTIONS", "access-control-allow-methods", upstreamAllowMethods), upstreamGot("PATCH", 1))},
		{Group: "preflight_continue", Name: "continue-upstream-refuses", Page: appOrigin,
			Want: "PUT is in the policy's default methods but not in the upstream's answer: blocked",
			Calls: []call{{API: "continue", Path: "item", Init: map[string]any{
				"method": "PUT", "headers": map[string]string{"x-upstream-ok": "1"}}}},
			Check: checks(blocked(0), upstreamGot("OPTIONS", 1), upstreamGot("PUT", 0))},

		{Group: "Wildcard subdomain http://*.sub.example.test", Name: "wild-subdomain", Page: "http://a.sub.example.test",
			Want:  "a.sub.example.test matches",
			Calls: []call{{API: "wild", Path: "data"}},
			Check: checks(readable(0), sent("GET", "access-control-allow-origin", "http://a.sub.example.test"))},
		{Group: "Wildcard subdomain http://*.sub.example.test", Name: "wild-deeper", Page: "http://x.y.sub.example.test",
			Want:  "x.y.sub.example.test matches",
			Calls: []call{{API: "wild", Path: "data"}},
			Check: checks(readable(0))},
		{Group: "Wildcard subdomain http://*.sub.example.test", Name: "wild-bare-domain", Page: "http://sub.example.test",
			Want:  "sub.example.test itself does not match",
			Calls: []call{{API: "wild", Path: "data"}},
			Check: checks(blocked(0), upstreamGot("GET", 1))},
		{Group: "Wildcard subdomain http://*.sub.example.test", Name: "wild-lookalike", Page: "http://evilsub.example.test",
			Want:  "evilsub.example.test does not match",
			Calls: []call{{API: "wild", Path: "data"}},
			Check: checks(blocked(0), upstreamGot("GET", 1))},

		{Group: `Regex http://(app|admin)\.example\.test`, Name: "regex-match", Page: adminOrigin,
			Want:  "admin.example.test matches",
			Calls: []call{{API: "regex", Path: "data"}},
			Check: checks(readable(0), sent("GET", "access-control-allow-origin", adminOrigin))},
		{Group: `Regex http://(app|admin)\.example\.test`, Name: "regex-suffix-attack", Page: "http://app.example.test.evil.test",
			Want:  "app.example.test.evil.test does not match: the regex is anchored",
			Calls: []call{{API: "regex", Path: "data"}},
			Check: checks(blocked(0), upstreamGot("GET", 1))},

		{Group: "Unusable policy (typo: credential)", Name: "broken-cross-origin", Page: appOrigin,
			Want:  "blocked, though the upstream sends its own Access-Control-Allow-Origin: * (the service removes it)",
			Calls: []call{{API: "broken", Path: "data"}},
			Check: checks(blocked(0), upstreamSent("GET", "access-control-allow-origin", "*"), sent("GET", "access-control-allow-origin", ""))},
		{Group: "Unusable policy (typo: credential)", Name: "broken-preflight", Page: appOrigin,
			Want:  "preflight answered 403 without CORS headers: blocked",
			Calls: []call{{API: "broken", Path: "item", Init: putWithID}},
			Check: checks(blocked(0), answeredWith(403), sent("OPTIONS", "access-control-allow-origin", ""), upstreamGot("PUT", 0))},
		{Group: "Unusable policy (typo: credential)", Name: "broken-same-origin", Page: "http://broken" + apiDomain,
			Want:  "same-origin call on the same route works; the service logged the unusable policy",
			Calls: []call{{Path: "data"}},
			Check: checks(readable(0), bodyHas(0, `"method":"GET"`), logged("unusable CORS policy", `"route":"broken"`))},

		{Group: "Private Network Access", Name: "pna-loopback", Page: appOrigin,
			Want:  "page and API on loopback: record whether Chromium asks for private network access",
			Calls: []call{{API: "pna", Path: "item", Init: putWithID}},
			Check: checks(readable(0), privateNetwork)},
		{Group: "Private Network Access", Name: "pna-public-page", Page: publicOrigin,
			Want:  "secure page marked public (--ip-address-space-overrides), API on loopback: record what Chromium does",
			Calls: []call{{API: "pna", Path: "item", Init: putWithID}},
			Check: privateNetwork},
		{Group: "Private Network Access", Name: "pna-public-permitted", Page: publicOrigin, Grant: "loopback-network",
			Want:  "the same, with the loopback-network permission granted: record what Chromium sends",
			Calls: []call{{API: "pna", Path: "item", Init: putWithID}},
			Check: privateNetwork},
	}, ownReplyCases()...)
}
