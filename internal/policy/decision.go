package policy

// Header names this package produces, lower-case because Envoy carries header keys lower-cased
// (HTTP/2 and ext_proc alike) and the processor sends them as they are.
const (
	HeaderVary                  = "vary"
	HeaderOrigin                = "origin"
	HeaderAllowOrigin           = "access-control-allow-origin"
	HeaderAllowCredentials      = "access-control-allow-credentials"
	HeaderAllowMethods          = "access-control-allow-methods"
	HeaderAllowHeaders          = "access-control-allow-headers"
	HeaderExposeHeaders         = "access-control-expose-headers"
	HeaderMaxAge                = "access-control-max-age"
	HeaderAllowPrivateNetwork   = "access-control-allow-private-network"
	HeaderRequestMethod         = "access-control-request-method"
	HeaderRequestHeaders        = "access-control-request-headers"
	HeaderRequestPrivateNetwork = "access-control-request-private-network"
	VaryOrigin                  = "Origin"
)

// Request holds what the policy reads from the request headers (semantics section 2). The
// caller fills it with the first value of each header; an empty Origin means absent.
type Request struct {
	Method        string // the :method pseudo-header
	Origin        string // first Origin value; "" when absent or empty
	RequestMethod string // access-control-request-method
	// HasRequestMethod reports whether access-control-request-method was present at all: the
	// preflight test (section 6) asks for its presence, not for a non-empty value.
	HasRequestMethod      bool
	RequestHeaders        string // access-control-request-headers, "" when absent
	RequestPrivateNetwork string // access-control-request-private-network, "" when absent
}

// Header is one header field to set.
type Header struct {
	Name  string
	Value string
}

// The slots of Headers: every header field a decision can carry, in the order in which they
// are listed (section 7 for a preflight answer: ACAO, Vary, ACAC, ACAH, ACAM, ACMA, ACAPN;
// section 8 for an actual response: ACAO, ACAC, ACEH).
const (
	slotAllowOrigin = iota
	slotVary
	slotAllowCredentials
	slotAllowHeaders
	slotAllowMethods
	slotMaxAge
	slotAllowPrivateNetwork
	slotExposeHeaders
	numSlots
)

// slotNames gives each slot its header name.
var slotNames = [numSlots]string{
	slotAllowOrigin:         HeaderAllowOrigin,
	slotVary:                HeaderVary,
	slotAllowCredentials:    HeaderAllowCredentials,
	slotAllowHeaders:        HeaderAllowHeaders,
	slotAllowMethods:        HeaderAllowMethods,
	slotMaxAge:              HeaderMaxAge,
	slotAllowPrivateNetwork: HeaderAllowPrivateNetwork,
	slotExposeHeaders:       HeaderExposeHeaders,
}

// Headers is an ordered list of header fields. It is a small value, not a slice, so that a
// decision is returned without allocating: one slot per field a decision can carry.
type Headers struct {
	present [numSlots]bool
	values  [numSlots]string
}

// Len returns the number of header fields.
func (h *Headers) Len() int {
	n := 0
	for _, present := range h.present {
		if present {
			n++
		}
	}
	return n
}

// At returns the i-th header field; it panics unless 0 <= i < Len().
func (h *Headers) At(i int) Header {
	for s, present := range h.present {
		if present {
			if i == 0 {
				return Header{Name: slotNames[s], Value: h.values[s]}
			}
			i--
		}
	}
	panic("policy: Headers.At index out of range")
}

// Get returns the value of the field named name, and whether there is one.
func (h *Headers) Get(name string) (string, bool) {
	for s, present := range h.present {
		if present && slotNames[s] == name {
			return h.values[s], true
		}
	}
	return "", false
}

// add puts a field in its slot.
func (h *Headers) add(slot int, value string) {
	h.present[slot], h.values[slot] = true, value
}

// Action says what the processor does with the request.
type Action uint8

const (
	// ActionPass lets the request through untouched and needs nothing from the response phase:
	// the processor skips it (a preflight passed upstream with preflight_continue, a request
	// without Origin when allow_origin_absent is false, or one without Origin under an unusable
	// policy).
	ActionPass Action = iota
	// ActionAnswer answers the request at once with RequestDecision.Status and .Headers
	// (semantics section 7, or 403 for an unusable policy, section 10).
	ActionAnswer
	// ActionDecorate lets the request through; its response is changed by Policy.Decorate.
	ActionDecorate
)

// Kind classifies a decision for metrics and logs.
type Kind uint8

const (
	KindActual             Kind = iota // an actual (non-preflight) request
	KindPreflightAnswered              // a preflight answered at once
	KindPreflightForwarded             // a preflight passed upstream (preflight_continue)
	KindIgnored                        // no Origin and allow_origin_absent false: no CORS treatment
)

// OriginResult says how the request Origin fared against the policy's origins.
type OriginResult uint8

const (
	OriginAbsent   OriginResult = iota // no (or an empty) Origin
	OriginAllowed                      // allowed: by allow-all, `*` in the list, the single literal, or a match
	OriginRejected                     // present and not allowed
)

// RequestDecision is the outcome of the request phase.
type RequestDecision struct {
	Action  Action
	Kind    Kind
	Origin  OriginResult
	Status  int     // ActionAnswer only: the HTTP status of the answer
	Headers Headers // ActionAnswer only: the answer's header fields, in order
	// Matched is the index of the origins element that allowed the Origin (the first one that
	// matches, or the `*`), for tooling and logs; -1 when none did or there is no list.
	Matched int

	// What sections 4 and 5 granted, kept for Decorate so that the response phase does not
	// match the Origin a second time: the ACAO value ("" for none), Vary: Origin, and ACAC.
	allowOrigin string
	varyOrigin  bool
	credentials bool
}

// ResponseDecision is the change to make to an actual response (semantics section 8).
type ResponseDecision struct {
	// Set holds header fields that replace any upstream field of the same name.
	Set Headers
	// AppendVary asks for `vary: Origin` to be added beside the upstream's Vary.
	AppendVary bool
	// RemoveAllowOrigin asks for any upstream access-control-allow-origin to be removed.
	RemoveAllowOrigin bool
}

// Empty reports whether the decision changes nothing.
func (d *ResponseDecision) Empty() bool {
	return d.Set.Len() == 0 && !d.AppendVary && !d.RemoveAllowOrigin
}
