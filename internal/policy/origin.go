package policy

import (
	"errors"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
)

// originParts is a parsed origin (semantics section 3, "Normalization"). Every field is a
// substring of the text it was parsed from, so parsing a request Origin never allocates.
type originParts struct {
	scheme  string // everything up to and including the first "//", e.g. "https://"
	host    string // IPv6 hosts keep their brackets
	port    string // without the ':'; meaningful only when hasPort
	hasPort bool   // a port that normalization keeps (an empty one included: "http://a.test:")
	// norm is the normalized origin, scheme://host[:port]. It is a prefix of the parsed text
	// unless user information had to be cut out of its middle; see normalizeOrigin.
	norm string
}

// parseOrigin splits s the way section 3 describes, into p, which must be zero. It returns
// false when s has no "//": such a value ("null", a bare host) is used as it is and has no
// parts. (p is filled through a pointer because copying a returned originParts cost as much as
// the parsing.)
//
// The authority ends at the first '/', '?', '#' or ';', which drops a path, query, fragment or
// parameters. User information ends at the last '@' of the authority. The port follows the
// first ':' of an unbracketed host, or the ':' right after an IPv6 host's ']'.
func parseOrigin(s string, p *originParts) bool {
	// Hand-written scans: the strings are short, so calling the vectorized searches of the
	// strings package costs more than the loops.
	i := 0
	for i+1 < len(s) && (s[i] != '/' || s[i+1] != '/') {
		i++
	}
	if i+1 >= len(s) {
		return false
	}
	start := i + 2
	// One pass over the authority: where it ends, where user information ends, and the first
	// ':' after that.
	end, hostStart, colon := len(s), start, -1
scan:
	for j := start; j < len(s); j++ {
		switch authorityByte[s[j]] {
		case byteOther:
		case byteEnd:
			end = j
			break scan
		case byteAt:
			hostStart, colon = j+1, -1
		case byteColon:
			if colon < 0 {
				colon = j
			}
		}
	}
	if hostStart < end && s[hostStart] == '[' {
		// IPv6: the port follows the ']' at once, or there is none.
		colon = -1
		if rb := strings.IndexByte(s[hostStart:end], ']'); rb >= 0 && hostStart+rb+1 < end && s[hostStart+rb+1] == ':' {
			colon = hostStart + rb + 1
		}
	}
	p.scheme = s[:start]
	hostEnd, normEnd := end, end
	if colon >= 0 {
		hostEnd = colon
		p.port = s[colon+1 : end]
		p.hasPort = !isDefaultPort(s[:i], p.port)
	}
	if !p.hasPort {
		normEnd = hostEnd
	}
	p.host = s[hostStart:hostEnd]
	if hostStart == start {
		p.norm = s[:normEnd]
	} else {
		p.norm = s[:start] + s[hostStart:normEnd]
	}
	return true
}

// The classes of bytes in an authority, for parseOrigin.
const (
	byteOther = iota
	byteEnd   // '/', '?', '#' or ';': the authority ends
	byteAt    // '@': user information ends
	byteColon // ':': a port may follow
)

// authorityByte classifies every byte value; a table lookup is faster than a switch on the
// byte.
var authorityByte = [256]uint8{'/': byteEnd, '?': byteEnd, '#': byteEnd, ';': byteEnd, '@': byteAt, ':': byteColon}

// isDefaultPort reports whether port is the one a browser leaves out for scheme (given with
// its ':', as it precedes "//"). The comparison is exact: nothing is lower-cased (section 3).
func isDefaultPort(scheme, port string) bool {
	return scheme == "http:" && port == "80" || scheme == "https:" && port == "443"
}

// normalizeOrigin returns the normalized form of s (section 3). It returns s itself, or a prefix
// of it, without allocating, except in one case: an origin with user information
// ("https://user:pw@host") cannot be normalized to a substring, so the result is built anew.
// Browsers never put user information in an Origin header, so that case is left to allocate.
func normalizeOrigin(s string) string {
	var p originParts
	if parseOrigin(s, &p) {
		return p.norm
	}
	return s
}

// NormalizeLiteral returns the form a literal origins element (section 3.2) takes when the
// policy is compiled: scheme and host lower-cased, the default port dropped. An element without
// "//" ("null", a bare host) is returned as it is. problem is empty unless the element cannot be
// an origin, because it has a path (a trailing "/" included) or no host; it then says why and
// what to write instead. Browsers compare access-control-allow-origin with their own serialization of
// the origin, which is always of that form, so a literal sent as written ("https://App.test/")
// would be refused (docs/cors-semantics.md section 3, difference 9.8).
func NormalizeLiteral(e string) (norm, problem string) {
	var p originParts
	if !parseOrigin(e, &p) {
		return e, ""
	}
	scheme, host := strings.ToLower(p.scheme), strings.ToLower(p.host)
	norm = scheme + host
	// A port was written (hasPort is false for a default one), and is not the default once the
	// scheme is lower-cased.
	if (p.hasPort || p.port != "") && !isDefaultPort(strings.TrimSuffix(scheme, "//"), p.port) {
		norm += ":" + p.port
	}
	switch {
	case host == "":
		return norm, "has no host, so it never matches: write scheme://host[:port]"
	case strings.IndexByte(e[len(p.scheme):], '/') >= 0:
		return norm, "has a path, which an origin never has: browsers send scheme://host[:port], so it " +
			"never matches; write " + strconv.Quote(norm)
	}
	return norm, ""
}

// isLiteralByte reports whether c may appear in a literal origins element (section 3.2).
func isLiteralByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == ':' || c == '/' || c == '-'
}

func allLiteralBytes(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isLiteralByte(s[i]) {
			return false
		}
	}
	return true
}

// isSchemeText reports whether s is a plausible scheme followed by "://": the scheme part of an
// IPv6 literal or of a wildcard subdomain element (section 3).
func isSchemeText(s string) bool {
	name, ok := strings.CutSuffix(s, "://")
	if !ok || name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// isIPv6Literal reports whether e has the form scheme://[addr] or scheme://[addr]:port, addr
// holding only hex digits, ':' and '.' (section 3.2).
func isIPv6Literal(e string) bool {
	lb := strings.Index(e, "://[")
	if lb < 0 || !isSchemeText(e[:lb+3]) {
		return false
	}
	rest := e[lb+4:]
	rb := strings.IndexByte(rest, ']')
	if rb <= 0 {
		return false
	}
	for i := 0; i < rb; i++ {
		if c := rest[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' ||
			c == ':' || c == '.') {
			return false
		}
	}
	port, ok := strings.CutPrefix(rest[rb+1:], ":")
	if !ok {
		return rest[rb+1:] == ""
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return false
		}
	}
	return true
}

// elementKind is the class of one origins element (section 3).
type elementKind uint8

const (
	kindStar elementKind = iota
	kindLiteral
	kindWildcard
	kindRegex
)

// classify returns the class of an origins element. It does not check that a regex compiles.
func classify(e string) elementKind {
	switch {
	case e == "*":
		return kindStar
	case allLiteralBytes(e) || isIPv6Literal(e):
		return kindLiteral
	case isWildcard(e):
		return kindWildcard
	}
	return kindRegex
}

// isWildcard reports whether e is scheme://*.rest with rest made of literal characters and
// naming a host (section 3.3).
func isWildcard(e string) bool {
	i := strings.Index(e, "://*.")
	if i < 0 || !isSchemeText(e[:i+3]) {
		return false
	}
	rest := e[i+5:]
	return rest != "" && rest[0] != ':' && rest[0] != '/' && rest[0] != '.' && allLiteralBytes(rest)
}

// wildcard matches the origins of every subdomain of one domain, with one scheme and port.
type wildcard struct {
	scheme  string // "https://"
	suffix  string // ".example.com"
	port    string
	hasPort bool
}

// newWildcard builds the matcher of a wildcard element; e must satisfy isWildcard. The element
// is normalized like a literal, so "https://*.example.com:443/" is "https://*.example.com".
func newWildcard(e string) wildcard {
	var p originParts
	parseOrigin(e, &p)
	return wildcard{scheme: p.scheme, suffix: p.host[1:], port: p.port, hasPort: p.hasPort}
}

// match reports whether the parsed request origin o is a subdomain origin of w: same scheme
// and port, a host ending with the suffix, and at least one more label of host characters in
// front of it.
func (w *wildcard) match(o *originParts) bool {
	if o.scheme != w.scheme || o.hasPort != w.hasPort || o.hasPort && o.port != w.port {
		return false
	}
	front, ok := strings.CutSuffix(o.host, w.suffix)
	return ok && isLabels(front)
}

// isLabels reports whether s is one or more non-empty dot-separated labels of letters, digits,
// '-' and '_'.
func isLabels(s string) bool {
	if s == "" {
		return false
	}
	prevDot := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if prevDot {
				return false
			}
			prevDot = true
			continue
		}
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
		prevDot = false
	}
	return !prevDot
}

// pattern is a compiled regex element (section 3.4).
type pattern struct {
	re *regexp.Regexp
	// wholeOrigin: the element contains ':', so the subject is the normalized origin;
	// otherwise it is the host alone.
	wholeOrigin bool
	// insts is the size of the RE2 program, which Limits.MaxRegexInsts bounds.
	insts int
}

// compilePattern anchors and compiles a regex element. The element is first parsed on its own,
// after stripping one leading '^' and one trailing unescaped '$', so that an element such as
// "a)|(b" is reported as invalid instead of escaping the "^(?:" … ")$" wrapper around it. An
// error is RE2's reason alone, without the "error parsing regexp" prefix.
func compilePattern(e string) (pattern, error) {
	body := strings.TrimPrefix(e, "^")
	if strings.HasSuffix(body, "$") && !escapedAt(body, len(body)-1) {
		body = body[:len(body)-1]
	}
	if _, err := syntax.Parse(body, syntax.Perl); err != nil {
		return pattern{}, regexReason(err)
	}
	anchored := "^(?:" + body + ")$"
	parsed, err := syntax.Parse(anchored, syntax.Perl)
	if err != nil {
		return pattern{}, regexReason(err)
	}
	prog, err := syntax.Compile(parsed.Simplify())
	if err != nil {
		return pattern{}, regexReason(err)
	}
	re, err := regexp.Compile(anchored)
	if err != nil {
		return pattern{}, regexReason(err)
	}
	return pattern{re: re, wholeOrigin: strings.Contains(e, ":"), insts: len(prog.Inst)}, nil
}

func regexReason(err error) error {
	var se *syntax.Error
	if errors.As(err, &se) {
		return errors.New(string(se.Code))
	}
	return err
}

// escapedAt reports whether the byte at i is preceded by an odd number of backslashes.
func escapedAt(s string, i int) bool {
	n := 0
	for i > 0 && s[i-1] == '\\' {
		n++
		i--
	}
	return n%2 == 1
}

// maxRegexSubject is the longest subject a regex is run on; a longer one does not match. No
// browser sends such an Origin (a host name has at most 253 bytes), and RE2's time, linear in
// the subject, would otherwise let one request header of tens of kilobytes cost milliseconds.
const maxRegexSubject = 1024

// match reports whether the request origin (raw text, parsed when it has "//") matches.
func (p *pattern) match(raw string, o *originParts, parsed bool) bool {
	subject := raw
	switch {
	case !parsed:
	case p.wholeOrigin:
		subject = o.norm
	default:
		subject = o.host
	}
	return len(subject) <= maxRegexSubject && p.re.MatchString(subject)
}
