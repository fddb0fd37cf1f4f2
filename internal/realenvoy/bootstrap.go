package realenvoy

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// LoadBootstrap decodes an Envoy bootstrap (YAML or JSON) with go-control-plane's types, as
// Envoy decodes it: an unknown field or an unregistered typed_config is an error.
func LoadBootstrap(t testing.TB, path string) *bootstrapv3.Bootstrap {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := DecodeBootstrap(raw)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// DecodeBootstrap is LoadBootstrap on bytes.
func DecodeBootstrap(raw []byte) (*bootstrapv3.Bootstrap, error) {
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, err
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		return nil, err
	}
	if err := b.ValidateAll(); err != nil {
		return nil, err
	}
	return b, nil
}

// Loopback moves every address of b onto loopback, and changes nothing else: the admin
// listener and every listener bind 127.0.0.1 on a port the kernel picks (Start finds it), and
// every endpoint of every cluster becomes endpoints[cluster name], a "host:port". A cluster
// with endpoints that endpoints does not name fails the test: nothing may leave the machine.
func Loopback(t testing.TB, b *bootstrapv3.Bootstrap, endpoints map[string]string) {
	t.Helper()
	if a := b.GetAdmin(); a != nil {
		a.Address = loopbackAddress(0)
	}
	for _, l := range b.GetStaticResources().GetListeners() {
		l.Address = loopbackAddress(0)
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		la := c.GetLoadAssignment()
		if len(la.GetEndpoints()) == 0 {
			continue
		}
		addr, ok := endpoints[c.GetName()]
		if !ok {
			t.Fatalf("cluster %s: no loopback endpoint given for it", c.GetName())
		}
		host, port := splitHostPort(t, addr)
		for _, le := range la.GetEndpoints() {
			for _, e := range le.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				if sa == nil {
					t.Fatalf("cluster %s: an endpoint without a socket address", c.GetName())
				}
				sa.Address = host
				sa.PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: port}
			}
		}
	}
}

// SetEndpoints replaces a cluster's endpoints with one locality holding addrs ("host:port"
// each), for tests that run several replicas behind one cluster.
func SetEndpoints(t testing.TB, b *bootstrapv3.Bootstrap, cluster string, addrs ...string) {
	t.Helper()
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() != cluster {
			continue
		}
		le := c.GetLoadAssignment().GetEndpoints()
		if len(le) == 0 || len(le[0].GetLbEndpoints()) == 0 {
			t.Fatalf("cluster %s has no endpoint to model the others on", cluster)
		}
		model := le[0].GetLbEndpoints()[0]
		var lbs []*endpointv3.LbEndpoint
		for _, a := range addrs {
			host, port := splitHostPort(t, a)
			e := proto.Clone(model).(*endpointv3.LbEndpoint)
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			sa.Address = host
			sa.PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: port}
			lbs = append(lbs, e)
		}
		le[0].LbEndpoints = lbs
		c.GetLoadAssignment().Endpoints = le[:1]
		return
	}
	t.Fatalf("no cluster %s", cluster)
}

func loopbackAddress(port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func splitHostPort(t testing.TB, addr string) (string, uint32) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("endpoint %q: %v", addr, err)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		t.Fatalf("endpoint %q: %v", addr, err)
	}
	return host, uint32(port)
}

// encode writes b as Envoy reads it (JSON).
func encode(b *bootstrapv3.Bootstrap) ([]byte, error) {
	js, err := protojson.MarshalOptions{Multiline: true}.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("encoding the bootstrap: %w", err)
	}
	return js, nil
}
