// Package envoytest plays Envoy's ext_proc HTTP filter against an ExternalProcessorServer, so
// that the processor can be tested without an Envoy binary. What the filter does to the data
// (metadata text, header mutations) is package envoyfilter, which binaries may link.
//
// Every behaviour follows the project's contract page, docs/envoy-extproc.md ("contract §N"
// below names its sections). Where the page is silent the behaviour follows Envoy's source
// (source/extensions/filters/http/ext_proc/); such places say so.
//
// Typical use:
//
//	envoy := envoytest.New(envoytest.Serve(t, srv), envoytest.Config{AllowModeOverride: true})
//	res, err := envoy.Do(ctx, route, envoytest.Request{Method: "OPTIONS", Headers: ...}, nil)
package envoytest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
)

// EndStyle is how Envoy ends the stream once it needs nothing more (contract §1).
type EndStyle int

const (
	// CloseSend half-closes the stream and waits (up to MessageTimeout) for the server to end
	// it; a message arriving meanwhile is an error (one reply per message, contract §1).
	CloseSend EndStyle = iota
	// Reset cancels the stream at once, as an RST from Envoy.
	Reset
)

// DefaultMessageTimeout is Envoy's default per-message timeout (contract §1).
const DefaultMessageTimeout = 200 * time.Millisecond

// DefaultRequestAttributes is the request_attributes list of the deploy's ext_proc filter
// (contract §3), plus xds.route_name so that the server can name routes in its logs.
var DefaultRequestAttributes = []string{envoyfilter.AttrRouteMetadata, envoyfilter.AttrVirtualHostMetadata, envoyfilter.AttrRouteName}

// filterName is the attributes key Envoy uses (contract §2).
const filterName = "envoy.filters.http.ext_proc"

// Errors Do and LocalReply wrap. With each, Result.Response still holds what the downstream
// client would get from Envoy.
var (
	// ErrTimeout: no reply within MessageTimeout; the client gets 504 (contract §1, §5).
	ErrTimeout = errors.New("envoytest: ext_proc message timeout, Envoy answers 504")
	// ErrStreamFailed: the server ended the stream with a gRPC error, or it could not be opened;
	// the client gets 500 (contract §5). The gRPC status is wrapped too (status.FromError).
	ErrStreamFailed = errors.New("envoytest: ext_proc stream failed, Envoy answers 500")
	// ErrContract: the server broke the contract: a reply of the wrong kind, an invalid header
	// mutation, a reply in observability mode, a second reply to one message.
	ErrContract = errors.New("envoytest: ext_proc contract broken")
	// ErrUnsupported: the server asked for something this client does not play (body or
	// trailer processing, CONTINUE_AND_REPLACE).
	ErrUnsupported = errors.New("envoytest: not played by this client")
)

// Config is the ext_proc filter configuration being played.
type Config struct {
	// AllowModeOverride is Envoy's allow_mode_override: mode_override in a reply is honoured
	// only when true, otherwise ignored (contract §4).
	AllowModeOverride bool
	// ObservabilityMode is Envoy's observability_mode: messages go out with
	// observability_mode=true, Envoy waits for no reply, and the exchange proceeds unmodified.
	// Any reply is an error (contract §1).
	ObservabilityMode bool
	// MetadataFormat is how metadata attributes are printed (contract §3).
	MetadataFormat envoyfilter.MetadataFormat
	// MessageTimeout is the per-message timeout; 0 means DefaultMessageTimeout (contract §1).
	MessageTimeout time.Duration
	// EndStream is how the stream is ended after the last reply (contract §1).
	EndStream EndStyle
	// RequestAttributes is Envoy's request_attributes; nil means DefaultRequestAttributes. Only
	// the Attr* names are played. No response_attributes are configured (contract §2).
	RequestAttributes []string
	// ReceivingNamespaces is metadata_options.receiving_namespaces.untyped: the namespaces of a
	// reply's dynamic_metadata that Envoy applies to the request's dynamic metadata; others
	// are dropped.
	ReceivingNamespaces []string
	// HeaderFilter, when set, plays the header filters placed after ext_proc that write a
	// response's headers from the request's dynamic metadata (docs/envoy-extproc.md section 7).
	HeaderFilter *HeaderFilter
	// ProcessingMode is the filter's processing_mode; nil is the deploy's (headers SEND, bodies
	// NONE). Only the header and body modes are played, and only response_header_mode SKIP
	// changes what is sent; a body mode other than NONE with a body is ErrUnsupported.
	ProcessingMode *procmodev3.ProcessingMode
	// SkipLocalReplies plays Envoy 1.36 (recorded; by Envoy's changelog 1.34 and 1.35 too,
	// runtime guard skip_ext_proc_on_local_reply): a response Envoy makes itself reaches no
	// ext_proc server. 1.37 on send it as they did before 1.34 (recorded): a router's local
	// reply like an upstream's response, a filter's ahead of ext_proc on a stream of its own
	// (LocalReply; contract section 1). ForRelease sets it.
	SkipLocalReplies bool
}

// ForRelease returns c set up as the Envoy release version ("1.40.0") behaves where releases
// differ: MetadataFormat and SkipLocalReplies. It knows the releases whose ext_proc messages
// are recorded in deploy/testdata/envoy-recordings: 1.36 prints metadata on one line and skips
// local replies; 1.37.0 prints the goo.gle/debug marker; 1.38 on print one line with a
// trailing space and send local replies (later releases are taken to behave as 1.40 until a
// recording says otherwise). Other releases are an error.
func (c Config) ForRelease(version string) (Config, error) {
	var major, minor, patch int
	if _, err := fmt.Sscanf(version, "%d.%d.%d", &major, &minor, &patch); err != nil || major != 1 {
		return c, fmt.Errorf("envoytest: Envoy release %q: want 1.MINOR.PATCH", version)
	}
	switch {
	case minor == 36:
		c.MetadataFormat, c.SkipLocalReplies = envoyfilter.OneLine, true
	case minor == 37 && patch == 0:
		c.MetadataFormat, c.SkipLocalReplies = envoyfilter.Debug1370, false
	case minor >= 38:
		c.MetadataFormat, c.SkipLocalReplies = envoyfilter.OneLineTrailingSpace, false
	default:
		return c, fmt.Errorf("envoytest: no recording of Envoy %s's ext_proc messages", version)
	}
	return c, nil
}

// Route is the route Envoy matched for the request, as far as ext_proc sees it.
type Route struct {
	// Name is the route name, sent as xds.route_name.
	Name string
	// Metadata is the route metadata, sent as xds.route_metadata in text format (contract §3).
	// nil is a route without metadata: Envoy then sends an empty string, as for any empty
	// message (Envoy source: the CEL xds.route_metadata lookup always yields the route's
	// metadata message when a route matched).
	Metadata *corev3.Metadata
	// VirtualHostMetadata is sent as xds.virtual_host_metadata, the same way.
	VirtualHostMetadata *corev3.Metadata
	// GRPCMetadata is gRPC initial metadata on the stream
	// (ExtProcPerRoute.overrides.grpc_initial_metadata, e.g. x-cors-policy, contract §3).
	GRPCMetadata map[string]string
	// Unmatched plays a request for which no route matched: Envoy then sends none of the xds.*
	// attributes (absent values are left out, contract §2).
	Unmatched bool
	// ProcessingMode is the route's ExtProcPerRoute overrides.processing_mode, nil for none:
	// its set fields replace the filter's (Config.ProcessingMode) until a honoured
	// mode_override replaces the mode.
	ProcessingMode *procmodev3.ProcessingMode
}

// Request is the downstream HTTP/1.1 request as the client sends it. Empty Method, Scheme,
// Authority and Path default to GET, https, example.com and /. Header keys are lower-cased as
// Envoy's codecs do; Headers must hold neither pseudo-headers nor host (that is Authority).
// Each field is sent as it is: to play Envoy joining two Origin headers (contract §2), write one
// field "a, b". Envoy's connection manager adds x-forwarded-proto and x-request-id after the
// client's headers when the client did not send them (recorded on every pinned release).
type Request struct {
	Method, Scheme, Authority, Path string
	Headers                         Headers
	// Body says the request has a body: request_headers then has end_of_stream false.
	Body bool
}

// Get returns the first value of a request header.
func (r Request) Get(key string) (string, bool) { return r.Headers.Get(key) }

// Values returns every value of a request header.
func (r Request) Values(key string) []string { return r.Headers.Values(key) }

// Response is an HTTP response: the upstream's, or what the downstream client gets. Status 0
// from an Upstream means 200.
type Response struct {
	Status  int
	Headers Headers
	Body    bool
	// Local, in what an Upstream returns: Envoy made this response itself after the request
	// phase instead of reaching the upstream (a router 503 or 504, a direct_response route, a
	// 403 or 429 from a filter after ext_proc). It carries no x-envoy-upstream-service-time,
	// which the router adds after an upstream's headers. Envoy 1.36 sends it to no ext_proc
	// server (SkipLocalReplies), so only the header filter decorates it; 1.37 on send it to
	// the response phase like an upstream's (recorded, deploy/testdata/envoy-recordings).
	Local bool
}

// Get returns the first value of a response header.
func (r Response) Get(key string) (string, bool) { return r.Headers.Get(key) }

// Values returns every value of a response header.
func (r Response) Values(key string) []string { return r.Headers.Values(key) }

// Upstream plays the upstream service. A nil Upstream answers 200 with no headers.
type Upstream func(Request) Response

// Result is what happened to one HTTP request.
type Result struct {
	// Response is what the downstream client finally gets.
	Response Response
	// Answered: the server replied with immediate_response.
	Answered bool
	// LocalReplyBody is the immediate_response body, if any.
	LocalReplyBody string
	// UpstreamCalled: the request reached the upstream (not so for a Local response).
	UpstreamCalled bool
	// UpstreamRequest is the request as the upstream saw it, after header mutations.
	UpstreamRequest Request
	// ResponsePhaseSent: response_headers was sent to the server.
	ResponsePhaseSent bool
	// ClosedByServer: the server ended the stream with OK before replying; Envoy then goes on
	// without processing (contract §5).
	ClosedByServer bool
	// Messages is the number of ProcessingRequests sent on the stream.
	Messages int
	// DynamicMetadata is the request's dynamic metadata as Envoy holds it after the exchange
	// (what an access log's %DYNAMIC_METADATA(ns:key)% reads), by namespace.
	DynamicMetadata map[string]*structpb.Struct
}

// Envoy plays one ext_proc filter. It is safe for concurrent use.
type Envoy struct {
	client extprocv3.ExternalProcessorClient
	cfg    Config
}

// New returns an Envoy that opens its streams on conn. It panics on a RequestAttributes entry it
// does not play.
func New(conn grpc.ClientConnInterface, cfg Config) *Envoy {
	if cfg.MessageTimeout <= 0 {
		cfg.MessageTimeout = DefaultMessageTimeout
	}
	if cfg.RequestAttributes == nil {
		cfg.RequestAttributes = DefaultRequestAttributes
	}
	for _, a := range cfg.RequestAttributes {
		switch a {
		case envoyfilter.AttrRouteMetadata, envoyfilter.AttrVirtualHostMetadata, envoyfilter.AttrRouteName:
		default:
			panic("envoytest: request attribute not played: " + a)
		}
	}
	cfg.RequestAttributes = append([]string(nil), cfg.RequestAttributes...)
	return &Envoy{client: extprocv3.NewExternalProcessorClient(conn), cfg: cfg}
}

// Do plays one HTTP request through the filter on its own stream (contract §1): request_headers
// (with the route's attributes and protocol_config), then, unless the server answered it with
// immediate_response or skipped the response phase, the upstream's response_headers. A non-nil
// error reports a broken contract or an Envoy-side failure; the Result is still what the client
// would get.
func (e *Envoy) Do(ctx context.Context, route Route, req Request, upstream Upstream) (Result, error) {
	req, err := normalizeRequest(req)
	if err != nil {
		return Result{}, err
	}
	req = connectionManagerHeaders(req)
	attrs, err := e.attributes(route)
	if err != nil {
		return Result{}, err
	}
	if upstream == nil {
		upstream = func(Request) Response { return Response{} }
	}
	x, err := e.open(ctx, route)
	if err != nil {
		return Result{Response: localReply(500)}, err
	}
	x.setMode(mergeMode(e.cfg.ProcessingMode, route.ProcessingMode))
	var res Result
	if e.cfg.ObservabilityMode {
		err = x.observe(&res, req, attrs, upstream)
	} else {
		err = x.request(ctx, &res, req, attrs, upstream)
	}
	if endErr := x.finish(err != nil); err == nil {
		err = endErr
	}
	res.Messages = x.messages
	return res, err
}

// LocalReply plays a filter that runs before ext_proc and replies locally (contract §1): the
// stream's first and only message is response_headers; no request phase is seen. With
// SkipLocalReplies no stream is opened and the reply goes out as it is.
func (e *Envoy) LocalReply(ctx context.Context, route Route, resp Response) (Result, error) {
	resp = normalizeResponse(resp)
	if e.cfg.SkipLocalReplies {
		return Result{Response: resp}, nil
	}
	x, err := e.open(ctx, route)
	if err != nil {
		return Result{Response: localReply(500)}, err
	}
	var res Result
	if e.cfg.ObservabilityMode {
		res.Response = resp
		res.ResponsePhaseSent = true
		x.send(responseHeaders(resp, true))
	} else {
		err = x.response(ctx, &res, resp)
	}
	if endErr := x.finish(err != nil); err == nil {
		err = endErr
	}
	res.Messages = x.messages
	return res, err
}

// exchange is one stream: one HTTP request's worth of messages.
type exchange struct {
	e          *Envoy
	stream     extprocv3.ExternalProcessor_ProcessClient
	cancel     context.CancelFunc
	replies    chan reply
	done       chan struct{} // closed when the exchange is over, releasing the reader
	readerDone chan struct{}
	messages   int
	ended      bool // the server ended the stream
	// mode is the stream's processing mode: the filter's, the route's on top, replaced by a
	// honoured mode_override; skipResponse says it skips response_headers.
	mode         *procmodev3.ProcessingMode
	skipResponse bool
}

type reply struct {
	msg *extprocv3.ProcessingResponse
	err error
}

// envoyAddress is the address the simulated Envoy gives as its own.
const envoyAddress = "192.0.2.1"

// open starts the stream, with the route's gRPC initial metadata (contract §3) after what
// Envoy's gRPC client sends on every stream (recorded on every pinned release): x-envoy-internal
// and x-forwarded-for with Envoy's own address.
func (e *Envoy) open(ctx context.Context, route Route) (*exchange, error) {
	sctx, cancel := context.WithCancel(ctx)
	md := metadata.Pairs("x-envoy-internal", "true", "x-forwarded-for", envoyAddress)
	for k, v := range route.GRPCMetadata {
		md.Append(k, v)
	}
	sctx = metadata.NewOutgoingContext(sctx, md)
	stream, err := e.client.Process(sctx)
	if err != nil {
		cancel()
		if cerr := ctxErr(ctx); cerr != nil {
			return nil, cerr // the caller's deadline passed while the stream opened
		}
		return nil, fmt.Errorf("%w: opening the stream: %w", ErrStreamFailed, err)
	}
	x := &exchange{
		e:          e,
		stream:     stream,
		cancel:     cancel,
		replies:    make(chan reply),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	go x.read()
	return x, nil
}

// read hands every message, then the stream's end, to the exchange.
func (x *exchange) read() {
	defer close(x.readerDone)
	for {
		m, err := x.stream.Recv()
		select {
		case x.replies <- reply{m, err}:
		case <-x.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// send sends m; protocol_config goes on the stream's first message only (contract §1). A send
// error means the stream has ended; await then reports how.
func (x *exchange) send(m *extprocv3.ProcessingRequest) {
	if x.messages == 0 {
		m.ProtocolConfig = &extprocv3.ProtocolConfiguration{}
	}
	m.MetadataContext = &corev3.Metadata{} // no forwarding namespaces configured (contract §2)
	m.ObservabilityMode = x.e.cfg.ObservabilityMode
	x.messages++
	_ = x.stream.Send(m)
}

// errClosed: the server ended the stream with OK.
var errClosed = errors.New("stream closed by the server")

// await waits for the reply to the last message, within MessageTimeout (contract §1). A reply
// carrying override_message_timeout is skipped and the timer keeps running: Envoy ignores it
// unless max_message_timeout is configured, which the deploy does not do (Envoy source,
// Filter::onNewTimeout).
func (x *exchange) await(ctx context.Context) (*extprocv3.ProcessingResponse, error) {
	if x.ended {
		return nil, errClosed
	}
	timer := time.NewTimer(x.e.cfg.MessageTimeout)
	defer timer.Stop()
	for {
		select {
		case r := <-x.replies:
			switch {
			case r.err == nil && r.msg.GetOverrideMessageTimeout() != nil:
				continue
			case r.err == nil:
				return r.msg, nil
			}
			x.ended = true
			if err := ctxErr(ctx); err != nil {
				return nil, err
			}
			if r.err == io.EOF {
				return nil, errClosed
			}
			return nil, fmt.Errorf("%w: %w", ErrStreamFailed, r.err)
		case <-timer.C:
			return nil, fmt.Errorf("%w (%v)", ErrTimeout, x.e.cfg.MessageTimeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// ctxErr is the caller's context error, also when gRPC noticed the deadline before the context
// itself did.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// failed turns an await error into what the client gets: 504 on timeout, 500 otherwise.
func failed(res *Result, err error) error {
	if errors.Is(err, ErrTimeout) {
		res.Response = localReply(504)
	} else {
		res.Response = localReply(500)
	}
	return err
}

// reply awaits the reply to the message just sent and applies what any reply carries
// (mode_override, dynamic metadata). closed: the server ended the stream with OK, and Envoy
// goes on without processing (contract section 5); err is what failed reports.
func (x *exchange) reply(ctx context.Context, res *Result) (r *extprocv3.ProcessingResponse, closed bool, err error) {
	r, err = x.await(ctx)
	switch {
	case errors.Is(err, errClosed):
		res.ClosedByServer = true
		return nil, true, nil
	case err != nil:
		return nil, false, failed(res, err)
	}
	x.override(r)
	x.receiveMetadata(res, r)
	return r, false, nil
}

// request plays the request phase, the upstream, then the response phase.
func (x *exchange) request(ctx context.Context, res *Result, req Request, attrs *structpb.Struct, upstream Upstream) error {
	x.send(requestHeaders(req, attrs))
	r, closed, err := x.reply(ctx, res)
	switch {
	case err != nil:
		return err
	case closed:
		if _, err := x.callUpstream(res, req, upstream); err != nil {
			return failed(res, err)
		}
		return nil
	}
	switch kind := r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		common := kind.RequestHeaders.GetResponse()
		if err := checkCommon(common); err != nil {
			return failed(res, err)
		}
		fields, err := envoyfilter.ApplyMutation(requestFields(req), common.GetHeaderMutation(), envoyfilter.RequestPhase)
		if err != nil {
			return failed(res, fmt.Errorf("%w: request_headers reply: %w (Envoy answers 500)", ErrContract, err))
		}
		req = requestFromFields(fields, req.Body)
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		return immediate(res, kind.ImmediateResponse)
	default:
		return failed(res, wrongKind("request_headers", r))
	}
	if req.Body && x.mode.GetRequestBodyMode() != procmodev3.ProcessingMode_NONE {
		return failed(res, fmt.Errorf("%w: mode_override asks for request body processing", ErrUnsupported))
	}
	resp, err := x.callUpstream(res, req, upstream)
	if err != nil {
		return failed(res, err)
	}
	if err := x.checkResponseBody(resp); err != nil {
		return failed(res, err)
	}
	if x.skipResponse || (resp.Local && x.e.cfg.SkipLocalReplies) {
		return nil
	}
	return x.response(ctx, res, resp)
}

// callUpstream gets the response, the upstream's or a Local one, and passes it through the
// header filter, which comes after ext_proc in the filter chain and so sees the response first.
// The router adds x-envoy-upstream-service-time after an upstream's headers, not to its own
// replies (recorded on every pinned release).
func (x *exchange) callUpstream(res *Result, req Request, upstream Upstream) (Response, error) {
	resp := normalizeResponse(upstream(req))
	if !resp.Local {
		res.UpstreamCalled = true
		res.UpstreamRequest = req
		resp.Headers = append(resp.Headers, Header{Key: "x-envoy-upstream-service-time", Value: "1"})
	}
	res.Response = resp
	if f := x.e.cfg.HeaderFilter; f != nil {
		var err error
		if resp, err = f.apply(resp, res.DynamicMetadata); err != nil {
			return resp, fmt.Errorf("%w: the header filter: %w (Envoy answers 500)", ErrContract, err)
		}
		res.Response = resp
	}
	return resp, nil
}

// response plays the response phase: response_headers, no attributes since the deploy
// configures no response_attributes (contract §2); the reply's mutation applies to resp.
func (x *exchange) response(ctx context.Context, res *Result, resp Response) error {
	res.Response = resp
	res.ResponsePhaseSent = true
	x.send(responseHeaders(resp, !resp.Body))
	r, closed, err := x.reply(ctx, res)
	if err != nil || closed {
		return err
	}
	switch kind := r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		common := kind.ResponseHeaders.GetResponse()
		if err := checkCommon(common); err != nil {
			return failed(res, err)
		}
		fields, err := envoyfilter.ApplyMutation(responseFields(resp), common.GetHeaderMutation(), envoyfilter.ResponsePhase)
		if err != nil {
			return failed(res, fmt.Errorf("%w: response_headers reply: %w (Envoy answers 500)", ErrContract, err))
		}
		res.Response = responseFromFields(fields, resp.Body)
		res.Response.Local = resp.Local
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		// Envoy takes an immediate_response at any point and replaces the upstream's response
		// with it (Envoy source, Filter::onReceiveMessage); the contract only uses it for
		// request_headers.
		return immediate(res, kind.ImmediateResponse)
	default:
		return failed(res, wrongKind("response_headers", r))
	}
	if err := x.checkResponseBody(resp); err != nil {
		return failed(res, err)
	}
	return nil
}

// checkResponseBody rejects a honoured mode_override under which Envoy would send the response
// body: body processing is not played (the deploy's mode sends headers only).
func (x *exchange) checkResponseBody(resp Response) error {
	if resp.Body && x.mode.GetResponseBodyMode() != procmodev3.ProcessingMode_NONE {
		return fmt.Errorf("%w: mode_override asks for response body processing", ErrUnsupported)
	}
	return nil
}

// observe plays observability mode (contract §1): both messages go out with
// observability_mode=true and nothing waits for a reply.
func (x *exchange) observe(res *Result, req Request, attrs *structpb.Struct, upstream Upstream) error {
	x.send(requestHeaders(req, attrs))
	resp, err := x.callUpstream(res, req, upstream)
	if err != nil || x.skipResponse || (resp.Local && x.e.cfg.SkipLocalReplies) {
		return err
	}
	res.ResponsePhaseSent = true
	x.send(responseHeaders(resp, !resp.Body))
	return nil
}

// receiveMetadata applies a reply's dynamic_metadata as Envoy does: each top-level field names a
// namespace, applied only when listed in ReceivingNamespaces and only when it holds a struct,
// whose fields are merged into what the namespace already holds (Envoy source: ext_proc's
// setDynamicMetadata and StreamInfo::setDynamicMetadata, a protobuf MergeFrom).
func (x *exchange) receiveMetadata(res *Result, r *extprocv3.ProcessingResponse) {
	for ns, v := range r.GetDynamicMetadata().GetFields() {
		st := v.GetStructValue()
		if st == nil || !slices.Contains(x.e.cfg.ReceivingNamespaces, ns) {
			continue
		}
		if res.DynamicMetadata == nil {
			res.DynamicMetadata = map[string]*structpb.Struct{}
		}
		held, ok := res.DynamicMetadata[ns]
		if !ok {
			held = &structpb.Struct{Fields: map[string]*structpb.Value{}}
			res.DynamicMetadata[ns] = held
		}
		for k, f := range st.GetFields() {
			held.Fields[k] = proto.Clone(f).(*structpb.Value)
		}
	}
}

// override honours mode_override only with AllowModeOverride (contract §4), whatever kind of
// reply carries it (Envoy source, Filter::onReceiveMessage). The stream's mode becomes the
// filter's configured processing_mode with the override's set fields on top: a field left at
// DEFAULT keeps the filter's value, and a route's own processing_mode is dropped. Both shown on
// every pinned release (deploy: the recordings' "mode_override at DEFAULT" case and
// TestRealEnvoyModeOverrideDefault).
func (x *exchange) override(r *extprocv3.ProcessingResponse) {
	mo := r.GetModeOverride()
	if mo == nil || !x.e.cfg.AllowModeOverride {
		return
	}
	x.setMode(mergeMode(x.e.cfg.ProcessingMode, mo))
}

// setMode makes m the stream's processing mode.
func (x *exchange) setMode(m *procmodev3.ProcessingMode) {
	x.mode = m
	x.skipResponse = m.GetResponseHeaderMode() == procmodev3.ProcessingMode_SKIP
}

// mergeMode is base with every field over sets (not DEFAULT, or NONE for a body) taking its
// value from over.
func mergeMode(base, over *procmodev3.ProcessingMode) *procmodev3.ProcessingMode {
	m := &procmodev3.ProcessingMode{}
	if base != nil {
		m = proto.Clone(base).(*procmodev3.ProcessingMode)
	}
	if v := over.GetRequestHeaderMode(); v != procmodev3.ProcessingMode_DEFAULT {
		m.RequestHeaderMode = v
	}
	if v := over.GetResponseHeaderMode(); v != procmodev3.ProcessingMode_DEFAULT {
		m.ResponseHeaderMode = v
	}
	if v := over.GetRequestBodyMode(); v != procmodev3.ProcessingMode_NONE {
		m.RequestBodyMode = v
	}
	if v := over.GetResponseBodyMode(); v != procmodev3.ProcessingMode_NONE {
		m.ResponseBodyMode = v
	}
	return m
}

// finish ends the stream (contract §1). After a failure Envoy resets at once. In observability
// mode Envoy defers the close to give the server time (deferred_close_timeout), so the stream is
// half-closed and any reply that arrives meanwhile is an error, whatever EndStream says; a gRPC
// error from the server is reported too, but leaves the response alone: by then Envoy has
// passed the response on (Envoy source, Filter::onDestroy defers the close).
func (x *exchange) finish(aborted bool) error {
	defer func() {
		close(x.done)
		x.cancel()
		<-x.readerDone
	}()
	observe := x.e.cfg.ObservabilityMode
	if x.ended || aborted || (x.e.cfg.EndStream == Reset && !observe) {
		return nil
	}
	_ = x.stream.CloseSend()
	timer := time.NewTimer(x.e.cfg.MessageTimeout)
	defer timer.Stop()
	select {
	case r := <-x.replies:
		switch {
		case r.err == nil && observe:
			return fmt.Errorf("%w: the server replied in observability mode (%s)", ErrContract, kindName(r.msg))
		case r.err == nil:
			return fmt.Errorf("%w: a message (%s) after the last reply; every message takes exactly one reply", ErrContract, kindName(r.msg))
		case r.err != io.EOF && observe:
			return fmt.Errorf("%w: %w", ErrStreamFailed, r.err)
		}
		// A late gRPC error costs nothing: Envoy has already reset its side.
		return nil
	case <-timer.C:
		// Envoy resets right after half-closing: a server that lingers is cut off the same way.
		return nil
	}
}

// checkCommon rejects CommonResponse features this client does not play.
func checkCommon(c *extprocv3.CommonResponse) error {
	switch {
	case c.GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE:
		return fmt.Errorf("%w: CONTINUE_AND_REPLACE", ErrUnsupported)
	case c.GetBodyMutation() != nil:
		return fmt.Errorf("%w: body_mutation", ErrUnsupported)
	case c.GetTrailers() != nil:
		return fmt.Errorf("%w: trailers", ErrUnsupported)
	}
	return nil
}

// immediate plays an immediate_response (contract §4): status from status.code, 200 when unset
// or below 200; headers from headers.set_headers (checked by Envoy's permissive immediate-reply
// rules); the body. Nothing more is sent on the stream. An invalid mutation is an error, but the
// reply still goes out with the changes made before it, as in Envoy.
func immediate(res *Result, ir *extprocv3.ImmediateResponse) error {
	res.Answered = true
	code := 200
	if c := int(ir.GetStatus().GetCode()); c >= 200 {
		code = c
	}
	fields, err := envoyfilter.ApplyMutation([]Header{{Key: ":status", Value: strconv.Itoa(code)}}, ir.GetHeaders(), envoyfilter.ImmediatePhase)
	res.Response = responseFromFields(fields, len(ir.GetBody()) > 0)
	res.LocalReplyBody = string(ir.GetBody())
	if err != nil {
		return fmt.Errorf("%w: immediate_response headers: %w", ErrContract, err)
	}
	return nil
}

func wrongKind(sent string, r *extprocv3.ProcessingResponse) error {
	return fmt.Errorf("%w: %s answered with %s; Envoy answers the client 500", ErrContract, sent, kindName(r))
}

func kindName(r *extprocv3.ProcessingResponse) string {
	switch r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		return "request_headers"
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		return "response_headers"
	case *extprocv3.ProcessingResponse_RequestBody:
		return "request_body"
	case *extprocv3.ProcessingResponse_ResponseBody:
		return "response_body"
	case *extprocv3.ProcessingResponse_RequestTrailers:
		return "request_trailers"
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		return "response_trailers"
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		return "immediate_response"
	case nil:
		return "no response set"
	}
	return fmt.Sprintf("%T", r.GetResponse())
}

// attributes builds the request direction's attribute Struct (contract §2, §3): nil when no
// attribute is configured; without a matched route every xds.* value is absent, so it is empty.
func (e *Envoy) attributes(route Route) (*structpb.Struct, error) {
	if len(e.cfg.RequestAttributes) == 0 {
		return nil, nil
	}
	s := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(e.cfg.RequestAttributes))}
	if route.Unmatched {
		return s, nil
	}
	for _, a := range e.cfg.RequestAttributes {
		var text string
		switch a {
		case envoyfilter.AttrRouteName:
			text = route.Name
		case envoyfilter.AttrRouteMetadata, envoyfilter.AttrVirtualHostMetadata:
			m := route.Metadata
			if a == envoyfilter.AttrVirtualHostMetadata {
				m = route.VirtualHostMetadata
			}
			var err error
			if text, err = envoyfilter.MetadataText(m, e.cfg.MetadataFormat); err != nil {
				return nil, err
			}
		}
		s.Fields[a] = structpb.NewStringValue(text)
	}
	return s, nil
}

// requestHeaders builds the request direction's first message, with its attributes when any
// are configured (contract §2).
func requestHeaders(req Request, attrs *structpb.Struct) *extprocv3.ProcessingRequest {
	m := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: envoyfilter.HeaderMap(requestFields(req)), EndOfStream: !req.Body},
	}}
	if attrs != nil {
		m.Attributes = map[string]*structpb.Struct{filterName: attrs}
	}
	return m
}

func responseHeaders(resp Response, endOfStream bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: envoyfilter.HeaderMap(responseFields(resp)), EndOfStream: endOfStream},
	}}
}

// requestFields is the request's header map as Envoy holds it: pseudo-headers first (contract
// §2), in the order Envoy's HTTP/1.1 codec and connection manager set them (recorded on every
// pinned release), then the fields in order.
func requestFields(r Request) []Header {
	fields := make([]Header, 0, 4+len(r.Headers))
	fields = append(fields,
		Header{Key: ":authority", Value: r.Authority}, Header{Key: ":path", Value: r.Path},
		Header{Key: ":method", Value: r.Method}, Header{Key: ":scheme", Value: r.Scheme})
	return append(fields, r.Headers...)
}

// connectionManagerHeaders adds what Envoy's connection manager adds to a request before the
// first filter sees it, when the client sent none (recorded on every pinned release):
// x-forwarded-proto (the scheme), then x-request-id (a fresh UUID).
func connectionManagerHeaders(r Request) Request {
	hs := append(Headers(nil), r.Headers...)
	if _, ok := hs.Get("x-forwarded-proto"); !ok {
		hs = append(hs, Header{Key: "x-forwarded-proto", Value: r.Scheme})
	}
	if _, ok := hs.Get("x-request-id"); !ok {
		hs = append(hs, Header{Key: "x-request-id", Value: requestID()})
	}
	r.Headers = hs
	return r
}

// requestID is a random (version 4) UUID, as Envoy generates for x-request-id.
func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func requestFromFields(fields []Header, body bool) Request {
	r := Request{Body: body}
	for _, f := range fields {
		switch f.Key {
		case ":method":
			r.Method = f.Value
		case ":path":
			r.Path = f.Value
		case ":scheme":
			r.Scheme = f.Value
		case ":authority":
			r.Authority = f.Value
		default:
			r.Headers = append(r.Headers, f)
		}
	}
	return r
}

func responseFields(r Response) []Header {
	fields := make([]Header, 0, 1+len(r.Headers))
	fields = append(fields, Header{Key: ":status", Value: strconv.Itoa(r.Status)})
	return append(fields, r.Headers...)
}

func responseFromFields(fields []Header, body bool) Response {
	r := Response{Body: body}
	for _, f := range fields {
		if f.Key == ":status" {
			r.Status, _ = strconv.Atoi(f.Value)
		} else {
			r.Headers = append(r.Headers, f)
		}
	}
	return r
}

// localReply is a response Envoy generates itself.
func localReply(code int) Response { return Response{Status: code, Body: true} }

func normalizeRequest(r Request) (Request, error) {
	if r.Method == "" {
		r.Method = "GET"
	}
	if r.Scheme == "" {
		r.Scheme = "https"
	}
	if r.Authority == "" {
		r.Authority = "example.com"
	}
	if r.Path == "" {
		r.Path = "/"
	}
	hs := make(Headers, len(r.Headers))
	for i, h := range r.Headers {
		k := lower(h.Key)
		switch {
		case k == "host":
			return r, errors.New("envoytest: Request.Headers holds host; Envoy carries it as :authority: set Request.Authority")
		case k == "" || k[0] == ':':
			return r, fmt.Errorf("envoytest: Request.Headers holds %q; set the Request fields for pseudo-headers", h.Key)
		}
		hs[i] = Header{Key: k, Value: h.Value}
	}
	r.Headers = hs
	return r, nil
}

func normalizeResponse(r Response) Response {
	if r.Status == 0 {
		r.Status = 200
	}
	hs := make(Headers, len(r.Headers))
	for i, h := range r.Headers {
		hs[i] = Header{Key: lower(h.Key), Value: h.Value}
	}
	r.Headers = hs
	return r
}

// lower lower-cases ASCII letters only, as Envoy's codecs do.
func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
