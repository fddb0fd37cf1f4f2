package policy

import (
	"fmt"
	"strings"
)

// Explanation is the reasoning behind one request's treatment, for operators asking "why was
// this request treated this way?" (`cors-extproc explain`). Its outcome is what Decide and
// Decorate return, called by Explain itself, so an explanation can never disagree with the
// server; the steps say why, citing the semantics sections.
type Explanation struct {
	Steps    []string
	Decision RequestDecision
	// Response is the decoration of the actual response, when Decision.Action is
	// ActionDecorate.
	Response ResponseDecision
}

// Explain decides r as the server would and explains each step: the classification, each
// origins element tried, the credentials rule. upstreamVaryListsOrigin is as for Decorate.
// Unlike Decide it allocates; it is not meant for the request path.
func (p *Policy) Explain(r *Request, upstreamVaryListsOrigin bool) Explanation {
	e := Explanation{Decision: p.Decide(r)}
	if e.Decision.Action == ActionDecorate {
		e.Response = p.Decorate(&e.Decision, upstreamVaryListsOrigin)
	}
	say := func(format string, args ...any) { e.Steps = append(e.Steps, fmt.Sprintf(format, args...)) }
	preflight := IsPreflight(r)
	if p.err != nil {
		say("the policy is unusable (section 10): %v", p.err)
		switch {
		case preflight:
			say("a preflight is answered 403 with no CORS headers")
		case r.Origin == "":
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
	switch {
	case preflight && p.preflightContinue:
		say("preflight_continue: the preflight goes upstream and its response is left as it is (section 6)")
	case r.Origin == "" && !p.allowOriginAbsent:
		say("no Origin and allow_origin_absent is false: no CORS treatment at all (section 6)")
	default:
		p.explainOrigin(r.Origin, say)
		p.explainCredentials(r.Origin, say)
	}
	if p.reportOnly {
		say("report_only: this decision is counted and logged, but the request and response pass untouched")
	}
	return e
}

// explainOrigin tells how sections 2 to 4 treat the request Origin o.
func (p *Policy) explainOrigin(o string, say func(string, ...any)) {
	switch {
	case p.allowAll:
		say("origins allows every origin: it is unset, empty or [\"*\"] (section 4.1)")
		return
	case p.single != "":
		verdict := "differs from it, so the browser will refuse the response"
		switch {
		case o == "":
			verdict = "is absent"
		case normalizeOrigin(o) == p.singleNorm:
			verdict = "equals it"
		}
		say("origins is the single literal %q: access-control-allow-origin is that literal whatever the Origin, with Vary: Origin (section 4.3); the Origin %s", p.single, verdict)
		return
	case o == "":
		say("no Origin (an empty one counts as absent, section 2): Vary: Origin, no access-control-allow-origin (section 4.5)")
		return
	case strings.IndexByte(o, ',') >= 0 && p.star < 0:
		say("the Origin %q contains a comma (two Origin headers joined): it matches no element (section 2)", o)
		return
	}
	var parts originParts
	parsed := parseOrigin(o, &parts)
	norm := o
	if parsed {
		norm = parts.norm
	}
	say("the Origin %q is normalized to %q (section 3)", o, norm)
	comma := strings.IndexByte(o, ',') >= 0
	for _, el := range p.origins {
		matched := false
		switch el.kind {
		case kindStar:
			say("origins[%d] \"*\": every Origin is allowed and the policy counts as allow-all (section 4.4)", el.index)
			return
		case kindLiteral:
			matched = !comma && el.norm == norm
			say("origins[%d] %q (literal, normalized %q): %s", el.index, el.text, el.norm, matchWord(matched))
		case kindWildcard:
			matched = !comma && el.matcher.match(o, &parts, parsed)
			say("origins[%d] %q (wildcard subdomain: one or more labels in front): %s", el.index, el.text, matchWord(matched))
		case kindRegex:
			subject := "the host"
			if el.matcher.pattern.wholeOrigin {
				subject = "scheme://host[:port]"
			}
			matched = !comma && el.matcher.match(o, &parts, parsed)
			say("origins[%d] %q (regex, anchored as a whole, against %s): %s", el.index, el.text, subject, matchWord(matched))
		}
		if matched {
			say("the first matching element wins: access-control-allow-origin is the normalized Origin %q, with Vary: Origin (section 4.4)", norm)
			return
		}
	}
	say("no element matches: no access-control-allow-origin, Vary: Origin, and any upstream access-control-allow-origin is removed (section 4.5)")
}

// explainCredentials tells which rule of section 5 applies.
func (p *Policy) explainCredentials(o string, say func(string, ...any)) {
	allowAll := p.allowAll || (p.star >= 0 && o != "")
	switch {
	case !p.credentials:
		say("credentials is false: no access-control-allow-credentials is added (section 5)")
	case allowAll && o != "":
		say("credentials with every origin allowed: the Origin is echoed as sent, with Vary: Origin and access-control-allow-credentials: true (section 5)")
	case allowAll:
		say("credentials with every origin allowed and no Origin: access-control-allow-origin is *, without credentials (section 5)")
	default:
		say("credentials is true: access-control-allow-credentials: true is sent, whether or not the Origin was allowed (section 5)")
	}
}

func matchWord(matched bool) string {
	if matched {
		return "matches"
	}
	return "does not match"
}
