package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/pipelined/pipelined/pipeline/config"
)

// certificate holds the ingest listener's TLS certificate and reads it
// again when its files change (checked at most every few seconds, on the
// next handshake) or when Reload is called (SIGHUP). A pair that fails to
// load keeps the previous one serving, and says why in the log.
type certificate struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // modification times and sizes of the pair
	checked time.Time
}

func newCertificate(certFile, keyFile string, log *slog.Logger) (*certificate, error) {
	certFile, err := config.ExpandFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("server.tls_cert_file %w", err)
	}
	keyFile, err = config.ExpandFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("server.tls_key_file %w", err)
	}
	c := &certificate{certFile: certFile, keyFile: keyFile, log: log}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// aeadSuites are the TLS 1.2 cipher suites offered: forward-secret key
// exchange and AEAD encryption only, none of CBC and SHA-1. (TLS 1.3
// suites are all AEAD and not configurable.)
var aeadSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// tlsConfig is the ingest listener's TLS configuration: TLS 1.2 at least,
// with AEAD suites only.
func (c *certificate) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: aeadSuites, GetCertificate: c.get}
}

func (c *certificate) stampOf() string {
	s := ""
	for _, f := range []string{c.certFile, c.keyFile} {
		if fi, err := os.Stat(f); err == nil {
			s += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
		}
	}
	return s
}

func (c *certificate) load() error {
	stamp := c.stampOf()
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate %s and key %s: %w", c.certFile, c.keyFile, err)
	}
	c.mu.Lock()
	c.cert, c.stamp, c.checked = &cert, stamp, time.Now()
	c.mu.Unlock()
	return nil
}

// Reload reads the pair again now.
func (c *certificate) Reload() {
	if err := c.load(); err != nil {
		c.log.Error("TLS certificate not reloaded; the previous one keeps serving", "err", err)
		return
	}
	c.log.Info("TLS certificate reloaded", "cert", c.certFile)
}

func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	stale := time.Since(c.checked) > 2*time.Second
	if stale {
		c.checked = time.Now()
	}
	cert, stamp := c.cert, c.stamp
	c.mu.Unlock()
	if stale && c.stampOf() != stamp {
		c.Reload()
		c.mu.Lock()
		cert = c.cert
		c.mu.Unlock()
	}
	return cert, nil
}

// clientTLS builds a client's TLS settings from the tls_ca_file,
// tls_cert_file and tls_key_file of the section named key (their ${VAR}s
// expanded, as for every *_file); nil when none is set. caHint says what
// the CA file must hold.
func clientTLS(key, caFile, certFile, keyFile, caHint string) (*tls.Config, error) {
	if caFile == "" && certFile == "" {
		return nil, nil
	}
	expand := func(name, file string) (string, error) {
		p, err := config.ExpandFile(file)
		if err != nil {
			return "", fmt.Errorf("%s.%s %w", key, name, err)
		}
		return p, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		name, err := expand("tls_ca_file", caFile)
		if err != nil {
			return nil, err
		}
		pem, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("%s.tls_ca_file: %w", key, err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.tls_ca_file: %s holds no PEM certificate: %s", key, caFile, caHint)
		}
	}
	if certFile != "" {
		cert, err := expand("tls_cert_file", certFile)
		if err != nil {
			return nil, err
		}
		priv, err := expand("tls_key_file", keyFile)
		if err != nil {
			return nil, err
		}
		pair, err := tls.LoadX509KeyPair(cert, priv)
		if err != nil {
			return nil, fmt.Errorf("%s.tls_cert_file / tls_key_file: %w", key, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}
