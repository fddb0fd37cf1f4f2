// Package processor is the ext_proc side of cors-extproc: it reads Envoy's ProcessingRequests,
// finds the route's CORS policy, asks internal/policy for the decision and turns that decision
// back into ProcessingResponses, following the Envoy ext_proc contract of docs/envoy-extproc.md.
// Everything about one HTTP request lives in the local variables of its stream.
//
// Comments cite docs/envoy-extproc.md as "contract section N" and docs/cors-semantics.md as
// "semantics section N".
package processor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cors-extproc/cors-extproc/internal/policy"
)

// DefaultCacheSize bounds each compiled-policy cache unless Options says otherwise.
const DefaultCacheSize = 10000

// Limits bound what one request or policy source may cost the server; past each, the behaviour
// is defined, counted in cors_extproc_limits_exceeded_total and logged.
type Limits struct {
	// Policy bounds each policy compiled from a route (origins elements, regex size).
	Policy policy.Limits
	// MaxSourceBytes bounds a policy source (an x-cors-policy value, a route's or virtual
	// host's metadata text). A longer one is not parsed: it is an unusable policy for its
	// route (semantics section 10). With the cache bound, it bounds the cache's memory.
	MaxSourceBytes int
	// MaxHeaderValueBytes bounds the request header values a decision reads (Origin and the
	// access-control-request-* headers). A request with a longer one is treated as under an
	// unusable policy: a preflight gets 403, an actual response is granted nothing, so no
	// oversized value is ever echoed back.
	MaxHeaderValueBytes int
}

// SourceError is the error of a policy source of n bytes found at where, when it is over
// MaxSourceBytes; nil otherwise. The server and validate judge sources by it alike.
func (l Limits) SourceError(where string, n int) error {
	if n <= l.MaxSourceBytes {
		return nil
	}
	return fmt.Errorf("%s: policy source of %d bytes, over the limit of %d", where, n, l.MaxSourceBytes)
}

// DefaultLimits hold every real request and policy with room to spare: an Origin has at most
// a few hundred bytes, route metadata a few kilobytes, and Envoy's own default limit on all
// request headers together is 60 KiB.
var DefaultLimits = Limits{Policy: policy.DefaultLimits, MaxSourceBytes: 32 << 10, MaxHeaderValueBytes: 8 << 10}

// Options configures a Server.
type Options struct {
	// Namespace is the filter_metadata key holding the policy (default "cors").
	Namespace string
	// Policies is the named-policy set that `ref` and Envoy Gateway annotations refer to.
	Policies map[string]*policy.Policy
	// DefaultPolicy names the policy of Policies used when no channel names one; empty for none.
	DefaultPolicy string
	// CacheSize bounds the number of distinct policy sources kept compiled, per cache.
	CacheSize int
	// Logger receives policy errors (once per distinct source) and debug-level decisions.
	Logger *slog.Logger
	// Registerer receives the server's Prometheus metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// Limits bound requests and policies; zero fields take DefaultLimits'.
	Limits Limits
	// DynamicMetadataNamespace is the namespace under which each decision is returned to Envoy
	// as dynamic metadata, for its access log; empty sends none.
	DynamicMetadataNamespace string
	// ReportOnly puts every policy in report-only mode (the policy field report_only does it
	// for one): decisions are taken, counted and logged, but nothing is changed.
	ReportOnly bool
	// Mode says whether an actual response is decorated in the response phase (ModeTwoPhase)
	// or by Envoy's header filter from the request phase's metadata (ModeOneTrip).
	Mode Mode
	// HeadersNamespace is the dynamic metadata namespace under which the request phase returns
	// the headers of an actual response, for Envoy's header filter (docs/envoy-extproc.md
	// section 7); empty sends none, which ModeOneTrip does not allow.
	HeadersNamespace string
}

// Mode is how the headers of an actual response reach it (docs/envoy-extproc.md section 7).
type Mode uint8

const (
	// ModeTwoPhase decorates the response in the response phase, as ext_proc was built to. The
	// headers go to Envoy's header filter as metadata too, so that Envoy's own replies, which
	// Envoy 1.34 to 1.36 do not send to ext_proc, are decorated where that filter is configured.
	ModeTwoPhase Mode = iota
	// ModeOneTrip takes every decision in the request phase and skips the response phase:
	// Envoy's header filter writes the headers from the metadata. Only a response that must
	// lose an upstream access-control-allow-origin (no ACAO granted) keeps the response phase,
	// as no Envoy filter removes a header on a condition of dynamic metadata on every release
	// we support.
	ModeOneTrip
)

// ParseMode reads a mode's name: "two-phase" or "one-trip".
func ParseMode(name string) (Mode, error) {
	switch name {
	case "two-phase":
		return ModeTwoPhase, nil
	case "one-trip":
		return ModeOneTrip, nil
	}
	return 0, fmt.Errorf("unknown mode %q: want two-phase or one-trip", name)
}

func (m Mode) String() string {
	if m == ModeOneTrip {
		return "one-trip"
	}
	return "two-phase"
}

// Server implements envoy.service.ext_proc.v3.ExternalProcessor.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer

	namespace  string
	reportOnly bool
	limits     Limits
	// headerTooLong stands in for the policy of a request with a header value over the limit.
	headerTooLong *policy.Policy
	defaultName   string
	cacheSize     int
	set           atomic.Pointer[policySet]
	log           *slog.Logger
	metrics       *metrics
	metadata      *decisionMetadata // nil when no dynamic metadata is sent
	mode          Mode
	headers       *headersMetadata // nil when the response headers are not sent as metadata
	headerLog     logLimiter
}

// logEvery is the least time between two log lines about the same kind of oversized input.
const logEvery = 10 * time.Second

// logLimiter lets one log line through per logEvery.
type logLimiter struct{ last atomic.Int64 }

func (l *logLimiter) allow(now time.Time) bool {
	last := l.last.Load()
	return now.UnixNano()-last >= int64(logEvery) && l.last.CompareAndSwap(last, now.UnixNano())
}

// policySet is everything a reload of the named-policy file replaces, whole: the resolver, the
// default policy and the caches of compiled sources (which may hold refs into the old file). A
// stream that started with one set keeps the policy it found.
type policySet struct {
	resolver      Resolver
	defaultPolicy Resolution // Found only when a default policy is configured
	jsonCache     *policyCache
	textCache     *policyCache
}

// New returns a Server, or an error when the options contradict each other.
func New(opts Options) (*Server, error) {
	if opts.Namespace == "" {
		opts.Namespace = "cors"
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	limits := opts.Limits
	if limits.Policy == (policy.Limits{}) {
		limits.Policy = DefaultLimits.Policy
	}
	if limits.MaxSourceBytes <= 0 {
		limits.MaxSourceBytes = DefaultLimits.MaxSourceBytes
	}
	if limits.MaxHeaderValueBytes <= 0 {
		limits.MaxHeaderValueBytes = DefaultLimits.MaxHeaderValueBytes
	}
	s := &Server{
		namespace:  opts.Namespace,
		reportOnly: opts.ReportOnly,
		limits:     limits,
		headerTooLong: policy.Unusable(fmt.Errorf("a request header value is over the limit of %d bytes",
			limits.MaxHeaderValueBytes)),
		defaultName: opts.DefaultPolicy,
		cacheSize:   opts.CacheSize,
		log:         opts.Logger,
	}
	if opts.Mode == ModeOneTrip && opts.HeadersNamespace == "" {
		return nil, errors.New("mode one-trip needs a namespace for the response headers' metadata")
	}
	s.mode = opts.Mode
	if opts.HeadersNamespace != "" {
		s.headers = newHeadersMetadata(opts.HeadersNamespace, opts.CacheSize)
	}
	if opts.DynamicMetadataNamespace != "" {
		s.metadata = newDecisionMetadata(opts.DynamicMetadataNamespace, opts.CacheSize)
	}
	if err := s.SetPolicies(opts.Policies); err != nil {
		return nil, err
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	return s, nil
}

// SetPolicies replaces the named-policy set atomically (a hot reload): requests that already
// found their policy keep it, later ones see the new set, and compiled sources cached from the
// old set are dropped. It fails, changing nothing, when the set lacks the default policy.
func (s *Server) SetPolicies(named map[string]*policy.Policy) error {
	set := &policySet{
		resolver:  Resolver{Namespace: s.namespace, Policies: named, Limits: s.limits.Policy},
		jsonCache: newPolicyCache(s.cacheSize),
		textCache: newPolicyCache(s.cacheSize),
	}
	if s.defaultName != "" {
		p, ok := named[s.defaultName]
		if !ok {
			return fmt.Errorf("default policy %q is not in the named-policy file", s.defaultName)
		}
		set.defaultPolicy = Resolution{Found: true, Policy: p, Name: s.defaultName, Where: "--default-policy"}
	}
	s.set.Store(set)
	return nil
}

// Process serves one stream, which Envoy opens for one HTTP request (contract section 1). The
// request phase's decision is kept in local variables for the response phase.
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	ctx := stream.Context()
	var (
		// pol is the policy of the request being decorated; nil when the response phase has
		// nothing to do (no request phase seen, no policy, or a pass decision).
		pol      *policy.Policy
		decision policy.RequestDecision
	)
	for {
		req, err := stream.Recv()
		if err != nil {
			return s.endOfStream(ctx, err)
		}
		start := time.Now()
		var resp *extprocv3.ProcessingResponse
		switch r := req.GetRequest().(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			pol, decision, resp = s.requestHeaders(ctx, req, r.RequestHeaders)
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			resp = s.responseHeaders(pol, &decision, r.ResponseHeaders)
		case *extprocv3.ProcessingRequest_RequestBody:
			resp = replyRequestBody
		case *extprocv3.ProcessingRequest_ResponseBody:
			resp = replyResponseBody
		case *extprocv3.ProcessingRequest_RequestTrailers:
			resp = replyRequestTrailers
		case *extprocv3.ProcessingRequest_ResponseTrailers:
			resp = replyResponseTrailers
		default:
			// No event set (a flow-control message of a newer Envoy, say): there is no reply
			// kind that would match, and any other kind makes Envoy fail the request.
			continue
		}
		if req.GetObservabilityMode() {
			// Envoy ignores replies in observability mode and none should be sent (contract section 1);
			// the decision was still taken, so metrics and logs reflect it.
			continue
		}
		if err := stream.Send(resp); err != nil {
			return s.endOfStream(ctx, err)
		}
		s.metrics.exchangeSeconds.Observe(time.Since(start).Seconds())
	}
}

// endOfStream classifies the error that ended a stream. Envoy ends streams by half-close or by
// reset, so io.EOF and cancellation are the normal end (contract section 1).
func (s *Server) endOfStream(ctx context.Context, err error) error {
	if errors.Is(err, io.EOF) || ctx.Err() != nil || status.Code(err) == codes.Canceled {
		return nil
	}
	s.metrics.streamErrors.Inc()
	s.log.Warn("ext_proc stream failed", "error", err)
	return err
}

// requestHeaders takes the request-phase decision and returns what the response phase needs.
func (s *Server) requestHeaders(ctx context.Context, req *extprocv3.ProcessingRequest, h *extprocv3.HttpHeaders) (*policy.Policy, policy.RequestDecision, *extprocv3.ProcessingResponse) {
	attrs := req.GetAttributes()[attributesKey]
	res, ch := s.lookup(ctx, attrs)
	if res.Policy == nil {
		s.metrics.decisions[decisionNotCORS].Inc()
		return nil, policy.RequestDecision{}, replyContinueAndSkip
	}
	return s.decideRequest(ctx, &res, found{channel: ch, route: attrs}, h.GetHeaders().GetHeaders())
}

// found is where a request's policy was found, for the decision's log line.
type found struct {
	channel Channel
	route   *structpb.Struct // the request's attributes, holding the route's name
}

// decideRequest is the request phase under the resolved policy: the decision is taken, counted,
// logged and returned to Envoy as dynamic metadata, then applied, except in report-only mode,
// where the request and its response pass untouched.
func (s *Server) decideRequest(ctx context.Context, res *Resolution, where found, headers []*corev3.HeaderValue) (*policy.Policy, policy.RequestDecision, *extprocv3.ProcessingResponse) {
	r := ReadRequest(headers)
	if s.overLimit(&r) {
		limited := *res
		limited.Policy = s.headerTooLong
		res = &limited
	}
	p := res.Policy
	d := p.Decide(&r)
	s.countDecision(&d)
	reportOnly := s.reportOnly || p.ReportOnly()
	if s.log.Enabled(ctx, slog.LevelDebug) {
		// The route and the policy's source (channel, and the named policy where there is
		// one), as on the error log line of an unusable policy.
		s.log.Debug("cors decision", "route", routeNameOf(where.route), "channel", where.channel.String(),
			"policy_ref", res.Name, "method", r.Method, "origin", r.Origin,
			"kind", kindName(d.Kind), "origin_result", originResultName(d.Origin), "status", d.Status,
			"report_only", reportOnly)
	}
	var md *structpb.Struct
	if s.metadata != nil {
		md = s.metadata.get(res, &d, reportOnly)
	}
	switch {
	case reportOnly:
		return nil, d, continueRequest(true, md)
	case d.Action == policy.ActionAnswer:
		reply := immediateResponse(&d)
		reply.DynamicMetadata = md
		return nil, d, reply
	case d.Action == policy.ActionDecorate:
		return s.decorate(p, &d, md)
	default:
		return nil, d, continueRequest(true, md)
	}
}

// decorate is the request phase of an actual request whose response is decorated: the
// response's headers go to Envoy's header filter as dynamic metadata (also in ModeTwoPhase,
// for the replies Envoy makes itself), and the response phase is skipped in ModeOneTrip unless
// an upstream ACAO must be removed. Its decision is taken as if the upstream's Vary did not list
// Origin: the header filter checks the upstream's Vary itself (docs/envoy-extproc.md section 7).
func (s *Server) decorate(p *policy.Policy, d *policy.RequestDecision, md *structpb.Struct) (*policy.Policy, policy.RequestDecision, *extprocv3.ProcessingResponse) {
	if s.headers == nil {
		return p, *d, continueRequest(false, md)
	}
	rd := p.Decorate(d, false)
	md = s.headers.get(&rd, md)
	if s.mode == ModeOneTrip && !rd.RemoveAllowOrigin {
		return nil, *d, continueRequest(true, md)
	}
	return p, *d, continueRequest(false, md)
}

// overLimit reports whether a header value the decision reads is over the limit, counting and
// logging it (at most once every logEvery, as a flood of such requests must not flood the log).
func (s *Server) overLimit(r *policy.Request) bool {
	max := s.limits.MaxHeaderValueBytes
	if len(r.Origin) <= max && len(r.RequestMethod) <= max && len(r.RequestHeaders) <= max &&
		len(r.RequestPrivateNetwork) <= max {
		return false
	}
	s.metrics.limitsExceeded[limitHeaderValue].Inc()
	if s.headerLog.allow(time.Now()) {
		s.log.Warn("request header value over the limit: the request is granted nothing",
			"limit_bytes", max, "origin_bytes", len(r.Origin), "access_control_request_headers_bytes", len(r.RequestHeaders))
	}
	return true
}

// Preview plays one HTTP request under policy p through the server's own decision and reply
// code, without a stream, for `cors-extproc explain`: the reply to request_headers and, when the
// server wants the response phase, its reply to response_headers carrying the upstream's
// response headers (nil otherwise).
func (s *Server) Preview(p *policy.Policy, request, response []*corev3.HeaderValue) (requestReply, responseReply *extprocv3.ProcessingResponse) {
	pol, decision, requestReply := s.decideRequest(context.Background(), &Resolution{Found: true, Policy: p}, found{}, request)
	if requestReply.GetRequestHeaders() != nil && requestReply.GetModeOverride() == nil {
		responseReply = s.responseHeaders(pol, &decision, &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: response}})
	}
	return requestReply, responseReply
}

// responseHeaders decorates an actual response (semantics section 8). Without a decision from
// the request phase (a local reply seen first, a pass decision whose skip Envoy did not honour)
// it changes nothing.
func (s *Server) responseHeaders(p *policy.Policy, d *policy.RequestDecision, h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	if p == nil {
		return replyContinueResponse
	}
	rd := p.Decorate(d, UpstreamVaryListsOrigin(h.GetHeaders().GetHeaders()))
	return continueResponse(&rd)
}
