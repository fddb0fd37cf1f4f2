package processor

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
	"github.com/cors-extproc/cors-extproc/internal/policy"
)

// FuzzProcess drives the real Server, behind a real gRPC server configured as the binary configures it, with
// arbitrary sequences of ProcessingRequests on one stream: any event order, missing or
// duplicated phases, garbage attributes and metadata text, enormous and non-UTF-8 header values,
// observability mode toggled mid-stream, no event set, pipelined messages, early half-close and
// cancellation. Envoy never sends most of these, which is the point: whatever a client sends,
// the server must not panic, must answer every message that takes a reply with exactly one reply
// of the matching kind (contract sections 1 and 4), must send none in observability mode or for
// a message with no event, and must end the stream with OK (contract section 5: a gRPC error costs the
// user a 500).
//
// The fuzz input is a small program (see fuzzProgram) rather than an encoded message, so that
// the fuzzer mutates structure (which event, which variant) as well as text.
func FuzzProcess(f *testing.F) {
	for _, seed := range fuzzSeeds {
		f.Add(seed)
	}
	h := newFuzzHarness(f)
	f.Fuzz(func(t *testing.T, program []byte) {
		h.run(t, program)
	})
}

// The fuzz program's layout. The first byte picks the server (newFuzzHarness), the x-cors-policy
// channel (bits 2-3: fuzzPolicyNone, fuzzPolicyPool followed by a pool index, fuzzPolicyText
// followed by a string, fuzzPolicyBoth) and, with fuzzHeadOversized, pads the x-cors-policy
// value past the default policy size limit. Then come operations, each a kind byte (fuzzOp*) and a
// variant byte (fuzzV* bits), followed, for messages, by the attributes' bytes when the variant
// asks for attributes and by the header bytes (method, origin, flags) for header events. A
// string is a length byte and that many bytes. An exhausted input reads as zeros, so every
// input is a valid program.
const (
	fuzzOpRequestHeaders = iota
	fuzzOpResponseHeaders
	fuzzOpRequestBody
	fuzzOpResponseBody
	fuzzOpRequestTrailers
	fuzzOpResponseTrailers
	fuzzOpNoEvent   // a ProcessingRequest with no event set: no reply
	fuzzOpCloseSend // half-close (an early EOF): replies owed still come, then OK
	fuzzOpCancel    // reset the stream; with fuzzVPipeline, before the replies owed arrive
	fuzzOpCount
)

const (
	fuzzVObserve        = 1 << 0 // observability_mode: no reply
	fuzzVProtocolConfig = 1 << 1 // protocol_config, whatever the message's place
	fuzzVMetadata       = 1 << 2 // a metadata_context that holds a cors namespace
	fuzzVPipeline       = 1 << 3 // do not wait for the reply before the next operation
	fuzzVAttrShift      = 4      // bits 4-5: fuzzAttr*
	fuzzVRouteName      = 1 << 6 // xds.route_name
	fuzzVTwice          = 1 << 7 // send the message twice: two replies
)

const (
	fuzzAttrNone    = iota
	fuzzAttrRoute   // xds.route_metadata from fuzzTexts (index byte)
	fuzzAttrVHost   // xds.virtual_host_metadata from fuzzTexts (index byte)
	fuzzAttrGarbage // one of fuzzGarbage* (selector byte)
)

// fuzzHeadOversized pads the x-cors-policy value with JSON whitespace to fuzzOversizedSource.
const fuzzHeadOversized = 1 << 4

const (
	fuzzPolicyNone = iota
	fuzzPolicyPool // x-cors-policy from fuzzJSON (index byte)
	fuzzPolicyText // x-cors-policy from the input (string)
	fuzzPolicyBoth // two x-cors-policy values, a pool one first
)

// Header bytes: method (fuzzMethods, or a string at fuzzMethodString), origin (fuzzOrigin*), then
// flags (fuzzF*). A response reads the method byte as its status and the flags as the upstream's
// headers.
const (
	fuzzOriginAbsent = iota
	fuzzOriginApp
	fuzzOriginAdmin
	fuzzOriginEvil
	fuzzOriginNull
	fuzzOriginString   // from the input
	fuzzOriginHuge     // 100 KiB, matching the regex and wildcard policies' shapes
	fuzzOriginNonUTF8  // bytes that are not UTF-8
	fuzzOriginJoined   // two origins comma-joined in one field
	fuzzOriginRepeated // two origin fields
	fuzzOriginCount
)

const (
	fuzzFRequestMethod  = 1 << 0 // access-control-request-method (response: upstream ACAO)
	fuzzFRequestHeaders = 1 << 1 // access-control-request-headers (response: upstream Vary)
	fuzzFPrivateNetwork = 1 << 2 // access-control-request-private-network: true
	fuzzFLegacyValue    = 1 << 3 // values in value, not raw_value (Envoy before 1.27)
	fuzzFGarbageValues  = 1 << 4 // the CORS request headers' values from the input
	fuzzFVaryOrigin     = 1 << 5 // vary: Origin among the headers
	fuzzFExtraHeader    = 1 << 6 // a header with a key from the input and a 100 KiB value
	fuzzFEndOfStream    = 1 << 7
)

// fuzzMethodString is the method byte (modulo len(fuzzMethods)+1) that reads the method from the
// input.
var fuzzMethods = []string{"GET", "OPTIONS", "POST", "", "options", "PUT"}

const fuzzMethodString = 6

const (
	fuzzGarbageRouteText   = iota // xds.route_metadata from the input
	fuzzGarbageVHostText          // xds.virtual_host_metadata from the input
	fuzzGarbageMutatedText        // a fuzzTexts entry cut at a position and continued from the input
	fuzzGarbageNotString          // xds.route_metadata as a number, a bool, a struct or a list
	fuzzGarbageOtherKey           // attributes under another filter's key, and a nil Struct
	fuzzGarbageDebugToken         // the 1.37.0 debug token followed by the input
	fuzzGarbageOversized          // a fuzzTexts entry padded to fuzzOversizedSource
	fuzzGarbageCount
)

const (
	fuzzMaxOps        = 48
	fuzzHugeValueSize = 100 << 10
	// fuzzOversizedSource is past DefaultLimits.MaxSourceBytes: such a source is not parsed.
	fuzzOversizedSource = 40 << 10
	// fuzzStreamTimeout bounds one program's stream: a reply that never comes shows up as the
	// stream's deadline instead of a hung fuzzer. It is far above any real exchange, so a slow
	// shared machine cannot make it fire.
	fuzzStreamTimeout = 20 * time.Second
	// fuzzStreamKey tags each stream so that the interceptor reports the handler's result to the
	// program that opened it.
	fuzzStreamKey = "x-fuzz-stream"
)

const (
	fuzzApp   = "https://app.example.com"
	fuzzAdmin = "https://admin.example.com"
	fuzzEvil  = "https://evil.test"
)

// fuzzNamed is the servers' named-policy file; "broken" is unusable (semantics section 10).
const fuzzNamed = `
strict: {origins: ["https://app.example.com"], credentials: true, max_age: 60}
open: {origins: ["*"]}
broken: {max_age: -1}
`

// fuzzPolicies are the policies the pools are made of: usable, unusable and named ones, with
// every field that changes the server's path.
var fuzzPolicies = []map[string]any{
	{"origins": []string{fuzzApp, fuzzAdmin}, "credentials": true, "exposed_headers": []string{"x-total"},
		"headers": []string{"content-type"}, "max_age": 600},
	{"origins": []string{"*"}},
	{},
	{"origins": []string{`https://.*\.example\.com`, "https://*.example.org"}, "credentials": true},
	{"origins": []string{`app\.example\.com|bar\.test`}},
	{"ref": "strict"},
	{"ref": "missing"},
	{"ref": "broken"},
	{"max_age": -1},
	{"origins": []string{fuzzApp}, "unknown": true},
	{"origins": []string{fuzzApp}, "preflight_continue": true},
	{"origins": []string{fuzzApp}, "private_network": true, "allow_origin_absent": false, "preflight_status": 200},
	{"origins": []string{fuzzApp}, "report_only": true},
	{"origins": []string{"*"}, "credentials": true},
	{"origins": []string{"https://(bad"}},
	{"ref": "strict", "credentials": true},
	{"origins": 5},
}

// fuzzTexts is the pool of metadata texts: every policy in the cors namespace, Envoy Gateway
// annotations (found, missing, beside a cors namespace), another namespace only, each printed
// the three ways Envoy prints it (contract section 3); then the empty text and a lone debug
// token.
var fuzzTexts = func() []string {
	var mds []*corev3.Metadata
	for _, p := range fuzzPolicies {
		mds = append(mds, envoyfilter.Metadata("cors", p))
	}
	gateway := func(name string) map[string]any {
		return map[string]any{"resources": []any{
			map[string]any{"kind": "HTTPRoute", "annotations": map[string]any{"other": "x"}},
			map[string]any{"kind": "HTTPRoute", "annotations": map[string]any{"cors-policy": name}},
		}}
	}
	mds = append(mds,
		envoyfilter.Metadata("envoy-gateway", gateway("strict")),
		envoyfilter.Metadata("envoy-gateway", gateway("missing")),
		envoyfilter.MetadataNamespaces(map[string]map[string]any{"cors": fuzzPolicies[1], "envoy-gateway": gateway("strict")}),
		envoyfilter.Metadata("other", fuzzPolicies[0]),
	)
	var texts []string
	for _, f := range []envoyfilter.MetadataFormat{envoyfilter.OneLine, envoyfilter.MultiLine, envoyfilter.Debug1370, envoyfilter.OneLineTrailingSpace} {
		for _, md := range mds {
			text, err := envoyfilter.MetadataText(md, f)
			if err != nil {
				panic(err)
			}
			texts = append(texts, text)
		}
	}
	return append(texts, "", "goo.gle/debugonly")
}()

// fuzzJSON is the pool of x-cors-policy values: every policy as JSON, then values that are not
// a policy.
var fuzzJSON = func() []string {
	var out []string
	for _, p := range fuzzPolicies {
		b, err := json.Marshal(p)
		if err != nil {
			panic(err)
		}
		out = append(out, string(b))
	}
	return append(out, "not json", "[]", "null", `{"ref":`)
}()

// fuzzSeeds are realistic streams, as Envoy sends them, for the fuzzer to mutate: a preflight,
// an actual request, a local reply first, observability mode, each policy channel, a request
// with bodies and trailers, an unusable policy, a report-only server, pipelining, cancellation,
// an early half-close and sources past the size limit.
var fuzzSeeds = [][]byte{
	// A preflight on a route whose metadata holds the policy, answered at once.
	{0, fuzzOpRequestHeaders, fuzzVProtocolConfig | fuzzAttrRoute<<fuzzVAttrShift | fuzzVRouteName, 0,
		1, fuzzOriginApp, fuzzFRequestMethod | fuzzFRequestHeaders | fuzzFEndOfStream},
	// An actual request and its response.
	{0, fuzzOpRequestHeaders, fuzzVProtocolConfig | fuzzAttrRoute<<fuzzVAttrShift, 0, 0, fuzzOriginApp, fuzzFEndOfStream,
		fuzzOpResponseHeaders, 0, 0, fuzzOriginAbsent, fuzzFRequestHeaders | fuzzFEndOfStream},
	// A local reply before ext_proc: response_headers first.
	{0, fuzzOpResponseHeaders, fuzzVProtocolConfig, 3, fuzzOriginAbsent, fuzzFEndOfStream},
	// Observability mode: no replies.
	{0, fuzzOpRequestHeaders, fuzzVObserve | fuzzVProtocolConfig | fuzzAttrRoute<<fuzzVAttrShift, 0, 0, fuzzOriginApp, fuzzFEndOfStream,
		fuzzOpResponseHeaders, fuzzVObserve, 0, fuzzOriginAbsent, fuzzFEndOfStream},
	// x-cors-policy as JSON (a ref), an actual request without Origin.
	{fuzzPolicyPool << 2, 5, fuzzOpRequestHeaders, fuzzVProtocolConfig, 2, fuzzOriginAbsent, fuzzFEndOfStream,
		fuzzOpResponseHeaders, 0, 0, fuzzOriginAbsent, fuzzFVaryOrigin | fuzzFEndOfStream},
	// Envoy Gateway's annotation, multi-line text, a request with bodies and trailers.
	{0, fuzzOpRequestHeaders, fuzzVProtocolConfig | fuzzAttrRoute<<fuzzVAttrShift, byte(len(fuzzPolicies) + 4 + 17), 2, fuzzOriginAdmin, 0,
		fuzzOpRequestBody, 0, fuzzOpRequestTrailers, 0,
		fuzzOpResponseHeaders, 0, 0, fuzzOriginAbsent, 0, fuzzOpResponseBody, 0, fuzzOpResponseTrailers, 0},
	// Virtual-host metadata only, 1.37.0's debug form, an unusable policy: 403 to a preflight.
	{0, fuzzOpRequestHeaders, fuzzVProtocolConfig | fuzzAttrVHost<<fuzzVAttrShift, byte(2*(len(fuzzPolicies)+4) + 8),
		1, fuzzOriginEvil, fuzzFRequestMethod | fuzzFPrivateNetwork | fuzzFEndOfStream},
	// The report-only server with a default policy, a preflight.
	{2, fuzzOpRequestHeaders, fuzzVProtocolConfig, 1, fuzzOriginApp, fuzzFRequestMethod | fuzzFEndOfStream},
	// The server with a default policy and a tiny cache, an actual request.
	{1, fuzzOpRequestHeaders, fuzzVProtocolConfig | fuzzAttrRoute<<fuzzVAttrShift, 3, 0, fuzzOriginHuge, fuzzFEndOfStream,
		fuzzOpResponseHeaders, 0, 0, fuzzOriginAbsent, fuzzFEndOfStream},
	// Pipelined messages, then a reset with replies owed.
	{0, fuzzOpRequestHeaders, fuzzVPipeline | fuzzVProtocolConfig | fuzzAttrRoute<<fuzzVAttrShift, 13, 0, fuzzOriginNull, 0,
		fuzzOpRequestBody, fuzzVPipeline, fuzzOpResponseHeaders, fuzzVPipeline, 0, fuzzOriginAbsent, 0, fuzzOpCancel, fuzzVPipeline},
	// An early half-close after the request phase.
	{0, fuzzOpRequestHeaders, fuzzVProtocolConfig | fuzzAttrRoute<<fuzzVAttrShift, 1, 0, fuzzOriginJoined, fuzzFEndOfStream,
		fuzzOpCloseSend, 0},
	// An x-cors-policy value past the size limit, and route metadata text past it.
	{fuzzHeadOversized | fuzzPolicyPool<<2 | 1, 0, fuzzOpRequestHeaders, fuzzVProtocolConfig, 0, fuzzOriginApp, fuzzFEndOfStream,
		fuzzOpResponseHeaders, 0, 0, fuzzOriginAbsent, fuzzFEndOfStream},
	{0, fuzzOpRequestHeaders, fuzzVProtocolConfig | fuzzAttrGarbage<<fuzzVAttrShift, fuzzGarbageOversized, 0,
		1, fuzzOriginApp, fuzzFRequestMethod | fuzzFEndOfStream},
	// Garbage metadata text from the input.
	{0, fuzzOpRequestHeaders, fuzzAttrGarbage << fuzzVAttrShift, fuzzGarbageRouteText, 9, 'f', 'i', 'l', 't', 'e', 'r', '_', 'm', '{',
		1, fuzzOriginApp, fuzzFRequestMethod},
}

// fuzzHarness is the servers a program can pick and what their streams ended with.
type fuzzHarness struct {
	conns []*grpc.ClientConn
	next  atomic.Uint64

	mu    sync.Mutex
	ended map[string]chan error // by fuzzStreamKey
}

// newFuzzHarness starts the servers a program picks from: one with the named policies and no
// default; one whose default policy is "open", whose caches hold two entries (eviction all the
// time) and whose limits are tiny, so that strings from the input cross them, and which returns
// decisions as dynamic metadata; one in report-only mode with the default policy "strict". All
// log at debug level, so that the log calls see every garbage value too.
func newFuzzHarness(f *testing.F) *fuzzHarness {
	named, _, err := policy.ParseNamed([]byte(fuzzNamed))
	if err != nil && named == nil {
		f.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := &fuzzHarness{ended: map[string]chan error{}}
	for _, opts := range []Options{
		{Policies: named, Logger: log},
		{Policies: named, DefaultPolicy: "open", CacheSize: 2, Logger: log, DynamicMetadataNamespace: "cors-extproc",
			Limits: Limits{Policy: policy.Limits{MaxOrigins: 2, MaxRegexInsts: 40}, MaxSourceBytes: 256, MaxHeaderValueBytes: 64}},
		{Policies: named, DefaultPolicy: "strict", ReportOnly: true, Logger: log},
	} {
		srv, err := New(opts)
		if err != nil {
			f.Fatal(err)
		}
		h.conns = append(h.conns, h.serve(f, srv))
	}
	return h
}

// serve runs srv as the binary does (gRPC's default codec) on an in-memory listener, with an
// interceptor that hands the handler's result to the program that opened the stream.
func (h *fuzzHarness) serve(f *testing.F, srv *Server) *grpc.ClientConn {
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer(grpc.StreamInterceptor(h.intercept))
	extprocv3.RegisterExternalProcessorServer(s, srv)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = s.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.Stop()
		f.Fatal(err)
	}
	f.Cleanup(func() {
		_ = conn.Close()
		s.Stop()
		<-served
	})
	return conn
}

func (h *fuzzHarness) intercept(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	if id := metadata.ValueFromIncomingContext(ss.Context(), fuzzStreamKey); len(id) == 1 {
		h.mu.Lock()
		ch := h.ended[id[0]]
		h.mu.Unlock()
		if ch != nil {
			ch <- err
		}
	}
	return err
}

// fuzzReply is one thing the client's stream delivered: a reply, or the stream's end.
type fuzzReply struct {
	msg *extprocv3.ProcessingResponse
	err error
}

// fuzzRun is one program being played on one stream.
type fuzzRun struct {
	t       *testing.T
	in      fuzzProgram
	stream  extprocv3.ExternalProcessor_ProcessClient
	replies chan fuzzReply
	ended   chan error
	owed    []string // the kinds of the replies owed, in order
	sent    int
}

// run plays program on a new stream and checks the replies and the stream's end.
func (h *fuzzHarness) run(t *testing.T, program []byte) {
	in := fuzzProgram{data: program}
	head := in.byte()
	conn := h.conns[int(head)%len(h.conns)]

	id := strconv.FormatUint(h.next.Add(1), 10)
	ended := make(chan error, 1)
	h.mu.Lock()
	h.ended[id] = ended
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.ended, id)
		h.mu.Unlock()
	}()

	md := metadata.Pairs(fuzzStreamKey, id)
	pad := func(v string) string {
		if head&fuzzHeadOversized != 0 {
			v += strings.Repeat(" ", max(fuzzOversizedSource-len(v), 0))
		}
		return v
	}
	switch head >> 2 & 3 {
	case fuzzPolicyPool:
		md.Append(grpcPolicyKey, pad(in.pick(fuzzJSON)))
	case fuzzPolicyText:
		md.Append(grpcPolicyKey, pad(printableASCII(in.str())))
	case fuzzPolicyBoth:
		md.Append(grpcPolicyKey, pad(in.pick(fuzzJSON)), printableASCII(in.str()))
	}
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), md), fuzzStreamTimeout)
	defer cancel()
	stream, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		t.Fatalf("opening the stream: %v", err)
	}
	r := &fuzzRun{t: t, in: in, stream: stream, replies: make(chan fuzzReply, 2*fuzzMaxOps+1), ended: ended}
	readerDone := make(chan struct{})
	go func() {
		// Never blocks: the channel holds a reply for every message and the end; a server
		// sending more replies than that has already failed the check of the first extra one.
		defer close(readerDone)
		for {
			m, err := stream.Recv()
			select {
			case r.replies <- fuzzReply{m, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		cancel()
		<-readerDone
	}()
	r.play(cancel)
}

// play runs the operations, then half-closes the stream unless an operation ended it.
func (r *fuzzRun) play(cancel context.CancelFunc) {
	for ops := 0; ops < fuzzMaxOps && !r.in.done(); ops++ {
		op, variant := r.in.byte()%fuzzOpCount, r.in.byte()
		switch op {
		case fuzzOpCloseSend:
			r.closeAndExpectOK()
			return
		case fuzzOpCancel:
			if variant&fuzzVPipeline == 0 {
				r.collect()
			}
			cancel()
			r.expectHandlerOK()
			return
		}
		msg, want := r.message(op, variant)
		copies := 1
		if variant&fuzzVTwice != 0 {
			copies = 2
		}
		for range copies {
			if err := r.stream.Send(msg); err != nil {
				// The server ended the stream: the reader has its status.
				r.t.Fatalf("message %d (%s) could not be sent: %v; the stream ended with %v", r.sent, kindOf(op), err, r.end())
			}
			r.sent++
			if want != "" {
				r.owed = append(r.owed, want)
			}
		}
		if variant&fuzzVPipeline == 0 {
			r.collect()
		}
	}
	r.closeAndExpectOK()
}

// collect receives the replies owed and checks each against the kind of its message.
func (r *fuzzRun) collect() {
	for _, want := range r.owed {
		got := <-r.replies
		if got.err != nil {
			r.t.Fatalf("no reply to a %s message: the stream ended with %v (handler: %v)", want, got.err, r.handlerResult())
		}
		checkFuzzReply(r.t, want, got.msg)
	}
	r.owed = r.owed[:0]
}

// closeAndExpectOK half-closes the stream (Envoy's normal end, or an early EOF): the replies
// owed must come, then the end with OK and nothing else.
func (r *fuzzRun) closeAndExpectOK() {
	if err := r.stream.CloseSend(); err != nil {
		r.t.Fatalf("half-close: %v", err)
	}
	r.collect()
	if err := r.end(); err != io.EOF {
		r.t.Fatalf("after the last reply the stream must end with OK, got %v", err)
	}
	r.expectHandlerOK()
}

// end returns the error that ended the client's stream, failing on any further reply.
func (r *fuzzRun) end() error {
	got := <-r.replies
	if got.err == nil {
		r.t.Fatalf("a reply no message asked for (one reply per message, none in observability mode or without an event): %v", got.msg)
	}
	return got.err
}

// expectHandlerOK checks that Process returned nil: a cancelled stream is a normal end
// (contract section 1), and any error would reach Envoy as a 500.
func (r *fuzzRun) expectHandlerOK() {
	if err := r.handlerResult(); err != nil {
		r.t.Fatalf("Process returned an error for something a client can send: %v", err)
	}
}

func (r *fuzzRun) handlerResult() error {
	select {
	case err := <-r.ended:
		r.ended <- err // keep it for a later look
		return err
	case <-time.After(fuzzStreamTimeout):
		r.t.Fatalf("Process did not return within %v of the stream's end", fuzzStreamTimeout)
		return nil
	}
}

// message builds the ProcessingRequest of op and returns the reply kind it takes ("" for none).
func (r *fuzzRun) message(op, variant byte) (*extprocv3.ProcessingRequest, string) {
	m := &extprocv3.ProcessingRequest{ObservabilityMode: variant&fuzzVObserve != 0}
	if variant&fuzzVProtocolConfig != 0 {
		m.ProtocolConfig = &extprocv3.ProtocolConfiguration{SendBodyWithoutWaitingForHeaderResponse: true}
	}
	if variant&fuzzVMetadata != 0 {
		m.MetadataContext = envoyfilter.Metadata("cors", fuzzPolicies[1])
	}
	m.Attributes = r.attributes(variant)
	want := kindOf(op)
	switch op {
	case fuzzOpRequestHeaders:
		m.Request = &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: r.headers(true)}
	case fuzzOpResponseHeaders:
		m.Request = &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: r.headers(false)}
	case fuzzOpRequestBody:
		m.Request = &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte("{}"), EndOfStream: true}}
	case fuzzOpResponseBody:
		m.Request = &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte("\xff\x00")}}
	case fuzzOpRequestTrailers:
		m.Request = &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}
	case fuzzOpResponseTrailers:
		m.Request = &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{
			Trailers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "grpc-status", RawValue: []byte("0")}}}}}
	default:
		want = ""
	}
	if m.ObservabilityMode {
		want = ""
	}
	return m, want
}

// attributes builds the attributes map the variant asks for.
func (r *fuzzRun) attributes(variant byte) map[string]*structpb.Struct {
	fields := map[string]*structpb.Value{}
	if variant&fuzzVRouteName != 0 {
		fields[attrRouteName] = structpb.NewStringValue("api")
	}
	attrs := map[string]*structpb.Struct{attributesKey: {Fields: fields}}
	switch variant >> fuzzVAttrShift & 3 {
	case fuzzAttrNone:
		if len(fields) == 0 {
			return nil
		}
	case fuzzAttrRoute:
		fields[attrRouteMetadata] = structpb.NewStringValue(r.in.pick(fuzzTexts))
	case fuzzAttrVHost:
		fields[attrVirtualHostMeta] = structpb.NewStringValue(r.in.pick(fuzzTexts))
	case fuzzAttrGarbage:
		switch r.in.byte() % fuzzGarbageCount {
		case fuzzGarbageRouteText:
			fields[attrRouteMetadata] = structpb.NewStringValue(validUTF8(r.in.str()))
		case fuzzGarbageVHostText:
			fields[attrVirtualHostMeta] = structpb.NewStringValue(validUTF8(r.in.str()))
		case fuzzGarbageMutatedText:
			text := r.in.pick(fuzzTexts)
			text = text[:int(r.in.byte())*len(text)/256] + r.in.str()
			fields[attrRouteMetadata] = structpb.NewStringValue(validUTF8(text))
		case fuzzGarbageNotString:
			fields[attrRouteMetadata] = [...]*structpb.Value{
				structpb.NewNumberValue(600), structpb.NewBoolValue(true), structpb.NewNullValue(),
				structpb.NewStructValue(envoyfilter.Struct(fuzzPolicies[0])), structpb.NewListValue(&structpb.ListValue{}),
			}[r.in.byte()%5]
		case fuzzGarbageOtherKey:
			attrs["envoy.filters.http.other"] = &structpb.Struct{Fields: map[string]*structpb.Value{
				attrRouteMetadata: structpb.NewStringValue(r.in.pick(fuzzTexts))}}
			attrs[attributesKey] = nil
		case fuzzGarbageDebugToken:
			fields[attrRouteMetadata] = structpb.NewStringValue("goo.gle/debugonly  " + validUTF8(r.in.str()))
		case fuzzGarbageOversized:
			text := r.in.pick(fuzzTexts)
			fields[attrRouteMetadata] = structpb.NewStringValue(text + strings.Repeat("\n", max(fuzzOversizedSource-len(text), 0)))
		}
	}
	return attrs
}

// headers builds a request's or a response's header map from the header bytes.
func (r *fuzzRun) headers(request bool) *extprocv3.HttpHeaders {
	methodByte, originByte := r.in.byte(), r.in.byte()
	method := ""
	if i := int(methodByte) % (len(fuzzMethods) + 1); i == fuzzMethodString {
		method = r.in.str()
	} else {
		method = fuzzMethods[i]
	}
	var origins []string
	switch originByte % fuzzOriginCount {
	case fuzzOriginApp:
		origins = []string{fuzzApp}
	case fuzzOriginAdmin:
		origins = []string{fuzzAdmin}
	case fuzzOriginEvil:
		origins = []string{fuzzEvil}
	case fuzzOriginNull:
		origins = []string{"null"}
	case fuzzOriginString:
		origins = []string{r.in.str()}
	case fuzzOriginHuge:
		origins = []string{"https://" + strings.Repeat("a.", fuzzHugeValueSize/2) + "example.com"}
	case fuzzOriginNonUTF8:
		origins = []string{"https://\xff\xfe\xc0.example.com"}
	case fuzzOriginJoined:
		origins = []string{fuzzApp + ", " + fuzzEvil}
	case fuzzOriginRepeated:
		origins = []string{fuzzEvil, fuzzApp}
	}
	flags := r.in.byte()
	value := func(fixed string) string {
		if flags&fuzzFGarbageValues != 0 {
			return r.in.str()
		}
		return fixed
	}

	var hs []*corev3.HeaderValue
	add := func(k, v string) {
		h := &corev3.HeaderValue{Key: validUTF8(k)}
		if flags&fuzzFLegacyValue != 0 {
			// A string field: it must be UTF-8 to be sent at all, as in Envoy before 1.27.
			h.Value = validUTF8(v)
		} else {
			h.RawValue = []byte(v)
		}
		hs = append(hs, h)
	}
	if request {
		add(":method", method)
		add(":path", "/")
		add(":scheme", "https")
		add(":authority", "api.example.com")
	} else {
		add(":status", [...]string{"200", "204", "503", ""}[methodByte%4])
	}
	for _, o := range origins {
		add(policy.HeaderOrigin, o)
	}
	switch {
	case request:
		if flags&fuzzFRequestMethod != 0 {
			add(policy.HeaderRequestMethod, value("PUT"))
		}
		if flags&fuzzFRequestHeaders != 0 {
			add(policy.HeaderRequestHeaders, value("content-type, x-custom"))
		}
		if flags&fuzzFPrivateNetwork != 0 {
			add(policy.HeaderRequestPrivateNetwork, value("true"))
		}
	default:
		if flags&fuzzFRequestMethod != 0 {
			add(policy.HeaderAllowOrigin, value("*"))
		}
		if flags&fuzzFRequestHeaders != 0 {
			add(policy.HeaderVary, value("Accept-Encoding"))
		}
	}
	if flags&fuzzFVaryOrigin != 0 {
		add(policy.HeaderVary, "Origin")
	}
	if flags&fuzzFExtraHeader != 0 {
		add(strings.ToLower(r.in.str()), strings.Repeat("\x7f", fuzzHugeValueSize))
	}
	return &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: hs}, EndOfStream: flags&fuzzFEndOfStream != 0}
}

// checkFuzzReply checks that reply is of the kind its message takes (contract section 4:
// immediate_response only to request_headers) and that any header mutation is one Envoy
// applies: values in raw_value only, lower-case keys.
func checkFuzzReply(t *testing.T, want string, reply *extprocv3.ProcessingResponse) {
	t.Helper()
	var mutation *extprocv3.HeaderMutation
	got := ""
	switch r := reply.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		got, mutation = "request_headers", r.RequestHeaders.GetResponse().GetHeaderMutation()
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		got, mutation = "response_headers", r.ResponseHeaders.GetResponse().GetHeaderMutation()
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		got, mutation = "immediate_response", r.ImmediateResponse.GetHeaders()
		if want == "request_headers" {
			want = got
		}
	case *extprocv3.ProcessingResponse_RequestBody:
		got = "request_body"
	case *extprocv3.ProcessingResponse_ResponseBody:
		got = "response_body"
	case *extprocv3.ProcessingResponse_RequestTrailers:
		got = "request_trailers"
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		got = "response_trailers"
	default:
		got = "no response set"
	}
	if got != want {
		t.Fatalf("a %s message was answered with %s (Envoy answers the client 500): %v", want, got, reply)
	}
	for _, h := range mutation.GetSetHeaders() {
		if k := h.GetHeader().GetKey(); k == "" || k != strings.ToLower(k) || h.GetHeader().GetValue() != "" {
			t.Fatalf("header mutation %v: want a lower-case key and the value in raw_value only", h)
		}
	}
}

func kindOf(op byte) string {
	switch op {
	case fuzzOpRequestHeaders:
		return "request_headers"
	case fuzzOpResponseHeaders:
		return "response_headers"
	case fuzzOpRequestBody:
		return "request_body"
	case fuzzOpResponseBody:
		return "response_body"
	case fuzzOpRequestTrailers:
		return "request_trailers"
	case fuzzOpResponseTrailers:
		return "response_trailers"
	}
	return "no event"
}

// fuzzProgram reads the fuzz input; past its end every byte reads as zero.
type fuzzProgram struct {
	data []byte
	pos  int
}

func (p *fuzzProgram) done() bool { return p.pos >= len(p.data) }

func (p *fuzzProgram) byte() byte {
	if p.done() {
		return 0
	}
	b := p.data[p.pos]
	p.pos++
	return b
}

// str reads a length byte and up to that many bytes.
func (p *fuzzProgram) str() string {
	n := min(int(p.byte()), len(p.data)-p.pos)
	s := string(p.data[p.pos : p.pos+n])
	p.pos += n
	return s
}

// pick reads an index byte into pool.
func (p *fuzzProgram) pick(pool []string) string { return pool[int(p.byte())%len(pool)] }

// validUTF8 makes s sendable in a protobuf string field, which the client's marshaller (and
// Envoy's) requires to be UTF-8; non-UTF-8 bytes go in raw_value, a bytes field.
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// printableASCII makes s a valid gRPC metadata value, which gRPC clients refuse to send
// otherwise.
func printableASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}
