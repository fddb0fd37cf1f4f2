package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client certificate, written as
// PEM files (the certs package tests the TLS mechanics; this checks the flags' wiring).
type testPKI struct {
	dir  string
	pool *x509.CertPool
	ca   *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir(), pool: x509.NewCertPool()}
	var der []byte
	p.key, der = p.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil)
	var err error
	p.ca, err = x509.ParseCertificate(der)
	require.NoError(t, err)
	p.pool.AddCert(p.ca)
	p.write(t, "ca.crt", "CERTIFICATE", der)
	return p
}

// sign makes a key and a certificate from tmpl, signed by the CA (self-signed without one).
func (p *testPKI) sign(t *testing.T, tmpl *x509.Certificate, parent *x509.Certificate) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	signer, parentCert := key, tmpl
	if parent != nil {
		signer, parentCert = p.key, parent
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, &key.PublicKey, signer)
	require.NoError(t, err)
	return key, der
}

// leaf writes a certificate and key signed by the CA under name.crt and name.key.
func (p *testPKI) leaf(t *testing.T, name string, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, der := p.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: name}, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}, p.ca)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	p.write(t, name+".crt", "CERTIFICATE", der)
	p.write(t, name+".key", "PRIVATE KEY", keyDER)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (p *testPKI) write(t *testing.T, name, kind string, der []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(p.dir, name), pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600))
}

func (p *testPKI) path(name string) string { return filepath.Join(p.dir, name) }

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
	pki := newTestPKI(t)
	pki.leaf(t, "server", x509.ExtKeyUsageServerAuth)
	client := pki.leaf(t, "client", x509.ExtKeyUsageClientAuth)
	s := startServer(t, "--tls-cert", pki.path("server.crt"), "--tls-key", pki.path("server.key"),
		"--tls-client-ca", pki.path("ca.crt"))

	assert.Error(t, healthCheck(t, s.grpcAddr, insecure.NewCredentials()), "plaintext refused")
	assert.Error(t, healthCheck(t, s.grpcAddr, credentials.NewTLS(&tls.Config{RootCAs: pki.pool})), "no client certificate refused")
	assert.NoError(t, healthCheck(t, s.grpcAddr, credentials.NewTLS(&tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{client}})))

	code, body := httpGet(t, "http://"+s.adminAddr+"/metrics")
	assert.Equal(t, 200, code)
	assert.Contains(t, body, `cors_extproc_tls_reloads_total{result="success"} 0`)
}

func TestRunTLSErrors(t *testing.T) {
	_, err := parseConfig([]string{"--tls-cert", "a.crt", "--tls-reload-interval", "0s"}, env(nil), io.Discard)
	require.EqualError(t, err, "--tls-cert and --tls-key go together\n--tls-reload-interval 0s: must be positive")
	_, err = parseConfig([]string{"--tls-client-ca", "ca.crt"}, env(nil), io.Discard)
	require.EqualError(t, err, "--tls-client-ca: needs --tls-cert and --tls-key")

	err = run(context.Background(), []string{"--grpc-addr", "127.0.0.1:0", "--admin-addr", "", "--tls-cert", "/no/cert.pem",
		"--tls-key", "/no/key.pem"}, io.Discard, io.Discard)
	require.EqualError(t, err, "tls certificate /no/cert.pem: unreadable: no such file or directory")
}
