package policy

import (
	"math"
	"strings"
)

// valueTrue is the value of ACAC and ACAPN.
const valueTrue = "true"

// IsPreflight reports whether r is a CORS preflight (section 6): method exactly OPTIONS, a
// non-empty Origin and an access-control-request-method header, even an empty one.
func IsPreflight(r *Request) bool {
	return r.Method == "OPTIONS" && r.Origin != "" && r.HasRequestMethod
}

// grant is what sections 4 and 5 give one request Origin.
type grant struct {
	acao    string // "" when no ACAO is granted
	vary    bool   // the response varies by Origin
	acac    bool
	origin  OriginResult
	matched int // index of the origins element that allowed the Origin, -1 if none
}

// grant applies sections 4 and 5 to the request Origin o ("" when absent), filling g, which
// must be zero. (g is filled through a pointer rather than returned: copying the returned
// struct cost more than the rest of a typical evaluation.)
func (p *Policy) grant(o string, g *grant) {
	g.matched = -1
	if o != "" && p.credentials && (p.allowAll || p.star >= 0) && strings.IndexByte(o, ',') >= 0 {
		// Section 2: an Origin with a comma (two Origin headers joined) is never echoed, which
		// allow-all with credentials would do (section 5): the request is answered as if it had
		// no Origin, and the Origin counts as rejected.
		p.grant("", g)
		g.origin = OriginRejected
		return
	}
	if p.allowAll {
		// Section 4.1, and section 5 for credentials.
		switch {
		case o == "":
			// With credentials the same URL answers differently when an Origin is present, so
			// a shared cache must key on it (section 5; difference 9.7 from Kong).
			g.acao, g.vary = "*", p.credentials
		case p.credentials:
			g.acao, g.vary, g.acac, g.origin, g.matched = o, true, true, OriginAllowed, p.star
		default:
			g.acao, g.origin, g.matched = "*", OriginAllowed, p.star
		}
		return
	}
	g.vary = true
	g.acac = p.credentials
	if p.single != "" {
		// Section 4.3: the literal whatever O is. Whether O matches only feeds metrics.
		g.acao = p.single
		if o != "" {
			g.origin = OriginRejected
			if strings.IndexByte(o, ',') < 0 && normalizeOrigin(o) == p.single {
				g.origin, g.matched = OriginAllowed, 0
			}
		}
		return
	}
	if o == "" {
		return
	}
	if p.star >= 0 {
		// Section 4.4: `*` in a longer list allows every Origin and counts as allow-all for
		// section 5, so credentials echo O as sent. Only Matched depends on the elements before
		// the `*`.
		i, _ := p.match(o, p.star)
		if i < 0 {
			i = p.star
		}
		g.acao, g.origin, g.matched = "*", OriginAllowed, i
		if p.credentials {
			g.acao = o
		}
		return
	}
	i, norm := p.match(o, math.MaxInt)
	if i < 0 {
		g.origin = OriginRejected
		return
	}
	g.acao, g.origin, g.matched = norm, OriginAllowed, i
}

// match returns the index of the first origins element before limit that matches the request
// Origin o, with o's normalized form; -1 when none does. An Origin with a comma (two Origin
// headers joined) never matches (section 2).
func (p *Policy) match(o string, limit int) (int, string) {
	if strings.IndexByte(o, ',') >= 0 {
		return -1, ""
	}
	// Browsers send origins already normalized, so o itself is looked up first: when it equals
	// a (normalized) literal it is normalized too, normalization being idempotent.
	best := p.literal(o, limit)
	if best >= 0 && (len(p.others) == 0 || p.others[0].index > best) {
		return best, o
	}
	var parts originParts
	parsed := parseOrigin(o, &parts)
	norm := o
	if parsed {
		norm = parts.norm
	}
	if best < 0 && len(norm) != len(o) {
		// Normalization changed o (it only ever shortens it), so look it up again.
		best = p.literal(norm, limit)
	}
	if best >= 0 {
		limit = best
	}
	for i := range p.others {
		m := &p.others[i]
		if m.index >= limit {
			break
		}
		if m.match(o, &parts, parsed) {
			return m.index, norm
		}
	}
	return best, norm
}

// literal returns the index of the literal element whose normalized text is norm, if it is
// before limit, and -1 otherwise.
func (p *Policy) literal(norm string, limit int) int {
	i := -1
	if p.literalMap != nil {
		if j, ok := p.literalMap[norm]; ok {
			i = j
		}
	} else {
		for _, l := range p.literals {
			if l.norm == norm {
				i = l.index
				break
			}
		}
	}
	if i >= limit {
		return -1
	}
	return i
}

// Decide is the request phase: it classifies r (section 6) and, for a preflight that is not
// passed upstream, builds the answer (section 7). It does not allocate; an echoed request value
// (Origin, ACRH) is the request's own string, not a copy.
func (p *Policy) Decide(r *Request) (d RequestDecision) {
	if r.Origin == "" && p.finished {
		return p.noOrigin
	}
	if p.err != nil {
		return p.decideUnusable(r)
	}
	preflight := IsPreflight(r)
	if !preflight && r.Origin == "" && !p.allowOriginAbsent {
		d.Action, d.Kind, d.Origin, d.Matched = ActionPass, KindIgnored, OriginAbsent, -1
		return d
	}
	var g grant
	p.grant(r.Origin, &g)
	d.Origin, d.Matched = g.origin, g.matched
	d.allowOrigin, d.varyOrigin, d.credentials = g.acao, g.vary, g.acac
	switch {
	case !preflight:
		d.Action, d.Kind = ActionDecorate, KindActual
	case p.preflightContinue:
		d.Action, d.Kind = ActionPass, KindPreflightForwarded
	default:
		d.Action, d.Kind, d.Status = ActionAnswer, KindPreflightAnswered, p.status
		h := &d.Headers
		if g.acao != "" {
			h.add(slotAllowOrigin, g.acao)
		}
		if g.vary {
			h.add(slotVary, VaryOrigin)
		}
		if g.acac {
			h.add(slotAllowCredentials, valueTrue)
		}
		if p.headers != "" {
			h.add(slotAllowHeaders, p.headers)
		} else if r.RequestHeaders != "" {
			h.add(slotAllowHeaders, r.RequestHeaders)
		}
		if p.methods != "" {
			h.add(slotAllowMethods, p.methods)
		}
		if p.maxAge != "" {
			h.add(slotMaxAge, p.maxAge)
		}
		if p.privateNetwork && r.RequestPrivateNetwork == valueTrue {
			h.add(slotAllowPrivateNetwork, valueTrue)
		}
	}
	return d
}

// decideUnusable is Decide for a policy that failed validation (section 10): nothing is
// granted, and traffic without an Origin is left alone.
func (p *Policy) decideUnusable(r *Request) RequestDecision {
	switch {
	case IsPreflight(r):
		return RequestDecision{Action: ActionAnswer, Kind: KindPreflightAnswered, Origin: OriginRejected,
			Status: 403, Matched: -1}
	case r.Origin == "":
		return RequestDecision{Action: ActionPass, Kind: KindIgnored, Origin: OriginAbsent, Matched: -1}
	}
	return RequestDecision{Action: ActionDecorate, Kind: KindActual, Origin: OriginRejected, Matched: -1}
}

// Decorate is the response phase of an ActionDecorate request (section 8), from its request
// decision d: what Decide granted is applied without matching the Origin again.
// upstreamVaryListsOrigin tells whether the upstream's Vary already lists Origin or * (then no
// Vary is appended). It does not allocate.
func (p *Policy) Decorate(d *RequestDecision, upstreamVaryListsOrigin bool) (rd ResponseDecision) {
	if p.err != nil {
		rd.RemoveAllowOrigin = true
		return rd
	}
	if d.allowOrigin != "" {
		rd.Set.add(slotAllowOrigin, d.allowOrigin)
	} else {
		rd.RemoveAllowOrigin = true
	}
	if d.credentials {
		rd.Set.add(slotAllowCredentials, valueTrue)
	}
	if p.exposed != "" {
		rd.Set.add(slotExposeHeaders, p.exposed)
	}
	rd.AppendVary = d.varyOrigin && !upstreamVaryListsOrigin
	return rd
}

// VaryListsOrigin reports whether one Vary header value lists `Origin` (case-insensitive,
// comma-separated, spaces trimmed) or `*`: then the response already varies by Origin and
// section 4.2 adds nothing (section 9.7: a difference from Kong).
func VaryListsOrigin(value string) bool {
	for value != "" {
		item, rest, _ := strings.Cut(value, ",")
		item = strings.Trim(item, " \t")
		if item == "*" || strings.EqualFold(item, VaryOrigin) {
			return true
		}
		value = rest
	}
	return false
}
