package realenvoy

import (
	"net"
	"net/http"
	"sync"
	"testing"
)

// TagHeader is a request header a test sets on each request it sends through Envoy, so that
// the request can be found again among those the upstream recorded.
const TagHeader = "x-test-tag"

// Seen is one request as the upstream received it from Envoy.
type Seen struct {
	Method, Path string
	Header       http.Header
}

// Upstream is a plain HTTP/1.1 server on loopback standing for the service behind Envoy. It
// records every request, then lets handler answer it (nil: 200, no body).
type Upstream struct {
	Addr string // host:port

	mu   sync.Mutex
	seen []Seen
}

// NewUpstream starts an Upstream, closed when the test ends.
func NewUpstream(t testing.TB, handler http.HandlerFunc) *Upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &Upstream{Addr: ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, Seen{Method: r.Method, Path: r.URL.RequestURI(), Header: r.Header.Clone()})
		u.mu.Unlock()
		if handler != nil {
			handler(w, r)
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return u
}

// Requests returns what the upstream has received so far.
func (u *Upstream) Requests() []Seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Seen(nil), u.seen...)
}

// Tagged returns the requests that carried TagHeader: tag.
func (u *Upstream) Tagged(tag string) []Seen {
	var out []Seen
	for _, s := range u.Requests() {
		if s.Header.Get(TagHeader) == tag {
			out = append(out, s)
		}
	}
	return out
}
