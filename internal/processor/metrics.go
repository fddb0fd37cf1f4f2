package processor

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cors-extproc/cors-extproc/internal/policy"
)

// decision labels of cors_extproc_decisions_total.
const (
	decisionPreflightAnswered = iota
	decisionPreflightForwarded
	decisionActual
	decisionIgnored
	decisionNotCORS
	decisionCount
)

var decisionLabels = [decisionCount]string{"preflight_answered", "preflight_forwarded", "actual", "ignored", "not_cors"}

// limit labels of cors_extproc_limits_exceeded_total.
const (
	limitPolicyBytes = iota
	limitHeaderValue
	limitCount
)

var limitLabels = [limitCount]string{"policy_bytes", "header_value"}

// metrics holds the server's Prometheus collectors. Counters that are bumped per request are
// resolved to their label values once, so the hot path does no label lookup.
type metrics struct {
	decisions       [decisionCount]prometheus.Counter
	limitsExceeded  [limitCount]prometheus.Counter
	originAllowed   prometheus.Counter
	originRejected  prometheus.Counter
	policyErrors    *prometheus.CounterVec
	cacheEntries    *prometheus.GaugeVec
	cacheHits       prometheus.Counter
	cacheMisses     prometheus.Counter
	streamErrors    prometheus.Counter
	exchangeSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cors_extproc_decisions_total",
		Help: "CORS decisions taken in the request phase, by kind.",
	}, []string{"kind"})
	origins := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cors_extproc_origins_total",
		Help: "Requests with an Origin on a CORS route, by whether the policy allowed it.",
	}, []string{"result"})
	m := &metrics{
		originAllowed:  origins.WithLabelValues("allowed"),
		originRejected: origins.WithLabelValues("rejected"),
		policyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cors_extproc_policy_errors_total",
			Help: "Distinct policy sources that failed to parse or validate, by channel.",
		}, []string{"channel"}),
		cacheEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cors_extproc_policy_cache_entries",
			Help: "Compiled policies held, by cache.",
		}, []string{"cache"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cors_extproc_policy_cache_hits_total",
			Help: "Policy lookups answered from the compiled-policy cache.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cors_extproc_policy_cache_misses_total",
			Help: "Policy lookups that parsed and compiled a policy source.",
		}),
		streamErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cors_extproc_stream_errors_total",
			Help: "ext_proc streams that ended with an error other than Envoy closing or resetting them.",
		}),
		exchangeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cors_extproc_exchange_duration_seconds",
			Help:    "Time from receiving a ProcessingRequest to sending its reply.",
			Buckets: []float64{.000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1},
		}),
	}
	for i := range m.decisions {
		m.decisions[i] = decisions.WithLabelValues(decisionLabels[i])
	}
	limits := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cors_extproc_limits_exceeded_total",
		Help: "Inputs over a limit: policy sources over --max-policy-bytes (once per distinct source), requests with a header value over --max-header-value-bytes.",
	}, []string{"limit"})
	for i := range m.limitsExceeded {
		m.limitsExceeded[i] = limits.WithLabelValues(limitLabels[i])
	}
	// Every series exists from the start, at zero, so that rates and alerts see the first error
	// and dashboards show a flat line rather than no data.
	for _, ch := range errorChannels {
		m.policyErrors.WithLabelValues(string(ch))
	}
	for _, ch := range []channel{channelGRPCMetadata, channelRouteMetadata} {
		m.cacheEntries.WithLabelValues(cacheKind(ch))
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{decisions, limits, origins, m.policyErrors, m.cacheEntries,
			m.cacheHits, m.cacheMisses, m.streamErrors, m.exchangeSeconds} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// countDecision records a request-phase decision.
func (s *Server) countDecision(d *policy.RequestDecision) {
	switch d.Kind {
	case policy.KindPreflightAnswered:
		s.metrics.decisions[decisionPreflightAnswered].Inc()
	case policy.KindPreflightForwarded:
		s.metrics.decisions[decisionPreflightForwarded].Inc()
	case policy.KindIgnored:
		s.metrics.decisions[decisionIgnored].Inc()
	default:
		s.metrics.decisions[decisionActual].Inc()
	}
	switch d.Origin {
	case policy.OriginAllowed:
		s.metrics.originAllowed.Inc()
	case policy.OriginRejected:
		s.metrics.originRejected.Inc()
	}
}

func kindName(k policy.Kind) string {
	switch k {
	case policy.KindPreflightAnswered:
		return decisionLabels[decisionPreflightAnswered]
	case policy.KindPreflightForwarded:
		return decisionLabels[decisionPreflightForwarded]
	case policy.KindIgnored:
		return decisionLabels[decisionIgnored]
	default:
		return decisionLabels[decisionActual]
	}
}

func originResultName(o policy.OriginResult) string {
	switch o {
	case policy.OriginAllowed:
		return "allowed"
	case policy.OriginRejected:
		return "rejected"
	default:
		return "absent"
	}
}
