package deploy_test

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// envoyDefaultMaxRequests is Envoy's (and Envoy Gateway's) default circuit-breaker limit on
// the requests in flight to one cluster. Every HTTP request holds one ext_proc stream until its
// response headers arrive, so at that limit requests went through Envoy without CORS headers
// (fail-open) in `make bench-envoy` (BENCHMARKS.md, "Limits").
const envoyDefaultMaxRequests = 1024

// TestExtProcClustersLiftRequestLimit: every shipped Envoy configuration raises the ext_proc
// cluster's limit on requests in flight above Envoy's default.
func TestExtProcClustersLiftRequestLimit(t *testing.T) {
	for what, cl := range map[string]*clusterv3.Cluster{
		"envoy.yaml":             loadEnvoy(t).cluster(t, "cors-extproc"),
		"istio/envoyfilter.yaml": loadIstio(t).cluster,
	} {
		var limit uint32
		for _, th := range cl.GetCircuitBreakers().GetThresholds() {
			if th.GetPriority() == corev3.RoutingPriority_DEFAULT && th.GetMaxRequests() != nil {
				limit = th.GetMaxRequests().GetValue()
			}
		}
		if limit <= envoyDefaultMaxRequests {
			t.Errorf("%s: cluster %s allows %d requests in flight (0: Envoy's default %d); want more",
				what, cl.GetName(), limit, envoyDefaultMaxRequests)
		}
	}
	for _, ext := range loadEnvoyGateway(t).policy.Spec.ExtProc {
		bs := ext.BackendSettings
		if bs == nil || bs.CircuitBreaker == nil || bs.CircuitBreaker.MaxParallelRequests == nil ||
			*bs.CircuitBreaker.MaxParallelRequests <= envoyDefaultMaxRequests {
			t.Errorf("envoy-gateway/envoyextensionpolicy.yaml: backendSettings.circuitBreaker.maxParallelRequests must exceed %d", envoyDefaultMaxRequests)
		}
	}
}
