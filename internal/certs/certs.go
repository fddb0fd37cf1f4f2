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
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"
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

	files Files
	log   *slog.Logger
	cur   atomic.Pointer[material]

	// Run's own state, never shared.
	badSum  [sha256.Size]byte // content of the files last refused
	lastErr string            // the error last reported; "" after a successful load
}

// material is one consistent set of certificate, key and client CA pool, never modified once
// built: handshakes read it without locks.
type material struct {
	sum    [sha256.Size]byte // of the files' content, to see whether they changed
	config *tls.Config       // what a handshake uses
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
// reported to OnReload once, and the previous material stays in use.
//
// Run compares the files' content rather than watching paths: a Kubernetes Secret volume
// replaces its files by switching a "..data" symlink, which a watch on the file paths misses.
// That switch changes all three files at once; a writer that rewrites them one at a time may
// have a half-written set read and reported as a failure, which the next poll then corrects.
func (r *Reloader) Run(ctx context.Context, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			r.poll()
		}
	}
}

// poll reloads the files if their content changed since the last load or refusal.
func (r *Reloader) poll() {
	contents, err := r.read()
	if err != nil {
		r.fail(err)
		return
	}
	sum := checksum(contents)
	if sum == r.cur.Load().sum {
		// Back to the loaded material (a broken rotation undone): a later failure, even the
		// same one, is news again.
		r.badSum = [sha256.Size]byte{}
		r.lastErr = ""
		return
	}
	if sum == r.badSum {
		return
	}
	m, err := r.load(contents)
	if err != nil {
		r.badSum = sum
		r.fail(err)
		return
	}
	r.cur.Store(m)
	r.badSum = [sha256.Size]byte{}
	r.lastErr = ""
	r.log.Info("tls certificate reloaded", m.logAttrs(r.files)...)
	if r.OnReload != nil {
		r.OnReload(nil)
	}
}

// fail logs and reports a failed reload, once per distinct error.
func (r *Reloader) fail(err error) {
	if err.Error() == r.lastErr {
		return
	}
	r.lastErr = err.Error()
	r.log.Error("tls certificate reload failed; keeping the previous certificate", "error", err)
	if r.OnReload != nil {
		r.OnReload(err)
	}
}

// contents are the bytes of the certificate, key and client CA files (nil without a CA file).
type contents struct{ cert, key, ca []byte }

func (r *Reloader) read() (contents, error) {
	var c contents
	var err error
	if c.cert, err = readFile("certificate", r.files.Cert); err != nil {
		return c, err
	}
	if c.key, err = readFile("key", r.files.Key); err != nil {
		return c, err
	}
	if r.files.ClientCA != "" {
		if c.ca, err = readFile("client CA", r.files.ClientCA); err != nil {
			return c, err
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

// checksum identifies the three files' content together; the lengths keep bytes moved from
// one file to the next from giving the same sum.
func checksum(c contents) [sha256.Size]byte {
	h := sha256.New()
	for _, b := range [][]byte{c.cert, c.key, c.ca} {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// load parses and checks the files' content: the certificate chain, a key that is the
// certificate's, and a client CA file holding certificates. Nothing is swapped in unless all
// of it loads, so a certificate never goes out with another certificate's key.
func (r *Reloader) load(c contents) (*material, error) {
	f := r.files
	certDER, err := pemBlocks("certificate", f.Cert, c.cert, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(certDER[0])
	if err != nil {
		return nil, fmt.Errorf("tls certificate %s: %w", f.Cert, err)
	}
	keyDER, err := pemBlocks("key", f.Key, c.key, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	key, err := parseKey(keyDER[0])
	if err != nil {
		return nil, fmt.Errorf("tls key %s: %w", f.Key, err)
	}
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("tls key %s does not match the certificate %s", f.Key, f.Cert)
	}
	config := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"},
		Certificates: []tls.Certificate{{Certificate: certDER, PrivateKey: key, Leaf: leaf}},
		// A resumed session skips the client certificate check; Envoy keeps its connections
		// for long, so verifying every handshake against the current CA costs little.
		SessionTicketsDisabled: true,
	}
	if f.ClientCA != "" {
		caDER, err := pemBlocks("client CA", f.ClientCA, c.ca, "CERTIFICATE")
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		for _, der := range caDER {
			ca, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, fmt.Errorf("tls client CA %s: %w", f.ClientCA, err)
			}
			pool.AddCert(ca)
		}
		config.ClientCAs = pool
		config.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return &material{sum: checksum(c), config: config, leaf: leaf}, nil
}

// pemBlocks returns the DER bytes of the PEM blocks whose type ends in suffix ("CERTIFICATE";
// "PRIVATE KEY" also matches "EC PRIVATE KEY" and "RSA PRIVATE KEY"), in file order.
func pemBlocks(what, name string, data []byte, suffix string) ([][]byte, error) {
	var ders [][]byte
	var others []string
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if strings.HasSuffix(block.Type, suffix) {
			ders = append(ders, block.Bytes)
		} else {
			others = append(others, block.Type)
		}
	}
	switch {
	case len(ders) > 0:
		return ders, nil
	case len(others) == 0:
		return nil, fmt.Errorf("tls %s %s: no PEM block", what, name)
	case suffix == "CERTIFICATE":
		return nil, fmt.Errorf("tls %s %s: no certificate (PEM blocks: %s)", what, name, strings.Join(others, ", "))
	default:
		return nil, fmt.Errorf("tls %s %s: no private key (PEM blocks: %s)", what, name, strings.Join(others, ", "))
	}
}

// parseKey reads the key encodings crypto/tls accepts.
func parseKey(der []byte) (crypto.Signer, error) {
	var key any
	var err error
	if key, err = x509.ParsePKCS8PrivateKey(der); err != nil {
		if key, err = x509.ParsePKCS1PrivateKey(der); err != nil {
			if key, err = x509.ParseECPrivateKey(der); err != nil {
				return nil, errors.New("unparsable private key (want PKCS #8, PKCS #1 or SEC 1)")
			}
		}
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", key)
	}
	return signer, nil
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
