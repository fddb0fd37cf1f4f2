// Package policy parses, validates, compiles and evaluates the CORS policies of cors-extproc.
// The behaviour is that of Kong's CORS plugin (Kong 3.11) with a few deliberate differences; it
// is documented in docs/cors-semantics.md, whose sections this package cites as "section N".
//
// # Life of a policy
//
// A policy arrives as a generic map: a google.protobuf.Struct's AsMap, JSON text decoded by
// ParseJSON, or one entry of the named-policy YAML file read by ParseNamed. RefName tells a
// reference to a named policy (`ref: NAME`) apart from a policy given in full. Compile checks
// every field (section 1) and reports all problems at once in an *InvalidError whose
// FieldErrors read `field value: message`; it also returns Warnings for valid but risky
// settings. A policy that fails validation is replaced by Unusable(err), which grants nothing
// but keeps same-origin traffic working (section 10), so callers have one code path.
//
// A compiled *Policy is immutable. Decide handles the request phase and Decorate the response
// phase of a non-preflight request; both take and return plain values and do not allocate, and
// a value echoed from the request (Origin, access-control-request-headers) is the request's
// own string. The one exception is an Origin carrying user information ("https://u:p@host"),
// which browsers never send: normalizing it builds a new string.
//
// # Semantics in brief
//
//   - Fields (section 1): origins (or the legacy origin), methods (default
//     GET,HEAD,PUT,PATCH,POST,DELETE), headers, exposed_headers, credentials, max_age,
//     preflight_continue, private_network, allow_origin_absent (default true) and
//     preflight_status (200 or 204, default 204). null is unset; list fields also accept one
//     comma-separated string.
//   - Request (section 2): an empty Origin is an absent one; an Origin with a comma (two
//     headers joined) matches no element.
//   - Origins elements (section 3) are "*", literals (compared after normalization: default
//     port, path, query, fragment and user information dropped), wildcard subdomains
//     (scheme://*.example.com) or RE2 regexes anchored as a whole.
//   - ACAO (section 4): "*" when all origins are allowed; a single literal element verbatim
//     whatever the Origin; otherwise the normalized Origin when an element matches, with
//     `Vary: Origin` in every case but allow-all.
//   - Credentials (section 5) add `access-control-allow-credentials: true`; with allow-all they
//     echo the Origin as sent, which Compile warns about.
//   - Preflights (sections 6 and 7) are answered at once with preflight_status, unless
//     preflight_continue passes them upstream untouched. Actual responses (section 8) get ACAO,
//     ACAC and ACEH set, Vary appended, or an upstream ACAO removed.
//
// # Differences from Kong 3.11 (section 9)
//
//  1. Preflights are answered with 204 by default (Kong: 200); preflight_status chooses.
//  2. The default methods are GET,HEAD,PUT,PATCH,POST,DELETE (Kong 3.x adds OPTIONS, TRACE and
//     CONNECT).
//  3. A regex is anchored as a whole, ^(?:element)$: Kong anchors only the last top-level
//     alternative, so `foo\.test|bar\.test` lets foo.test.evil.test through there.
//  4. scheme://*.domain is a wildcard subdomain (Kong reads it as a broken regex).
//  5. IPv6 origins keep their brackets (Kong drops them, so its echoed value never matches).
//  6. max_age must be a non-negative integer; unknown fields, and origin together with origins,
//     are errors; a regex is valid when Go's RE2 compiles it (no look-around or
//     back-references, while some patterns PCRE2 rejects, such as [\w-_], are accepted).
//  7. `Vary: Origin` is never added twice, nor when the upstream's Vary already lists Origin
//     or *.
//
// Regexes have a cost cap (section 3): a regex is not run on a subject (normalized origin or host)
// longer than 1024 bytes, which then does not match. No browser sends such an Origin, and the
// cap bounds the time one request can spend in RE2.
package policy
