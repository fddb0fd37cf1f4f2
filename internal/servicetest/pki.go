package servicetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a test CA that signs server and client certificates, written as PEM files the way a
// Kubernetes TLS Secret holds them (ca.crt, NAME.crt, NAME.key), for the server's --tls-* flags
// and for an Envoy's TLS context.
type PKI struct {
	Dir  string
	Pool *x509.CertPool // the CA, for a Go client's RootCAs
	ca   *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewPKI makes the CA and writes Dir/ca.crt.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	p := &PKI{Dir: t.TempDir(), Pool: x509.NewCertPool()}
	var der []byte
	p.key, der = p.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil)
	var err error
	if p.ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	p.Pool.AddCert(p.ca)
	p.write(t, "ca.crt", "CERTIFICATE", der)
	return p
}

// sign makes a key and a certificate from tmpl, signed by the CA (self-signed without one).
func (p *PKI) sign(t testing.TB, tmpl *x509.Certificate, parent *x509.Certificate) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	signer, parentCert := key, tmpl
	if parent != nil {
		signer, parentCert = p.key, parent
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// Leaf writes a certificate and key signed by the CA as Dir/name.crt and Dir/name.key, for
// usage (server or client auth) and the given hosts: IP addresses or DNS names.
func (p *PKI) Leaf(t testing.TB, name string, usage x509.ExtKeyUsage, hosts ...string) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: name}, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	key, der := p.sign(t, tmpl, p.ca)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p.write(t, name+".crt", "CERTIFICATE", der)
	p.write(t, name+".key", "PRIVATE KEY", keyDER)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (p *PKI) write(t testing.TB, name, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(p.Path(name), pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Path is the file name under Dir.
func (p *PKI) Path(name string) string { return filepath.Join(p.Dir, name) }
