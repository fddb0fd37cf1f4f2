package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"path"
	"strings"
	"time"
)

// api is the upstream service behind every route: a small JSON API that reports what reached it,
// so that a case can tell what the browser sent from what it let the page read. Any host serves
// the test page at /page.
type api struct {
	// ownPreflight: the API answers preflights itself with its own CORS headers, as a backend
	// does behind a route with preflight_continue. Its answer differs from what the route's
	// policy would say, so that a case can tell whose answer the browser acted on.
	ownPreflight bool
	// ownACAO: the API adds Access-Control-Allow-Origin: * to every response, as a backend with
	// CORS built in does; the service must not let it through on a route it does not grant.
	ownACAO bool
	// slow: the API answers only after Envoy gave up on the request (the route's timeout), or
	// after slowAPIWait.
	slow bool
}

// slowAPIWait bounds the slow API's wait, far past the route timeout Envoy gives up at.
const slowAPIWait = 10 * time.Second

// The API's own preflight answer on the preflight_continue route: PATCH with x-upstream-ok only.
const (
	upstreamAllowMethods = "PATCH"
	upstreamAllowHeaders = "x-upstream-ok"
)

func (a api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	if r.URL.Path == "/page" {
		h.Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, testPage)
		return
	}
	if a.ownPreflight && r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Origin", appOrigin)
		h.Set("Access-Control-Allow-Methods", upstreamAllowMethods)
		h.Set("Access-Control-Allow-Headers", upstreamAllowHeaders)
		w.WriteHeader(http.StatusOK)
		return
	}
	if a.slow {
		select {
		case <-r.Context().Done():
		case <-time.After(slowAPIWait):
		}
	}
	if a.ownACAO {
		h.Set("Access-Control-Allow-Origin", "*")
	}
	if path.Base(r.URL.Path) == "login" {
		// The case name is the cookie's value, so a later call shows whose cookie came along.
		http.SetCookie(w, &http.Cookie{Name: "session", Value: caseOf(r.URL.Path), Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	}
	body, _ := io.ReadAll(r.Body)
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Total-Count", "42")
	h.Set("X-Secret", "s3cret")
	_ = json.NewEncoder(w).Encode(echo{
		Method:      r.Method,
		Path:        r.URL.Path,
		Origin:      r.Header.Get("Origin"),
		Cookie:      r.Header.Get("Cookie"),
		ContentType: r.Header.Get("Content-Type"),
		RequestID:   r.Header.Get("X-Request-Id"),
		Body:        string(body),
	})
}

// echo is the API's answer: what reached it.
type echo struct {
	Method      string `json:"method"`
	Path        string `json:"path"`
	Origin      string `json:"origin,omitempty"`
	Cookie      string `json:"cookie,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	RequestID   string `json:"request_id,omitempty"`
	Body        string `json:"body,omitempty"`
}

// caseOf returns the case name of a path /c/<case>/...
func caseOf(p string) string {
	rest, ok := strings.CutPrefix(p, "/c/")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "/")
	return name
}

// testPage is what every origin serves at /page. probe makes one fetch and reports what the
// page's JavaScript could see: whether fetch resolved, the status, the body and the response
// headers asked for (null when the browser hides one), or the error fetch rejected with. The
// empty icon keeps Chromium from fetching /favicon.ico behind the suite's back: no request is
// in flight when a case's records are read.
const testPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>cors-extproc e2e</title><link rel="icon" href="data:,"></head>
<body><p>cors-extproc browser suite: this page makes the calls.</p>
<script>
window.probe = async function (url, init, read) {
  try {
    const res = await fetch(url, init);
    const body = await res.text();
    const headers = {};
    for (const name of read) headers[name] = res.headers.get(name);
    return {resolved: true, status: res.status, body: body, headers: headers};
  } catch (e) {
    return {resolved: false, error: e.name + ": " + e.message};
  }
};
</script></body></html>
`
