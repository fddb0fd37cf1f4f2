package policy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/rs/cors"
)

// benchPolicy and benchRsCors are the same configuration for this package and for rs/cors.
const benchPolicy = `{
	"origins": ["https://a.test", "https://b.test", "https://c.test"],
	"headers": ["Content-Type", "X-Requested-With"],
	"exposed_headers": ["X-Total"],
	"credentials": true,
	"max_age": 600
}`

var benchRsCors = cors.Options{
	AllowedOrigins:       []string{"https://a.test", "https://b.test", "https://c.test"},
	AllowedMethods:       []string{"GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"},
	AllowedHeaders:       []string{"Content-Type", "X-Requested-With"},
	ExposedHeaders:       []string{"X-Total"},
	AllowCredentials:     true,
	MaxAge:               600,
	OptionsSuccessStatus: 204,
}

// sinkWriter is the cheapest http.ResponseWriter: rs/cors is measured deciding, not writing.
type sinkWriter struct {
	h      http.Header
	status int
}

func (w *sinkWriter) Header() http.Header         { return w.h }
func (w *sinkWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *sinkWriter) WriteHeader(status int)      { w.status = status }

// sink keeps the compiler from dropping the work of our side.
var sink int

func BenchmarkVsRsCors(b *testing.B) {
	cases := []struct {
		name string
		req  Request
	}{
		{"preflight", Request{Method: "OPTIONS", Origin: "https://b.test", RequestMethod: "PUT", HasRequestMethod: true}},
		{"preflight-headers", Request{Method: "OPTIONS", Origin: "https://b.test", RequestMethod: "PUT",
			HasRequestMethod: true, RequestHeaders: "content-type,x-requested-with"}},
		{"actual-allowed", Request{Method: "GET", Origin: "https://b.test"}},
		{"actual-rejected", Request{Method: "GET", Origin: "https://evil.test"}},
		{"no-origin", Request{Method: "GET"}},
	}
	p := mustCompile(b, benchPolicy)
	handler := cors.New(benchRsCors).Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for _, c := range cases {
		b.Run(c.name+"/ours", func(b *testing.B) {
			r := c.req
			b.ReportAllocs()
			for b.Loop() {
				d := p.Decide(&r)
				n := d.Headers.Len()
				if d.Action == ActionDecorate {
					rd := p.Decorate(&d, false)
					n += rd.Set.Len()
				}
				sink += n
			}
		})
		b.Run(c.name+"/rscors", func(b *testing.B) {
			hr, err := http.NewRequest(c.req.Method, "https://api.test/x", nil)
			if err != nil {
				b.Fatal(err)
			}
			if c.req.Origin != "" {
				hr.Header.Set("Origin", c.req.Origin)
			}
			if c.req.HasRequestMethod {
				hr.Header.Set("Access-Control-Request-Method", c.req.RequestMethod)
			}
			if c.req.RequestHeaders != "" {
				hr.Header.Set("Access-Control-Request-Headers", c.req.RequestHeaders)
			}
			w := &sinkWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				handler.ServeHTTP(w, hr)
			}
		})
	}
}

func BenchmarkHostile(b *testing.B) {
	huge := strings.Repeat("x-header-name, ", 1<<20/15)
	cases := []struct {
		name   string
		policy string
		req    Request
	}{
		{"acrh-1MiB", `{}`, withACRH(preflight("https://a.test"), huge)},
		{"10000-origins-miss", manyLiterals(10000), actual("https://miss.test")},
		{"10000-origins-hit-last", manyLiterals(10000), actual("https://o9999.test")},
		{"pathological-regex-64KiB-origin", `{"origins": ["https://(a+)+(b|a+)*c", "(x*y*)*z"]}`,
			preflight("https://" + strings.Repeat("a", 64<<10))},
		{"pathological-regex-1000B-origin", `{"origins": ["https://(a+)+(b|a+)*c", "(x*y*)*z"]}`,
			preflight("https://" + strings.Repeat("a", 1000-len("https://")))},
		{"origin-1MiB-miss", listPolicy, actual("https://" + strings.Repeat("a", 1<<20))},
	}
	for _, c := range cases {
		b.Run(c.name+"/ours", func(b *testing.B) {
			p := mustCompile(b, c.policy)
			r := c.req
			b.ReportAllocs()
			for b.Loop() {
				d := p.Decide(&r)
				if d.Action == ActionDecorate {
					rd := p.Decorate(&d, false)
					sink += rd.Set.Len()
				}
				sink += d.Headers.Len()
			}
		})
	}
	// rs/cors on the same 1 MiB access-control-request-headers (its issue #170 is about the
	// cost of such a header), configured to allow every origin and header, as `{}` does here.
	b.Run("acrh-1MiB/rscors", func(b *testing.B) {
		handler := cors.New(cors.Options{AllowedOrigins: []string{"*"}, AllowedHeaders: []string{"*"},
			OptionsSuccessStatus: 204}).Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		hr, err := http.NewRequest("OPTIONS", "https://api.test/x", nil)
		if err != nil {
			b.Fatal(err)
		}
		hr.Header.Set("Origin", "https://a.test")
		hr.Header.Set("Access-Control-Request-Method", "GET")
		hr.Header.Set("Access-Control-Request-Headers", huge)
		w := &sinkWriter{h: http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			clear(w.h)
			handler.ServeHTTP(w, hr)
		}
	})
}
