// Package certs serves TLS, and mutual TLS, on the gRPC listener with certificates that are
// reloaded from disk when they change: cert-manager renews a certificate long before it expires
// and rewrites the Secret, and the server must pick the new one up without a restart, because a
// restart would cut every ext_proc stream Envoy has open.
//
// Only new handshakes see new material. A TLS connection authenticates once, when it is set up,
// so connections open at a rotation, and the streams on them, carry on untouched.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/cors-extproc/cors-extproc/internal/reload"
)

// Files names the PEM files of a TLS listener.
type Files struct {
	// Cert is the server's certificate, followed by any intermediates (cert-manager's tls.crt).
	Cert string
	// Key is the certificate's private key: PKCS #8, PKCS #1 (RSA) or SEC 1 (EC).
	Key string
	// ClientCA holds the certificates that client certificates must chain to. Empty: TLS
	// without client certificates.
	ClientCA string
}

// Reloader holds the listener's current certificate, key and client CA pool and swaps in new
// ones read from the Files.
type Reloader struct {
	// OnReload, when set (before Run), is called by Run after each change of the files: with
	// nil when the new material was swapped in, with the error when it was refused and the
	// previous material stays. A failure is reported once, not on every poll while the files
	// stay broken. It runs on Run's goroutine: count, don't block.
	OnReload func(err error)

	files  Files
	log    *slog.Logger
	cur    atomic.Pointer[material]
	poller *reload.Poller
}

// material is one consistent set of certificate, key and client CA pool, never modified once
// built: handshakes read it without locks.
type material struct {
	config *tls.Config // what a handshake uses
	leaf   *x509.Certificate
}

// New loads the files and returns a Reloader serving them. An error names the file and what is
// wrong with it; the server should refuse to start on one.
func New(f Files, log *slog.Logger) (*Reloader, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("tls: a certificate file and a key file are both required")
	}
	r := &Reloader{files: f, log: log}
	contents, err := r.read()
	if err != nil {
		return nil, err
	}
	m, err := r.load(contents)
	if err != nil {
		return nil, err
	}
	r.cur.Store(m)
	r.poller = reload.New(contents, r.read, r.apply, r.fail)
	log.Info("tls certificate loaded", m.logAttrs(f)...)
	return r, nil
}

// ServerConfig returns the tls.Config of the gRPC listener (for grpc's credentials.NewTLS,
// which adds the h2 protocol). Each new handshake takes the certificate, key and client CA pool
// current at that moment, so a reload needs no new listener. With Files.ClientCA set, clients
// must present a certificate that chains to it.
func (r *Reloader) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.cur.Load().config, nil
		},
	}
}

// Run re-reads the files every interval (which must be positive) until ctx ends. New content
// that loads is swapped in at once for new handshakes; content that fails to load is logged and
// reported to OnReload once, and the previous material stays in use (package reload).
//
// A Kubernetes Secret volume changes all three files at once; a writer that rewrites them one
// at a time may have a half-written set read and reported as a failure, which the next poll
// then corrects.
func (r *Reloader) Run(ctx context.Context, interval time.Duration) {
	r.poller.Run(ctx, interval)
}

// apply swaps in new content of the files if it loads.
func (r *Reloader) apply(contents [][]byte) error {
	m, err := r.load(contents)
	if err != nil {
		return err
	}
	r.cur.Store(m)
	r.log.Info("tls certificate reloaded", m.logAttrs(r.files)...)
	if r.OnReload != nil {
		r.OnReload(nil)
	}
	return nil
}

// fail logs and reports a failed reload; package reload calls it once per failure.
func (r *Reloader) fail(err error) {
	r.log.Error("tls certificate reload failed; keeping the previous certificate", "error", err)
	if r.OnReload != nil {
		r.OnReload(err)
	}
}

// read returns the content of the certificate, key and client CA files, in that order (the
// last one nil without a CA file).
func (r *Reloader) read() ([][]byte, error) {
	c := make([][]byte, 3)
	var err error
	if c[0], err = readFile("certificate", r.files.Cert); err != nil {
		return nil, err
	}
	if c[1], err = readFile("key", r.files.Key); err != nil {
		return nil, err
	}
	if r.files.ClientCA != "" {
		if c[2], err = readFile("client CA", r.files.ClientCA); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func readFile(what, name string) ([]byte, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("tls %s %s: unreadable: %w", what, name, err)
	}
	return b, nil
}

// load parses and checks the files' content with the standard library: tls.X509KeyPair reads
// the certificate chain and the key (PKCS #8, PKCS #1 or SEC 1) and checks that the key is the
// certificate's; CertPool.AppendCertsFromPEM reads the client CA file. Nothing is swapped in
// unless all of it loads, so a certificate never goes out with another certificate's key.
func (r *Reloader) load(contents [][]byte) (*material, error) {
	f := r.files
	pair, err := tls.X509KeyPair(contents[0], contents[1])
	if err != nil {
		return nil, fmt.Errorf("tls certificate %s and key %s: %w", f.Cert, f.Key, err)
	}
	config := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"},
		Certificates: []tls.Certificate{pair},
		// A resumed session skips the client certificate check; Envoy keeps its connections
		// for long, so verifying every handshake against the current CA costs little.
		SessionTicketsDisabled: true,
	}
	if f.ClientCA != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(contents[2]) {
			return nil, fmt.Errorf("tls client CA %s: no certificate (want PEM CERTIFICATE blocks)", f.ClientCA)
		}
		config.ClientCAs = pool
		config.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return &material{config: config, leaf: pair.Leaf}, nil
}

// logAttrs describe the loaded certificate: enough to tell, in the log, which one is served
// and when it expires.
func (m *material) logAttrs(f Files) []any {
	attrs := []any{
		"cert", f.Cert,
		"subject", m.leaf.Subject.String(),
		"dns_names", m.leaf.DNSNames,
		"serial", m.leaf.SerialNumber.String(),
		"not_after", m.leaf.NotAfter.UTC().Format(time.RFC3339),
		"client_ca", f.ClientCA,
	}
	if time.Now().After(m.leaf.NotAfter) {
		attrs = append(attrs, "expired", true)
	}
	return attrs
}
