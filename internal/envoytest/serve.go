package envoytest

import (
	"context"
	"net"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// Serve runs srv on an in-memory gRPC server and returns a client connection to it. Like Envoy,
// every stream opened on the connection shares one HTTP/2 connection (contract §1). The server
// and the connection are stopped when the test ends.
//
//	envoy := envoytest.New(envoytest.Serve(t, srv), envoytest.Config{})
func Serve(t testing.TB, srv extprocv3.ExternalProcessorServer, opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer(opts...)
	extprocv3.RegisterExternalProcessorServer(s, srv)
	go func() { _ = s.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.Stop()
		t.Fatalf("envoytest: dialing the in-memory server: %v", err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		s.Stop()
	})
	return conn
}
