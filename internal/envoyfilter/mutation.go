package envoyfilter

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// Header is one header field. Lists of them keep their order and may repeat a key, as an HTTP
// header map does.
type Header struct{ Key, Value string }

// Headers is an ordered list of header fields.
type Headers []Header

// Get returns the first value of key (matched case-insensitively) and whether it is present.
func (h Headers) Get(key string) (string, bool) {
	for _, f := range h {
		if strings.EqualFold(f.Key, key) {
			return f.Value, true
		}
	}
	return "", false
}

// Values returns every value of key (matched case-insensitively), in order.
func (h Headers) Values(key string) []string {
	var vs []string
	for _, f := range h {
		if strings.EqualFold(f.Key, key) {
			vs = append(vs, f.Value)
		}
	}
	return vs
}

// Envoy's default HTTP connection manager limits (max_request_headers_count and
// max_request_headers_kb), which a header mutation may not exceed (contract §5).
const (
	maxHeaderCount = 100
	maxHeaderBytes = 60 * 1024
)

// Phase says which header map a mutation applies to; the rules differ slightly.
type Phase int

const (
	RequestPhase Phase = iota
	ResponsePhase
	// ImmediatePhase is an immediate_response: Envoy checks its headers with a permissive rule
	// set that allows routing and x-envoy headers.
	ImmediatePhase
)

// HeaderMap encodes fields as Envoy does (contract §2): one HeaderValue per field, the value in
// raw_value only.
func HeaderMap(fields []Header) *corev3.HeaderMap {
	hs := make([]*corev3.HeaderValue, len(fields))
	for i, f := range fields {
		hs[i] = &corev3.HeaderValue{Key: f.Key, RawValue: []byte(f.Value)}
	}
	return &corev3.HeaderMap{Headers: hs}
}

// ApplyMutation applies m to fields (pseudo-headers first) the way Envoy's ext_proc filter does
// (contract §4): remove_headers first, then set_headers in order; the value is raw_value; the
// deprecated append BoolValue decides between adding a field (true) and replacing every field of
// the key (false or unset); append_action is ignored; changes to host, :authority, :method,
// :scheme and x-envoy-* are silently dropped. An error means Envoy would answer 500 (contract
// §5), or the reply breaks a contract rule Envoy would let pass. On error the fields as mutated
// so far are returned: an immediate response goes out with them.
func ApplyMutation(fields []Header, m *extprocv3.HeaderMutation, ph Phase) ([]Header, error) {
	if m == nil {
		return fields, nil
	}
	if len(m.GetRemoveHeaders()) > maxHeaderCount || len(m.GetSetHeaders()) > maxHeaderCount {
		return fields, fmt.Errorf("header mutation removes %d and sets %d headers, over Envoy's limit of %d",
			len(m.GetRemoveHeaders()), len(m.GetSetHeaders()), maxHeaderCount)
	}
	for _, key := range m.GetRemoveHeaders() {
		if err := checkKey(key); err != nil {
			return fields, fmt.Errorf("remove_headers: %w", err)
		}
		if mayChange(opRemove, key, ph) {
			fields = removeAll(fields, key)
		}
	}
	for _, o := range m.GetSetHeaders() {
		h := o.GetHeader()
		if h == nil {
			continue // Envoy skips an entry without a header.
		}
		if h.GetValue() != "" {
			if len(h.GetRawValue()) != 0 {
				return fields, fmt.Errorf("set_headers %q: both value and raw_value set (Envoy 1.27-1.31 answer 500)", h.GetKey())
			}
			return fields, fmt.Errorf("set_headers %q: value %q in the value field; Envoy reads raw_value only and the header would become empty", h.GetKey(), h.GetValue())
		}
		key, value := h.GetKey(), string(h.GetRawValue())
		if err := checkKey(key); err != nil {
			return fields, fmt.Errorf("set_headers: %w", err)
		}
		if err := checkValue(value); err != nil {
			return fields, fmt.Errorf("set_headers %q: %w", key, err)
		}
		if err := checkPseudo(key, ph); err != nil {
			return fields, fmt.Errorf("set_headers: %w", err)
		}
		//lint:ignore SA1019 Envoy's ext_proc honours only the deprecated append field (contract §4).
		appendField := o.GetAppend().GetValue()
		op := opSet
		if appendField && has(fields, key) {
			op = opAppend
		}
		if !mayChange(op, key, ph) || (key == ":status" && !validStatus(value)) {
			continue
		}
		switch {
		case appendField && joinsOnAppend[key] && op == opAppend:
			fields = joinFirst(fields, key, value)
		case appendField:
			fields = append(fields, Header{key, value})
		case strings.HasPrefix(key, ":"):
			fields = setPseudo(fields, key, value)
		default:
			fields = append(removeAll(fields, key), Header{key, value})
		}
	}
	size := 0
	for _, f := range fields {
		size += len(f.Key) + len(f.Value)
	}
	if len(fields) > maxHeaderCount || size > maxHeaderBytes {
		return fields, fmt.Errorf("after the mutation the headers hold %d fields and %d bytes, over Envoy's limits (%d fields, %d bytes)",
			len(fields), size, maxHeaderCount, maxHeaderBytes)
	}
	return fields, nil
}

// joinsOnAppend are the headers Envoy keeps as "inline" headers: appending to one that is
// there already joins the value onto it with "," instead of adding a second field. Recorded on
// every pinned Envoy (deploy/realenvoy_test.go): an upstream's "vary: Accept-Encoding" plus an
// appended "Origin" reaches the client as one "vary: Accept-Encoding,Origin".
var joinsOnAppend = map[string]bool{"vary": true}

// joinFirst returns fields with value appended to the first field named key, comma-joined.
// fields itself is not modified.
func joinFirst(fields []Header, key, value string) []Header {
	out := append(fields[:0:0], fields...)
	for i, f := range out {
		if f.Key == key {
			out[i].Value = f.Value + "," + value
			break
		}
	}
	return out
}

type operation int

const (
	opSet operation = iota
	opAppend
	opRemove
)

// mayChange plays Envoy's default header mutation rules (contract §4). false means Envoy ignores
// the change without an error.
func mayChange(op operation, key string, ph Phase) bool {
	if op == opRemove && (key == "host" || strings.HasPrefix(key, ":")) {
		return false // host and pseudo-headers can never be removed
	}
	if ph != ImmediatePhase {
		switch key {
		case "host", ":authority", ":method", ":scheme":
			return false
		}
		if strings.HasPrefix(key, "x-envoy") {
			return false
		}
	}
	if op == opAppend && strings.HasPrefix(key, ":") {
		return false // pseudo-headers take one value
	}
	return true
}

// checkKey rejects what Envoy answers 500 for (a key that is no valid header name), and keys with
// upper-case letters, which contract §4 forbids.
func checkKey(key string) error {
	if key == "" {
		return errors.New("empty header key")
	}
	if key != strings.ToLower(key) {
		return fmt.Errorf("header key %q is not lower-case (contract §4)", key)
	}
	name := strings.TrimPrefix(key, ":")
	if name == "" {
		return fmt.Errorf("invalid header key %q", key)
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return fmt.Errorf("invalid character %q in header key %q (Envoy answers 500)", name[i], key)
		}
	}
	return nil
}

// checkValue rejects the bytes Envoy refuses in a header value (control characters other than
// horizontal tab, and DEL): Envoy answers 500.
func checkValue(v string) error {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return fmt.Errorf("invalid character %q in header value (Envoy answers 500)", c)
		}
	}
	return nil
}

// checkPseudo rejects pseudo-headers that do not belong to the header map being changed. Envoy
// would put them into the map and produce a broken message; no processor should send them.
func checkPseudo(key string, ph Phase) error {
	if !strings.HasPrefix(key, ":") {
		return nil
	}
	switch ph {
	case RequestPhase:
		switch key {
		case ":method", ":path", ":scheme", ":authority":
			return nil
		}
	default:
		if key == ":status" {
			return nil
		}
	}
	return fmt.Errorf("pseudo-header %q does not belong to this header map", key)
}

// validStatus is Envoy's check of a :status value set by a mutation: a number of at least 200,
// otherwise the change is ignored.
func validStatus(v string) bool {
	n, err := strconv.ParseUint(v, 10, 32)
	return err == nil && n >= 200
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func has(fields []Header, key string) bool {
	for _, f := range fields {
		if f.Key == key {
			return true
		}
	}
	return false
}

func removeAll(fields []Header, key string) []Header {
	out := fields[:0:0]
	for _, f := range fields {
		if f.Key != key {
			out = append(out, f)
		}
	}
	return out
}

// setPseudo replaces a pseudo-header in place: Envoy keeps pseudo-headers ahead of the others.
func setPseudo(fields []Header, key, value string) []Header {
	out := append(fields[:0:0], fields...)
	for i := range out {
		if out[i].Key == key {
			out[i].Value = value
			return out
		}
	}
	return append([]Header{{key, value}}, out...)
}
