package policy

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// originSeeds are request Origins and origins elements from the tables, plus odd shapes.
func originSeeds() []string {
	seeds := []string{"", "null", "https://a.test", "http://u:p@a.test:80/x?y#z", "http://[::1]:8080",
		"http://[::1", "https://a.test,https://b.test", "x//y//z", "https://a@b@c:443;p", "//:80"}
	for _, tc := range behaviourCases {
		seeds = append(seeds, tc.req.Origin)
	}
	return seeds
}

func FuzzNormalizeOrigin(f *testing.F) {
	for _, s := range originSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := normalizeOrigin(s)
		if again := normalizeOrigin(got); again != got {
			t.Fatalf("not idempotent: %q → %q → %q", s, got, again)
		}
		i := strings.Index(s, "//")
		if i < 0 {
			if got != s {
				t.Fatalf("%q has no // but became %q", s, got)
			}
			return
		}
		if !strings.HasPrefix(got, s[:i+2]) {
			t.Fatalf("%q lost its scheme: %q", s, got)
		}
		if strings.ContainsAny(got[i+2:], "/?#;@") {
			t.Fatalf("%q kept a path, query, fragment, parameters or user: %q", s, got)
		}
		if !strings.Contains(s[i+2:], "@") && !strings.HasPrefix(s, got) {
			t.Fatalf("%q without user information did not give a prefix: %q", s, got)
		}
	})
}

// policySeeds are the policy texts of the tables.
func policySeeds() []string {
	seeds := []string{`{}`, `{"origins": ["https://(bad", ""], "max_age": -1, "x": 1}`, `[]`, `{"ref": "a"}`}
	for _, tc := range behaviourCases {
		seeds = append(seeds, tc.policy)
	}
	return seeds
}

func FuzzCompile(f *testing.F) {
	for _, s := range policySeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		m, err := ParseJSON([]byte(text))
		if err != nil {
			if m != nil {
				t.Fatal("a map beside an error")
			}
			return
		}
		p, warns, err := Compile(m)
		for _, w := range warns {
			if w.Field == "" || w.Message == "" {
				t.Fatalf("warning without field or message: %#v", w)
			}
		}
		if err != nil {
			var inv *InvalidError
			if p != nil || !errors.As(err, &inv) || len(inv.Problems) == 0 {
				t.Fatalf("bad failure: %v, %v", p, err)
			}
			for _, fe := range inv.Problems {
				if fe.Message == "" || fe.Error() == "" {
					t.Fatalf("empty problem in %v", err)
				}
			}
			return
		}
		if p == nil || p.Err() != nil {
			t.Fatal("no usable policy without an error")
		}
		for _, r := range []Request{preflight("https://a.test"), actual("https://a.test"), actual("")} {
			checkDecision(t, p, &r, false)
		}
	})
}

// fuzzPolicy is a compiled policy with its origins elements, for the reference matcher.
type fuzzPolicy struct {
	p       *Policy
	origins []string
}

// fuzzPolicies are compiled once for FuzzDecide: every behaviour-case policy and an unusable one.
func fuzzPolicies(f *testing.F) []fuzzPolicy {
	var ps []fuzzPolicy
	seen := map[string]bool{}
	for _, tc := range behaviourCases {
		if seen[tc.policy] {
			continue
		}
		seen[tc.policy] = true
		m, err := ParseJSON([]byte(tc.policy))
		if err != nil {
			f.Fatal(err)
		}
		var origins []string
		if o, ok := m["origin"].(string); ok {
			origins = []string{o}
		}
		if list, ok := m["origins"].([]any); ok {
			for _, e := range list {
				origins = append(origins, e.(string))
			}
		}
		ps = append(ps, fuzzPolicy{p: mustCompile(f, tc.policy), origins: origins})
	}
	return append(ps, fuzzPolicy{p: Unusable(errors.New("bad policy"))})
}

func FuzzDecide(f *testing.F) {
	ps := fuzzPolicies(f)
	for i, tc := range behaviourCases {
		r := tc.req
		f.Add(uint8(i), r.Method, r.Origin, r.RequestMethod, r.HasRequestMethod, r.RequestHeaders,
			r.RequestPrivateNetwork, tc.upstreamVary)
	}
	f.Fuzz(func(t *testing.T, which uint8, method, origin, acrm string, hasACRM bool, acrh, acrpn string,
		upstreamVary bool) {
		fp := ps[int(which)%len(ps)]
		r := Request{Method: method, Origin: origin, RequestMethod: acrm, HasRequestMethod: hasACRM,
			RequestHeaders: acrh, RequestPrivateNetwork: acrpn}
		checkDecision(t, fp.p, &r, upstreamVary)
		d := fp.p.Decide(&r)
		if fp.p.Err() != nil || d.Action == ActionPass && d.Kind == KindIgnored {
			return
		}
		result, matched := referenceMatch(t, fp.origins, origin)
		if fp.p.credentials && (fp.p.allowAll || fp.p.star >= 0) && strings.Contains(origin, ",") {
			// Section 2: answered as if absent rather than echoed.
			result, matched = OriginRejected, -1
		}
		if d.Origin != result || d.Matched != matched {
			t.Fatalf("origins %q, Origin %q: got (%d, %d), the reference says (%d, %d)",
				fp.origins, origin, d.Origin, d.Matched, result, matched)
		}
		// The explanation names the element the decision matched, and no other.
		named := -1
		for _, s := range fp.p.Explain(&r, upstreamVary).Steps {
			if m := elementStep.FindStringSubmatch(s); m != nil {
				if named >= 0 {
					t.Fatalf("two elements named for Origin %q", origin)
				}
				named, _ = strconv.Atoi(m[1])
			}
		}
		if d.Kind != KindPreflightForwarded && named != d.Matched {
			t.Fatalf("origins %q, Origin %q: explain names %d, the decision matched %d", fp.origins, origin, named, d.Matched)
		}
	})
}

func FuzzNormalizeLiteral(f *testing.F) {
	for _, s := range originSeeds() {
		f.Add(s)
	}
	for _, tc := range behaviourCases {
		f.Add(tc.policy) // not origins, but odd text with "//" and ":" in it
	}
	f.Fuzz(func(t *testing.T, e string) {
		norm, problem := NormalizeLiteral(e)
		if !strings.Contains(e, "//") {
			if norm != e || problem != "" {
				t.Fatalf("%q has no // but gave %q, %q", e, norm, problem)
			}
			return
		}
		if again, p2 := NormalizeLiteral(norm); again != norm || p2 != "" && problem == "" {
			t.Fatalf("not idempotent: %q → %q (%q) → %q (%q)", e, norm, problem, again, p2)
		}
		var parts originParts
		if parseOrigin(norm, &parts) && (parts.scheme != strings.ToLower(parts.scheme) || parts.host != strings.ToLower(parts.host)) {
			t.Fatalf("%q: scheme or host of %q not lower-cased", e, norm)
		}
		if problem == "" && classify(e) == kindLiteral && e != "*" {
			// A valid literal is what a request Origin equal to its normal form matches.
			p, _, err := Compile(map[string]any{"origins": []any{e, "https://other.invalid"}})
			if err != nil {
				t.Fatalf("%q: valid literal, but %v", e, err)
			}
			if d := p.Decide(&Request{Method: "GET", Origin: norm}); d.Origin != OriginAllowed || d.Matched != 0 {
				if !strings.Contains(norm, ",") {
					t.Fatalf("%q (normalized %q) does not match the Origin %q: %+v", e, norm, norm, d)
				}
			}
		}
	})
}

// referenceMatch is the simplest reading of sections 2 to 4: each element in turn, classified
// and compiled on the spot, with none of Policy's shortcuts.
func referenceMatch(t *testing.T, origins []string, o string) (OriginResult, int) {
	switch {
	case o == "":
		return OriginAbsent, -1
	case len(origins) == 0:
		return OriginAllowed, -1
	}
	comma := strings.Contains(o, ",")
	var parts originParts
	parsed := parseOrigin(o, &parts)
	for i, e := range origins {
		var ok bool
		switch classify(e) {
		case kindStar:
			return OriginAllowed, i
		case kindLiteral:
			norm, _ := NormalizeLiteral(e)
			ok = normalizeOrigin(o) == norm
		case kindWildcard:
			norm, _ := NormalizeLiteral(e)
			w := newWildcard(norm)
			ok = parsed && w.match(&parts)
		case kindRegex:
			pat, err := compilePattern(e)
			if err != nil {
				t.Fatal(err)
			}
			ok = pat.match(o, &parts, parsed)
		}
		if ok && !comma {
			return OriginAllowed, i
		}
	}
	return OriginRejected, -1
}

// checkDecision checks the invariants of both phases for one request.
func checkDecision(t *testing.T, p *Policy, r *Request, upstreamVary bool) {
	t.Helper()
	d := p.Decide(r)
	preflight := IsPreflight(r)
	if (r.Origin == "") != (d.Origin == OriginAbsent) {
		t.Fatalf("origin result %d for Origin %q", d.Origin, r.Origin)
	}
	if d.Origin != OriginAllowed && d.Matched != -1 || d.Matched < -1 {
		t.Fatalf("matched %d with origin result %d", d.Matched, d.Origin)
	}
	wantAnswer := preflight && (p.err != nil || !p.preflightContinue)
	if (d.Action == ActionAnswer) != wantAnswer {
		t.Fatalf("action %d for preflight=%v", d.Action, preflight)
	}
	if d.Action != ActionAnswer && (d.Status != 0 || d.Headers.Len() != 0) {
		t.Fatalf("status or headers outside an answer: %+v", d)
	}
	if d.Action == ActionAnswer {
		if d.Status != 200 && d.Status != 204 && d.Status != 403 {
			t.Fatalf("status %d", d.Status)
		}
		if _, ok := d.Headers.Get(HeaderExposeHeaders); ok {
			t.Fatal("a preflight answer carries ACEH")
		}
		checkHeaders(t, p, r.Origin, &d.Headers)
	}
	if d.Action != ActionDecorate {
		return
	}
	if preflight {
		t.Fatal("a preflight is decorated")
	}
	rd := p.Decorate(&d, upstreamVary)
	checkHeaders(t, p, r.Origin, &rd.Set)
	_, hasACAO := rd.Set.Get(HeaderAllowOrigin)
	if hasACAO == rd.RemoveAllowOrigin {
		t.Fatalf("ACAO set %v and removed %v", hasACAO, rd.RemoveAllowOrigin)
	}
	if upstreamVary && rd.AppendVary {
		t.Fatal("Vary appended beside an upstream Vary listing Origin")
	}
	if _, ok := rd.Set.Get(HeaderVary); ok {
		t.Fatal("Vary set instead of appended")
	}
	if p.err != nil && !(rd.Set.Len() == 0 && !rd.AppendVary && rd.RemoveAllowOrigin) {
		t.Fatalf("unusable policy decorated %+v", rd)
	}
}

// checkHeaders checks one list of header fields: known, non-empty and unique names, non-empty
// values, and an ACAO that is "*", the single literal, or the request Origin as sent or
// normalized.
func checkHeaders(t *testing.T, p *Policy, origin string, h *Headers) {
	t.Helper()
	if p.err != nil && h.Len() != 0 {
		t.Fatal("an unusable policy produced headers")
	}
	seen := map[string]bool{}
	for i := range h.Len() {
		f := h.At(i)
		if f.Name == "" || f.Value == "" || seen[f.Name] {
			t.Fatalf("bad or repeated field %q: %q", f.Name, f.Value)
		}
		seen[f.Name] = true
		switch f.Name {
		case HeaderAllowOrigin:
			if f.Value != "*" && f.Value != p.single && f.Value != origin && f.Value != normalizeOrigin(origin) {
				t.Fatalf("ACAO %q for Origin %q", f.Value, origin)
			}
			if f.Value != p.single && f.Value != "*" && strings.Contains(f.Value, ",") {
				t.Fatalf("a comma-joined Origin %q echoed", origin)
			}
		case HeaderAllowCredentials:
			if !p.credentials || f.Value != "true" {
				t.Fatalf("ACAC %q", f.Value)
			}
		case HeaderVary:
			if f.Value != VaryOrigin {
				t.Fatalf("Vary %q", f.Value)
			}
		case HeaderAllowPrivateNetwork:
			if !p.privateNetwork || f.Value != "true" {
				t.Fatalf("ACAPN %q", f.Value)
			}
		case HeaderAllowMethods, HeaderAllowHeaders, HeaderExposeHeaders, HeaderMaxAge:
		default:
			t.Fatalf("unexpected header %q", f.Name)
		}
	}
}
