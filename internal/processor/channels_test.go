package processor

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cors-extproc/cors-extproc/internal/envoyfilter"
	"github.com/cors-extproc/cors-extproc/internal/envoytest"
	"github.com/cors-extproc/cors-extproc/internal/policy"
)

// channel is one way a policy reaches the server (contract section 3). Every behaviour case
// runs through each of them: they must be indistinguishable.
type policyChannel struct {
	name string
	// route builds the Envoy route carrying the policy given as a JSON object.
	route func(t *testing.T, policyJSON string) envoytest.Route
	// named says the policy travels through the named-policy file under the name "p".
	named bool
	// asDefault makes "p" the server's default policy.
	asDefault bool
	// format is how Envoy prints the metadata text.
	format envoyfilter.MetadataFormat
}

const namedPolicy = "p"

func decodeJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(s), &m), "policy JSON of the test table")
	return m
}

// envoyGatewayMetadata is the shape Envoy Gateway gives route and virtual-host metadata: the
// resources the xDS object came from, each with its annotations (contract section 3, item 3).
func envoyGatewayMetadata(name string) map[string]any {
	return map[string]any{"resources": []any{
		map[string]any{"kind": "HTTPRoute", "name": "other", "namespace": "default"},
		map[string]any{"kind": "HTTPRoute", "name": "api", "namespace": "default",
			"annotations": map[string]any{"cors-policy": name}},
	}}
}

var policyChannels = func() []policyChannel {
	chans := []policyChannel{
		{name: "grpc-metadata", route: func(_ *testing.T, p string) envoytest.Route {
			return envoytest.Route{Name: "r", GRPCMetadata: map[string]string{"x-cors-policy": p}}
		}},
		{name: "grpc-metadata-ref", named: true, route: func(_ *testing.T, _ string) envoytest.Route {
			return envoytest.Route{Name: "r", GRPCMetadata: map[string]string{"x-cors-policy": `{"ref":"p"}`}}
		}},
		{name: "default-policy", named: true, asDefault: true, route: func(_ *testing.T, _ string) envoytest.Route {
			return envoytest.Route{Name: "r", Metadata: envoyfilter.Metadata("other-filter", map[string]any{"x": 1})}
		}},
	}
	for _, f := range []envoyfilter.MetadataFormat{envoyfilter.OneLine, envoyfilter.MultiLine, envoyfilter.Debug1370, envoyfilter.OneLineTrailingSpace} {
		chans = append(chans,
			policyChannel{name: "route-metadata/" + f.String(), format: f, route: func(t *testing.T, p string) envoytest.Route {
				return envoytest.Route{Name: "r", Metadata: envoyfilter.Metadata("cors", decodeJSON(t, p))}
			}},
			policyChannel{name: "route-ref/" + f.String(), format: f, named: true, route: func(_ *testing.T, _ string) envoytest.Route {
				return envoytest.Route{Name: "r", Metadata: envoyfilter.Metadata("cors", map[string]any{"ref": namedPolicy})}
			}},
			policyChannel{name: "route-envoy-gateway/" + f.String(), format: f, named: true, route: func(_ *testing.T, _ string) envoytest.Route {
				return envoytest.Route{Name: "r", Metadata: envoyfilter.Metadata("envoy-gateway", envoyGatewayMetadata(namedPolicy))}
			}},
			policyChannel{name: "virtual-host-metadata/" + f.String(), format: f, route: func(t *testing.T, p string) envoytest.Route {
				return envoytest.Route{Name: "r", VirtualHostMetadata: envoyfilter.Metadata("cors", decodeJSON(t, p))}
			}},
			policyChannel{name: "virtual-host-envoy-gateway/" + f.String(), format: f, named: true, route: func(_ *testing.T, _ string) envoytest.Route {
				return envoytest.Route{Name: "r", VirtualHostMetadata: envoyfilter.Metadata("envoy-gateway", envoyGatewayMetadata(namedPolicy))}
			}},
		)
	}
	return chans
}()

// serverFor builds a server whose named-policy file holds policyJSON as "p" when the channel
// needs it. A policy the named file rejects makes the server refuse to start, so channels that
// go through the file cannot carry an invalid policy: ok is false then.
func serverFor(t *testing.T, ch policyChannel, policyJSON string, opts Options) (srv *Server, ok bool) {
	t.Helper()
	if ch.named {
		named, _, err := policy.ParseNamed([]byte(namedPolicy + ": " + policyJSON))
		if err != nil {
			return nil, false
		}
		opts.Policies = named
		if ch.asDefault {
			opts.DefaultPolicy = namedPolicy
		}
	}
	srv, err := New(opts)
	require.NoError(t, err)
	return srv, true
}

// Lookup consults the sources in contract section 3's order, skips absent ones and those that
// name no policy, and resolves none after the first that does.
func TestLookupSourcesInOrder(t *testing.T) {
	var called []string
	source := func(name string, found bool) func() Resolution {
		return func() Resolution {
			called = append(called, name)
			return Resolution{Found: found, Where: name}
		}
	}
	tests := []struct {
		src    Sources
		where  string
		ch     Channel
		called []string
	}{
		{Sources{GRPCPolicy: source("grpc", true), RouteMetadata: source("route", true)}, "grpc", ChannelGRPCMetadata, []string{"grpc"}},
		{Sources{RouteMetadata: source("route", false), VirtualHostMetadata: source("vhost", true), Default: source("default", true)},
			"vhost", ChannelVirtualHostMetadata, []string{"route", "vhost"}},
		{Sources{RouteMetadata: source("route", true), VirtualHostMetadata: source("vhost", true)}, "route", ChannelRouteMetadata, []string{"route"}},
		{Sources{RouteMetadata: source("route", false), Default: source("default", true)}, "default", ChannelDefault, []string{"route", "default"}},
		{Sources{RouteMetadata: source("route", false), Default: source("default", false)}, "", ChannelNone, []string{"route", "default"}},
		{Sources{}, "", ChannelNone, nil},
	}
	for _, tt := range tests {
		called = nil
		res, ch := Lookup(&tt.src)
		assert.Equal(t, tt.where, res.Where)
		assert.Equal(t, tt.ch, ch)
		assert.Equal(t, tt.called, called)
	}
}
