package certs_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/cors-extproc/cors-extproc/internal/certs"
)

// serverName is the DNS name in the test server certificates (beside 127.0.0.1).
const serverName = "cors-extproc.test"

// ca is a test certificate authority.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func newSerial(t *testing.T) *big.Int {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return serial
}

// createCert signs tmpl with parent's key (tmpl itself when parent is nil: self-signed).
func createCert(t *testing.T, tmpl *x509.Certificate, key *ecdsa.PrivateKey, parent *ca) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = newSerial(t)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	signer, issuer := key, tmpl
	if parent != nil {
		signer, issuer = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func newCA(t *testing.T, name string) *ca {
	t.Helper()
	key := newKey(t)
	cert := createCert(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}, key, nil)
	return &ca{cert: cert, key: key, pem: certPEM(cert)}
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// keyPEM encodes key as PKCS #8, the way Go and most tools write keys.
func keyPEM(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// serverCert is a server certificate signed by c: PEM files and the parsed certificate.
type serverCert struct {
	cert          *x509.Certificate
	key           *ecdsa.PrivateKey
	certPEM, keyP []byte
}

func (c *ca) server(t *testing.T) serverCert {
	t.Helper()
	key := newKey(t)
	cert := createCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: serverName},
		DNSNames:    []string{serverName},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, key, c)
	return serverCert{cert: cert, key: key, certPEM: certPEM(cert), keyP: keyPEM(t, key)}
}

// client returns a client certificate signed by c, or self-signed when c is nil.
func (c *ca) client(t *testing.T) tls.Certificate {
	t.Helper()
	key := newKey(t)
	cert := createCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "envoy"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, key, c)
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

func selfSignedClient(t *testing.T) tls.Certificate {
	t.Helper()
	var none *ca
	return none.client(t)
}

// secretDir lays files out the way the kubelet does in a Secret volume: the visible names are
// symlinks into "..data", itself a symlink to a timestamped directory, and an update switches
// "..data" in one rename.
type secretDir struct {
	dir     string
	version int
}

func newSecretDir(t *testing.T, files map[string][]byte) *secretDir {
	t.Helper()
	s := &secretDir{dir: t.TempDir()}
	s.update(t, files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(s.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *secretDir) path(name string) string { return filepath.Join(s.dir, name) }

func (s *secretDir) files(withCA bool) certs.Files {
	f := certs.Files{Cert: s.path("tls.crt"), Key: s.path("tls.key")}
	if withCA {
		f.ClientCA = s.path("ca.crt")
	}
	return f
}

func (s *secretDir) update(t *testing.T, files map[string][]byte) {
	t.Helper()
	s.version++
	ts := "..v" + strconv.Itoa(s.version)
	if err := os.Mkdir(filepath.Join(s.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(s.dir, ts, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(s.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

func secretFiles(sc serverCert, clientCA *ca) map[string][]byte {
	files := map[string][]byte{"tls.crt": sc.certPEM, "tls.key": sc.keyP}
	if clientCA != nil {
		files["ca.crt"] = clientCA.pem
	}
	return files
}

// syncBuffer collects log output written from Run's goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newReloader(t *testing.T, f certs.Files, log *slog.Logger) *certs.Reloader {
	t.Helper()
	r, err := certs.New(f, log)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// serve starts a gRPC server with the standard health service on 127.0.0.1, over TLS from r.
func serve(t *testing.T, r *certs.Reloader) (string, *health.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(r.ServerConfig())))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return lis.Addr().String(), hs
}

// runReloader runs r.Run until the test ends, polling every few milliseconds.
func runReloader(t *testing.T, r *certs.Reloader) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, 5*time.Millisecond)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// clientTLS trusts trust for the server and presents cert, if any.
func clientTLS(trust *ca, cert *tls.Certificate) credentials.TransportCredentials {
	pool := x509.NewCertPool()
	pool.AddCert(trust.cert)
	c := &tls.Config{RootCAs: pool, ServerName: serverName}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return credentials.NewTLS(c)
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// check calls the health service on conn and returns the serial number of the certificate the
// server showed on that connection.
func check(conn *grpc.ClientConn) (*big.Int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var p peer.Peer
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		return nil, err
	}
	return p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0].SerialNumber, nil
}

// wantServed checks that a new connection is served with the certificate of serial want.
func wantServed(t *testing.T, addr string, creds credentials.TransportCredentials, want *big.Int) {
	t.Helper()
	got, err := check(dial(t, addr, creds))
	if err != nil {
		t.Fatalf("new connection: %v", err)
	}
	if got.Cmp(want) != 0 {
		t.Fatalf("new connection served certificate %v, want %v", got, want)
	}
}

func wantRefused(t *testing.T, what, addr string, creds credentials.TransportCredentials) {
	t.Helper()
	_, err := check(dial(t, addr, creds))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("%s: got %v, want the connection refused (Unavailable)", what, err)
	}
}

func TestPlaintextRefused(t *testing.T) {
	authority := newCA(t, "test CA")
	dir := newSecretDir(t, secretFiles(authority.server(t), nil))
	addr, _ := serve(t, newReloader(t, dir.files(false), discardLogger()))

	wantRefused(t, "plaintext client", addr, insecure.NewCredentials())
	// Without --tls-client-ca, any client that trusts the server gets in.
	if _, err := check(dial(t, addr, clientTLS(authority, nil))); err != nil {
		t.Errorf("TLS client without a certificate: %v", err)
	}
}

func TestOldTLSVersionsRefused(t *testing.T) {
	authority := newCA(t, "test CA")
	dir := newSecretDir(t, secretFiles(authority.server(t), nil))
	addr, _ := serve(t, newReloader(t, dir.files(false), discardLogger()))

	pool := x509.NewCertPool()
	pool.AddCert(authority.cert)
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		conn.Close()
		t.Fatal("TLS 1.1 handshake succeeded")
	}
}

func TestMutualTLS(t *testing.T) {
	authority := newCA(t, "test CA")
	dir := newSecretDir(t, secretFiles(authority.server(t), authority))
	addr, _ := serve(t, newReloader(t, dir.files(true), discardLogger()))

	wantRefused(t, "plaintext client", addr, insecure.NewCredentials())
	wantRefused(t, "client without a certificate", addr, clientTLS(authority, nil))
	selfSigned := selfSignedClient(t)
	wantRefused(t, "client with a self-signed certificate", addr, clientTLS(authority, &selfSigned))
	other := newCA(t, "other CA").client(t)
	wantRefused(t, "client with a certificate of another CA", addr, clientTLS(authority, &other))

	signed := authority.client(t)
	if _, err := check(dial(t, addr, clientTLS(authority, &signed))); err != nil {
		t.Errorf("client with a certificate signed by the CA: %v", err)
	}
}

// TestRotation replaces the files the way a Secret volume does and checks that new connections
// get the new certificate while a connection and a stream opened before carry on.
func TestRotation(t *testing.T) {
	authority := newCA(t, "test CA")
	first := authority.server(t)
	dir := newSecretDir(t, secretFiles(first, authority))
	r := newReloader(t, dir.files(true), discardLogger())
	reloads := make(chan error, 10)
	r.OnReload = func(err error) { reloads <- err }
	addr, hs := serve(t, r)
	client := authority.client(t)
	creds := clientTLS(authority, &client)

	before := dial(t, addr, creds)
	if serial, err := check(before); err != nil || serial.Cmp(first.cert.SerialNumber) != 0 {
		t.Fatalf("before the rotation: serial %v, error %v; want %v", serial, err, first.cert.SerialNumber)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch, err := healthpb.NewHealthClient(before).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch: %v %v", resp, err)
	}

	runReloader(t, r)
	second := authority.server(t)
	dir.update(t, secretFiles(second, authority))
	if err := waitReload(t, reloads); err != nil {
		t.Fatalf("OnReload(%v), want nil", err)
	}
	wantServed(t, addr, creds, second.cert.SerialNumber)

	// The stream opened before the rotation still carries messages, on the connection that
	// still holds the first certificate.
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch opened before the rotation: %v %v", resp, err)
	}
	if serial, err := check(before); err != nil || serial.Cmp(first.cert.SerialNumber) != 0 {
		t.Errorf("connection opened before the rotation: serial %v, error %v; want %v", serial, err, first.cert.SerialNumber)
	}
}

// TestClientCARotation checks that a new client CA applies to new connections: clients of the
// old CA are refused, clients of the new one accepted.
func TestClientCARotation(t *testing.T) {
	authority := newCA(t, "test CA")
	sc := authority.server(t)
	dir := newSecretDir(t, secretFiles(sc, authority))
	r := newReloader(t, dir.files(true), discardLogger())
	reloads := make(chan error, 10)
	r.OnReload = func(err error) { reloads <- err }
	addr, _ := serve(t, r)
	runReloader(t, r)

	oldClient := authority.client(t)
	newAuthority := newCA(t, "new client CA")
	newClient := newAuthority.client(t)
	dir.update(t, secretFiles(sc, newAuthority))
	if err := waitReload(t, reloads); err != nil {
		t.Fatalf("OnReload(%v), want nil", err)
	}
	wantRefused(t, "client of the old CA", addr, clientTLS(authority, &oldClient))
	if _, err := check(dial(t, addr, clientTLS(authority, &newClient))); err != nil {
		t.Errorf("client of the new CA: %v", err)
	}
}

// TestBrokenRotation checks that material that does not load is refused, reported once, and
// the previous certificate kept, until a good one comes.
func TestBrokenRotation(t *testing.T) {
	authority := newCA(t, "test CA")
	first := authority.server(t)
	dir := newSecretDir(t, secretFiles(first, authority))
	var logs syncBuffer
	r := newReloader(t, dir.files(true), slog.New(slog.NewTextHandler(&logs, nil)))
	reloads := make(chan error, 10)
	r.OnReload = func(err error) { reloads <- err }
	addr, _ := serve(t, r)
	client := authority.client(t)
	creds := clientTLS(authority, &client)
	runReloader(t, r)

	// A new certificate with the old key.
	second := authority.server(t)
	mismatched := secretFiles(second, authority)
	mismatched["tls.key"] = first.keyP
	dir.update(t, mismatched)
	err := waitReload(t, reloads)
	want := "tls certificate " + dir.path("tls.crt") + " and key " + dir.path("tls.key") + ": tls: private key does not match public key"
	if err == nil || err.Error() != want {
		t.Fatalf("OnReload(%v), want %q", err, want)
	}
	wantServed(t, addr, creds, first.cert.SerialNumber)
	wantNoReload(t, reloads)
	if n := strings.Count(logs.String(), "reload failed"); n != 1 {
		t.Errorf("%d failure lines logged, want 1:\n%s", n, logs.String())
	}

	// Another breakage is another error, reported too.
	broken := secretFiles(second, authority)
	broken["tls.key"] = []byte("not a key\n")
	dir.update(t, broken)
	want = "tls certificate " + dir.path("tls.crt") + " and key " + dir.path("tls.key") + ": tls: failed to find any PEM data in key input"
	if err := waitReload(t, reloads); err == nil || err.Error() != want {
		t.Fatalf("OnReload(%v), want %q", err, want)
	}
	wantServed(t, addr, creds, first.cert.SerialNumber)

	// A file gone (the Secret lost its ca.crt): unreadable on every poll, reported once.
	dir.update(t, secretFiles(second, nil))
	want = "tls client CA " + dir.path("ca.crt") + ": unreadable: no such file or directory"
	if err := waitReload(t, reloads); err == nil || err.Error() != want {
		t.Fatalf("OnReload(%v), want %q", err, want)
	}
	wantServed(t, addr, creds, first.cert.SerialNumber)
	wantNoReload(t, reloads)

	// Fixed: the new certificate goes out.
	dir.update(t, secretFiles(second, authority))
	if err := waitReload(t, reloads); err != nil {
		t.Fatalf("OnReload(%v), want nil", err)
	}
	wantServed(t, addr, creds, second.cert.SerialNumber)
}

// TestBrokenRotationUndone checks that the same failure is reported again after the files went
// back to the loaded material in between.
func TestBrokenRotationUndone(t *testing.T) {
	authority := newCA(t, "test CA")
	first := authority.server(t)
	dir := newSecretDir(t, secretFiles(first, nil))
	r := newReloader(t, dir.files(false), discardLogger())
	reloads := make(chan error, 10)
	r.OnReload = func(err error) { reloads <- err }
	runReloader(t, r)

	broken := secretFiles(first, nil)
	broken["tls.crt"] = nil
	want := "tls certificate " + dir.path("tls.crt") + " and key " + dir.path("tls.key") + ": tls: failed to find any PEM data in certificate input"
	for range 2 {
		dir.update(t, broken)
		if err := waitReload(t, reloads); err == nil || err.Error() != want {
			t.Fatalf("OnReload(%v), want %q", err, want)
		}
		dir.update(t, secretFiles(first, nil)) // the loaded material is back: nothing to report
		wantNoReload(t, reloads)
	}
}

// wantNoReload checks that ten polls go by without a call to OnReload.
func wantNoReload(t *testing.T, reloads <-chan error) {
	t.Helper()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-reloads:
		t.Fatalf("OnReload(%v) again, want no report", err)
	default:
	}
}

func waitReload(t *testing.T, reloads <-chan error) error {
	t.Helper()
	select {
	case err := <-reloads:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("no reload within 10s")
		return nil
	}
}

// TestKeyEncodings checks the key encodings cert-manager writes (PKCS #1 / SEC 1 by default,
// PKCS #8 on request).
func TestKeyEncodings(t *testing.T) {
	sc := newCA(t, "test CA").server(t)
	sec1, err := x509.MarshalECPrivateKey(sc.key)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string][]byte{
		"PKCS #8": sc.keyP,
		"SEC 1":   pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}),
	} {
		dir := newSecretDir(t, map[string][]byte{"tls.crt": sc.certPEM, "tls.key": key})
		if _, err := certs.New(dir.files(false), discardLogger()); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestNewErrors(t *testing.T) {
	authority := newCA(t, "test CA")
	sc := authority.server(t)
	other := authority.server(t)
	junkCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})
	junkKey := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")})
	dir := t.TempDir()
	for name, b := range map[string][]byte{
		"cert.pem":       sc.certPEM,
		"key.pem":        sc.keyP,
		"other-key.pem":  other.keyP,
		"ca.pem":         authority.pem,
		"empty.pem":      nil,
		"junk-cert.pem":  junkCert,
		"junk-key.pem":   junkKey,
		"text.pem":       []byte("hello\n"),
		"cert+chain.pem": append(append([]byte{}, sc.certPEM...), authority.pem...),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	// pair is the start of an error of tls.X509KeyPair, which reads both files.
	pair := func(cert, key string) string { return "tls certificate " + p(cert) + " and key " + p(key) + ": " }

	for _, tc := range []struct {
		files certs.Files
		want  string
	}{
		{certs.Files{Key: p("key.pem")}, "tls: a certificate file and a key file are both required"},
		{certs.Files{Cert: p("cert.pem")}, "tls: a certificate file and a key file are both required"},
		{certs.Files{Cert: p("missing.pem"), Key: p("key.pem")}, "tls certificate " + p("missing.pem") + ": unreadable: no such file or directory"},
		{certs.Files{Cert: dir, Key: p("key.pem")}, "tls certificate " + dir + ": unreadable: is a directory"},
		{certs.Files{Cert: p("empty.pem"), Key: p("key.pem")}, pair("empty.pem", "key.pem") + "tls: failed to find any PEM data in certificate input"},
		{certs.Files{Cert: p("text.pem"), Key: p("key.pem")}, pair("text.pem", "key.pem") + "tls: failed to find any PEM data in certificate input"},
		{certs.Files{Cert: p("key.pem"), Key: p("key.pem")}, pair("key.pem", "key.pem") + "tls: failed to find certificate PEM data in certificate input, but did find a private key; PEM inputs may have been switched"},
		{certs.Files{Cert: p("junk-cert.pem"), Key: p("key.pem")}, pair("junk-cert.pem", "key.pem") + "x509: malformed certificate"},
		{certs.Files{Cert: p("cert.pem"), Key: p("missing.pem")}, "tls key " + p("missing.pem") + ": unreadable: no such file or directory"},
		{certs.Files{Cert: p("cert.pem"), Key: p("empty.pem")}, pair("cert.pem", "empty.pem") + "tls: failed to find any PEM data in key input"},
		{certs.Files{Cert: p("cert.pem"), Key: p("cert.pem")}, pair("cert.pem", "cert.pem") + "tls: found a certificate rather than a key in the PEM for the private key"},
		{certs.Files{Cert: p("cert.pem"), Key: p("junk-key.pem")}, pair("cert.pem", "junk-key.pem") + "tls: failed to parse private key"},
		{certs.Files{Cert: p("cert.pem"), Key: p("other-key.pem")}, pair("cert.pem", "other-key.pem") + "tls: private key does not match public key"},
		{certs.Files{Cert: p("cert.pem"), Key: p("key.pem"), ClientCA: p("missing.pem")}, "tls client CA " + p("missing.pem") + ": unreadable: no such file or directory"},
		{certs.Files{Cert: p("cert.pem"), Key: p("key.pem"), ClientCA: p("empty.pem")}, "tls client CA " + p("empty.pem") + ": no certificate (want PEM CERTIFICATE blocks)"},
		{certs.Files{Cert: p("cert.pem"), Key: p("key.pem"), ClientCA: p("key.pem")}, "tls client CA " + p("key.pem") + ": no certificate (want PEM CERTIFICATE blocks)"},
		{certs.Files{Cert: p("cert.pem"), Key: p("key.pem"), ClientCA: p("junk-cert.pem")}, "tls client CA " + p("junk-cert.pem") + ": no certificate (want PEM CERTIFICATE blocks)"},
	} {
		_, err := certs.New(tc.files, discardLogger())
		if err == nil || err.Error() != tc.want {
			t.Errorf("New(%+v): %v, want %q", tc.files, err, tc.want)
		}
	}

	// A chain after the leaf is served whole.
	r, err := certs.New(certs.Files{Cert: p("cert+chain.pem"), Key: p("key.pem"), ClientCA: p("ca.pem")}, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := r.ServerConfig().GetConfigForClient(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cfg.Certificates[0].Certificate); n != 2 {
		t.Errorf("served chain of %d certificates, want 2", n)
	}
	if cfg.MinVersion != tls.VersionTLS12 || cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("MinVersion %x, ClientAuth %v", cfg.MinVersion, cfg.ClientAuth)
	}
}
