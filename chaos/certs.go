package chaos

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Certs is a throwaway PKI for tests: a CA and two certificates it signed,
// one for a server on 127.0.0.1 / localhost and one for a client, written
// as PEM files in Dir. Every test that needs TLS (the MySQL proxy's client
// side, the Mongo proxy's both sides, TLS-only members) makes its own, so
// a second CA is a "wrong CA" in one line.
type Certs struct {
	Dir string
	// CAFile is the CA certificate (what a client or a server verifies
	// against).
	CAFile string
	// CertFile and KeyFile are a server certificate for 127.0.0.1 and
	// localhost (also usable as a client certificate).
	CertFile, KeyFile string
	// ClientCertFile and ClientKeyFile are a client certificate
	// (CN dbrouter-client).
	ClientCertFile, ClientKeyFile string

	pool *x509.CertPool
}

// NewCerts makes a CA named name and its certificates in dir. They are
// valid from an hour ago (clock skew between the test and a child process
// does not matter) to a day from now.
func NewCerts(dir, name string) (*Certs, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("certs: CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("certs: CA: %w", err)
	}
	c := &Certs{Dir: dir, CAFile: filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server-key.pem"),
		ClientCertFile: filepath.Join(dir, "client.pem"), ClientKeyFile: filepath.Join(dir, "client-key.pem"),
		pool: x509.NewCertPool()}
	c.pool.AddCert(ca)
	if err := writePEM(c.CAFile, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	leaves := []struct {
		serial        int64
		cn            string
		usage         x509.ExtKeyUsage
		cert, keyFile string
	}{
		{2, name + "-server", x509.ExtKeyUsageServerAuth, c.CertFile, c.KeyFile},
		{3, "dbrouter-client", x509.ExtKeyUsageClientAuth, c.ClientCertFile, c.ClientKeyFile},
	}
	for _, l := range leaves {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("certs: %s key: %w", l.cn, err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(l.serial), Subject: pkix.Name{CommonName: l.cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{l.usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, fmt.Errorf("certs: %s: %w", l.cn, err)
		}
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("certs: %s key: %w", l.cn, err)
		}
		if err := writePEM(l.cert, "CERTIFICATE", der); err != nil {
			return nil, err
		}
		if err := writePEM(l.keyFile, "EC PRIVATE KEY", kb); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// NewCertsT makes a PKI in a temp dir of the test; a failure fails it.
func NewCertsT(t testing.TB, name string) *Certs {
	t.Helper()
	c, err := NewCerts(t.TempDir(), name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Pool is a pool holding the CA alone.
func (c *Certs) Pool() *x509.CertPool { return c.pool }

// ServerTLS is a server's configuration with the server certificate.
func (c *Certs) ServerTLS() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// ClientTLS is a client's configuration that trusts the CA alone.
func (c *Certs) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: c.pool, MinVersion: tls.VersionTLS12}
}

func writePEM(path, typ string, der []byte) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}
