package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/cors-extproc/cors-extproc/internal/servicetest"
)

func healthCheck(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// With --tls-cert, --tls-key and --tls-client-ca the gRPC listener speaks mutual TLS only;
// the admin listener stays plaintext.
func TestRunMutualTLS(t *testing.T) {
	pki := servicetest.NewPKI(t)
	pki.Leaf(t, "server", x509.ExtKeyUsageServerAuth, "127.0.0.1")
	client := pki.Leaf(t, "client", x509.ExtKeyUsageClientAuth, "127.0.0.1")
	s := startServer(t, "--tls-cert", pki.Path("server.crt"), "--tls-key", pki.Path("server.key"),
		"--tls-client-ca", pki.Path("ca.crt"))

	assert.Error(t, healthCheck(t, s.grpcAddr, insecure.NewCredentials()), "plaintext refused")
	assert.Error(t, healthCheck(t, s.grpcAddr, credentials.NewTLS(&tls.Config{RootCAs: pki.Pool})), "no client certificate refused")
	assert.NoError(t, healthCheck(t, s.grpcAddr, credentials.NewTLS(&tls.Config{RootCAs: pki.Pool, Certificates: []tls.Certificate{client}})))

	code, body := httpGet(t, "http://"+s.adminAddr+"/metrics")
	assert.Equal(t, 200, code)
	assert.Contains(t, body, `cors_extproc_tls_reloads_total{result="success"} 0`)
}

func TestRunTLSErrors(t *testing.T) {
	_, err := parseConfig([]string{"--tls-cert", "a.crt", "--tls-reload-interval", "0s"}, env(nil))
	require.EqualError(t, err, "--tls-reload-interval \"0s\": must be positive\n--tls-cert and --tls-key go together")
	_, err = parseConfig([]string{"--tls-client-ca", "ca.crt"}, env(nil))
	require.EqualError(t, err, "--tls-client-ca \"ca.crt\": needs --tls-cert and --tls-key")

	err = run(context.Background(), []string{"--grpc-addr", "127.0.0.1:0", "--admin-addr", "", "--tls-cert", "/no/cert.pem",
		"--tls-key", "/no/key.pem"}, io.Discard, io.Discard)
	require.EqualError(t, err, "tls certificate /no/cert.pem: unreadable: no such file or directory")
}
