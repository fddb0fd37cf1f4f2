package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/cors-extproc/cors-extproc/internal/envoytest"
)

// wireRequest is one HTTP request as Chromium itself reports it over DevTools (the Network
// domain): what it put on the wire and what came back, before any CORS check hid a thing from
// the page. It is the browser's side of every exchange, whichever front served it: no front is
// trusted to say what the browser got.
type wireRequest struct {
	Method string
	URL    *url.URL
	// Request is the header Chromium sent, Cookie included (requestWillBeSentExtraInfo).
	Request http.Header
	// Status and Response are what Chromium received (responseReceivedExtraInfo): the fields in
	// the order and spelling of the wire, read from the response head's verbatim text.
	Status   int
	Response envoytest.Headers

	sent, received bool
}

// wireLog collects the Network events of the browser's tab by request id. The events of one
// request come in no fixed order: the ExtraInfo events may arrive before requestWillBeSent, or
// after fetch has settled in the page.
type wireLog struct {
	mu    sync.Mutex
	byID  map[network.RequestID]*wireRequest
	order []network.RequestID
}

// listenWire records the Network events of the tab of ctx from now on.
func listenWire(ctx context.Context) (*wireLog, error) {
	w := &wireLog{byID: map[network.RequestID]*wireRequest{}}
	if err := chromedp.Listen(ctx, w.event); err != nil {
		return nil, err
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		return nil, fmt.Errorf("Network.enable: %w", err)
	}
	return w, nil
}

// event runs on chromedp's reading goroutine: it only files the event.
func (w *wireLog) event(ev any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		r := w.request(ev.RequestID)
		r.Method = ev.Request.Method
		r.URL, _ = url.Parse(ev.Request.URL)
	case *network.EventRequestWillBeSentExtraInfo:
		r := w.request(ev.RequestID)
		r.Request = httpHeader(ev.Headers)
		r.sent = true
	case *network.EventResponseReceivedExtraInfo:
		r := w.request(ev.RequestID)
		r.Status = int(ev.StatusCode)
		r.Response = responseFields(ev.HeadersText, ev.Headers)
		r.received = true
	}
}

func (w *wireLog) request(id network.RequestID) *wireRequest {
	r, ok := w.byID[id]
	if !ok {
		r = &wireRequest{}
		w.byID[id] = r
		w.order = append(w.order, id)
	}
	return r
}

// exchanged returns the requests to a path starting with prefix that Chromium sent and got an
// answer to, in the order Chromium first reported them. It waits until there are at least n of
// them, or 5 s: the ExtraInfo events may trail the page's fetch.
func (w *wireLog) exchanged(prefix string, n int) []wireRequest {
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := w.complete(prefix)
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (w *wireLog) complete(prefix string) []wireRequest {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []wireRequest
	for _, id := range w.order {
		r := w.byID[id]
		if r.URL != nil && r.sent && r.received && strings.HasPrefix(r.URL.Path, prefix) {
			out = append(out, *r)
		}
	}
	return out
}

// httpHeader turns DevTools headers (repeated fields joined by "\n") into an http.Header.
func httpHeader(h network.Headers) http.Header {
	out := http.Header{}
	for k, v := range h {
		s, _ := v.(string)
		for _, line := range strings.Split(s, "\n") {
			out.Add(k, line)
		}
	}
	return out
}

// responseFields reads the header fields of an HTTP/1.x response head ("HTTP/1.1 200 OK\r\n"
// then one field a line) in their order and spelling. Without the text (HTTP/2 has none) the
// fields come from the DevTools map, in sorted order.
func responseFields(text string, h network.Headers) envoytest.Headers {
	if text == "" {
		return toEnvoy(httpHeader(h))
	}
	var out envoytest.Headers
	lines := strings.Split(text, "\r\n")
	for _, line := range lines[1:] {
		if line == "" {
			break
		}
		k, v, _ := strings.Cut(line, ":")
		out = append(out, envoytest.Header{Key: k, Value: strings.Trim(v, " \t")})
	}
	return out
}

// exchange is one HTTP request of a case: what the browser sent and got (wireRequest) beside
// what the front side did with it (served).
type exchange struct {
	Route, Method, Host, Path string
	// Request is the header the browser sent.
	Request   http.Header
	Preflight bool
	// Answered, UpstreamCalled, UpstreamHeader and Err are the front's (see served).
	Answered       bool
	UpstreamCalled bool
	UpstreamHeader envoytest.Headers
	Err            string
	// Status and Response are what the browser got.
	Status   int
	Response envoytest.Headers
	// Unserved: the browser got an answer the front side has no record of (Envoy answered
	// itself, without the service).
	Unserved bool
}

// join pairs each request the front side served with the browser's record of it: the first
// not yet paired with the same method, host and path (a case's requests follow one another, so
// order settles repeats). A served request the browser has no answer to is an error; an answer
// without a served request is kept, marked Unserved, for the checks to judge.
func join(srv []served, wire []wireRequest) ([]exchange, error) {
	used := make([]bool, len(wire))
	var out []exchange
	var missing []string
	for _, sv := range srv {
		ex := exchange{Route: sv.Route, Method: sv.Method, Host: sv.Host, Path: sv.Path, Preflight: sv.Preflight,
			Answered: sv.Answered, UpstreamCalled: sv.UpstreamCalled, UpstreamHeader: sv.UpstreamHeader, Err: sv.Err}
		i := -1
		for j, w := range wire {
			if !used[j] && w.Method == sv.Method && hostname(w.URL.Host) == hostname(sv.Host) && w.URL.RequestURI() == sv.Path {
				i = j
				break
			}
		}
		if i < 0 {
			missing = append(missing, sv.Method+" "+sv.Path)
		} else {
			used[i] = true
			ex.Request, ex.Status, ex.Response = wire[i].Request, wire[i].Status, wire[i].Response
		}
		out = append(out, ex)
	}
	for j, w := range wire {
		if !used[j] {
			out = append(out, exchange{Method: w.Method, Host: w.URL.Host, Path: w.URL.RequestURI(),
				Request: w.Request, Preflight: isPreflight(w.Method, w.Request),
				Status: w.Status, Response: w.Response, Unserved: true})
		}
	}
	if len(missing) > 0 {
		return out, fmt.Errorf("served, but Chromium reports no answer to: %s", strings.Join(missing, "; "))
	}
	return out, nil
}

func TestJoinPairsInOrder(t *testing.T) {
	u := func(s string) *url.URL {
		p, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	srv := []served{
		{Method: "OPTIONS", Host: "a.test", Path: "/c/x/item", Preflight: true, Answered: true},
		{Method: "PUT", Host: "a.test", Path: "/c/x/item", UpstreamCalled: true},
		{Method: "OPTIONS", Host: "a.test", Path: "/c/x/item", Preflight: true, Answered: true},
		{Method: "GET", Host: "a.test", Path: "/c/x/lost"},
	}
	wire := []wireRequest{
		{Method: "PUT", URL: u("http://a.test/c/x/item"), Status: 201},
		{Method: "OPTIONS", URL: u("http://a.test/c/x/item"), Status: 204},
		{Method: "OPTIONS", URL: u("http://a.test/c/x/item"), Status: 200},
		{Method: "GET", URL: u("http://b.test/c/x/lost"), Status: 502},
	}
	got, err := join(srv, wire)
	if err == nil || !strings.Contains(err.Error(), "GET /c/x/lost") {
		t.Errorf("join error %v, want one naming GET /c/x/lost", err)
	}
	want := []struct {
		method   string
		status   int
		unserved bool
	}{{"OPTIONS", 204, false}, {"PUT", 201, false}, {"OPTIONS", 200, false}, {"GET", 0, false}, {"GET", 502, true}}
	if len(got) != len(want) {
		t.Fatalf("%d exchanges, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].Method != w.method || got[i].Status != w.status || got[i].Unserved != w.unserved {
			t.Errorf("exchange %d: %s %d unserved=%v, want %s %d unserved=%v", i, got[i].Method, got[i].Status, got[i].Unserved, w.method, w.status, w.unserved)
		}
	}
}

func TestResponseFieldsKeepOrderAndSpelling(t *testing.T) {
	text := "HTTP/1.1 204 No Content\r\naccess-control-allow-origin: http://a.test\r\nVary: Origin\r\nvary:  x-y \r\n\r\n"
	want := envoytest.Headers{{Key: "access-control-allow-origin", Value: "http://a.test"}, {Key: "Vary", Value: "Origin"}, {Key: "vary", Value: "x-y"}}
	if got := responseFields(text, nil); !slices.Equal(got, want) {
		t.Errorf("from the text: %v, want %v", got, want)
	}
	// Without the text (HTTP/2), the DevTools map: repeated fields joined by "\n".
	want = envoytest.Headers{{Key: "vary", Value: "Origin"}, {Key: "vary", Value: "x-y"}}
	if got := responseFields("", network.Headers{"Vary": "Origin\nx-y"}); !slices.Equal(got, want) {
		t.Errorf("from the map: %v, want %v", got, want)
	}
}
