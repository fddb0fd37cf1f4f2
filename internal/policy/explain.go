package policy

import (
	"fmt"
	"strings"
)

// Explanation is the reasoning behind one request's treatment, for operators asking "why was
// this request treated this way?" (`cors-extproc explain`). Its outcome is what Decide and
// Decorate return, and every step is told from that outcome: which element matched is the
// decision's Matched, what is granted is the decision's headers. The narration matches nothing
// itself, so it cannot disagree with the server; the steps cite the semantics sections.
type Explanation struct {
	Steps    []string
	Decision RequestDecision
	// Response is the decoration of the actual response, when Decision.Action is
	// ActionDecorate.
	Response ResponseDecision
}

// Explain decides r as the server would and explains each step: the classification, each
// origins element tried, the credentials rule, and what is granted. upstreamVaryListsOrigin is
// as for Decorate. Unlike Decide it allocates; it is not meant for the request path.
func (p *Policy) Explain(r *Request, upstreamVaryListsOrigin bool) Explanation {
	e := Explanation{Decision: p.Decide(r)}
	d := &e.Decision
	if d.Action == ActionDecorate {
		e.Response = p.Decorate(d, upstreamVaryListsOrigin)
	}
	say := func(format string, args ...any) { e.Steps = append(e.Steps, fmt.Sprintf(format, args...)) }
	preflight := d.Kind == KindPreflightAnswered || d.Kind == KindPreflightForwarded
	if p.err != nil {
		say("the policy is unusable (section 10): %v", p.err)
		switch {
		case preflight:
			say("a preflight is answered %d with no CORS headers", d.Status)
		case d.Action == ActionPass:
			say("a request without an Origin passes untouched, so same-origin traffic keeps working")
		default:
			say("the actual response loses any upstream access-control-allow-origin; nothing is granted")
		}
		return e
	}
	switch {
	case preflight:
		say("preflight: method OPTIONS with an Origin and access-control-request-method %q (section 6)", r.RequestMethod)
	case r.Method == "OPTIONS" && r.Origin == "":
		say("actual request: OPTIONS without an Origin is not a preflight (section 6)")
	case r.Method == "OPTIONS":
		say("actual request: OPTIONS without access-control-request-method is not a preflight (section 6)")
	default:
		say("actual request: method %s (section 6)", r.Method)
	}
	switch d.Kind {
	case KindPreflightForwarded:
		say("preflight_continue: the preflight goes upstream and its response is left as it is (section 6)")
	case KindIgnored:
		say("no Origin and allow_origin_absent is false: no CORS treatment at all (section 6)")
	default:
		p.explainOrigin(r.Origin, d, say)
		p.explainCredentials(r.Origin, d, say)
		say("%s", explainGrant(d, &e.Response))
	}
	if p.reportOnly {
		say("report_only: this decision is counted and logged, but the request and response pass untouched")
	}
	return e
}

// explainOrigin tells how sections 2 to 4 treated the request Origin o, from the decision d.
func (p *Policy) explainOrigin(o string, d *RequestDecision, say func(string, ...any)) {
	comma := strings.IndexByte(o, ',') >= 0
	switch {
	case o != "" && comma && d.Origin == OriginRejected && (p.allowAll || p.star >= 0):
		say("the Origin %q contains a comma (two Origin headers joined): it is never echoed, so the request is answered as if it had no Origin (section 2)", o)
		return
	case p.allowAll && d.Matched >= 0:
		say("origins[%d] \"*\": every origin is allowed (section 4.1)", d.Matched)
		return
	case p.allowAll:
		say("origins allows every origin: it is unset, empty or [\"*\"] (section 4.1)")
		return
	case p.single != "":
		verdict := "is absent"
		switch d.Origin {
		case OriginAllowed:
			verdict = "equals it once normalized"
		case OriginRejected:
			verdict = "differs from it, so the browser will refuse the response"
		}
		say("origins is the single literal %q: access-control-allow-origin is that literal whatever the Origin, with Vary: Origin (section 4.3); the Origin %s", p.single, verdict)
		if d.Matched >= 0 {
			say("origins[%d] %q: matches", d.Matched, p.Element(d.Matched))
		}
		return
	case o == "":
		say("no Origin (an empty one counts as absent, section 2): Vary: Origin, no access-control-allow-origin (section 4.5)")
		return
	case comma && d.Matched < 0:
		say("the Origin %q contains a comma (two Origin headers joined): it matches no element (section 2)", o)
		return
	}
	say("the Origin %q is normalized to %q (section 3)", o, normalizeOrigin(o))
	for _, el := range p.origins {
		if el.index != d.Matched {
			say("origins[%d] %s: does not match", el.index, describeElement(&el))
			continue
		}
		if el.kind == kindStar {
			say("origins[%d] \"*\": every Origin is allowed and the policy counts as allow-all (section 4.4)", el.index)
			return
		}
		say("origins[%d] %s: matches", el.index, describeElement(&el))
		if p.star >= 0 {
			say("the list holds \"*\", so the policy counts as allow-all (section 4.4)")
		} else {
			say("the first matching element wins: access-control-allow-origin is the normalized Origin (section 4.4)")
		}
		return
	}
	say("no element matches: no access-control-allow-origin, and any upstream one is removed (section 4.5)")
}

// describeElement names an origins element's class and how it is compared (section 3).
func describeElement(el *element) string {
	switch el.kind {
	case kindLiteral:
		return fmt.Sprintf("%q (literal, normalized %q)", el.text, el.norm)
	case kindWildcard:
		return fmt.Sprintf("%q (wildcard subdomain: one or more labels in front)", el.text)
	case kindRegex:
		subject := "the host"
		if el.matcher.pattern.wholeOrigin {
			subject = "scheme://host[:port]"
		}
		return fmt.Sprintf("%q (regex, anchored as a whole, against %s)", el.text, subject)
	}
	return fmt.Sprintf("%q", el.text)
}

// explainCredentials tells which rule of section 5 the decision d followed.
func (p *Policy) explainCredentials(o string, d *RequestDecision, say func(string, ...any)) {
	allowAll := p.allowAll || p.star >= 0 && d.Origin == OriginAllowed
	switch {
	case !p.credentials:
		say("credentials is false: no access-control-allow-credentials is added (section 5)")
	case allowAll && d.credentials && d.allowOrigin == o:
		say("credentials with every origin allowed: the Origin is echoed as sent, with Vary: Origin and access-control-allow-credentials: true (section 5)")
	case p.allowAll:
		say("credentials with every origin allowed and no Origin to echo: access-control-allow-origin is *, without credentials, with Vary: Origin (section 5)")
	default:
		say("credentials is true: access-control-allow-credentials: true is sent, whether or not the Origin was allowed (section 5)")
	}
}

// explainGrant sums up what the decision grants, from its headers (section 7) or its
// decoration (section 8).
func explainGrant(d *RequestDecision, rd *ResponseDecision) string {
	var parts []string
	if d.Action == ActionAnswer {
		for i := range d.Headers.Len() {
			h := d.Headers.At(i)
			parts = append(parts, fmt.Sprintf("%s: %s", h.Name, h.Value))
		}
		return fmt.Sprintf("the preflight is answered %d with %s (section 7)", d.Status, listOrNone(parts))
	}
	for i := range rd.Set.Len() {
		h := rd.Set.At(i)
		parts = append(parts, fmt.Sprintf("set %s: %s", h.Name, h.Value))
	}
	if rd.AppendVary {
		parts = append(parts, "add vary: "+VaryOrigin)
	} else if d.varyOrigin {
		parts = append(parts, "no vary added: the upstream's already lists Origin or *")
	}
	if rd.RemoveAllowOrigin {
		parts = append(parts, "remove "+HeaderAllowOrigin)
	}
	return fmt.Sprintf("the actual response gets %s (section 8)", listOrNone(parts))
}

func listOrNone(parts []string) string {
	if len(parts) == 0 {
		return "no CORS header"
	}
	return strings.Join(parts, "; ")
}
