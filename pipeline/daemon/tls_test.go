package daemon

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline/config"
)

// TestTLSOffersAEADOnly: the ingest listener's TLS 1.2 takes only AEAD
// suites: a client offering only CBC/SHA-1 suites fails the handshake, one
// offering GCM or ChaCha20 succeeds, and TLS 1.3 still works.
func TestTLSOffersAEADOnly(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeRSACert(t, certFile, keyFile)
	c, err := newCertificate(certFile, keyFile, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", c.tlsConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.(*tls.Conn).Handshake()
			}()
		}
	}()
	for _, tc := range []struct {
		name   string
		max    uint16
		suites []uint16
		wantOK bool
	}{
		{"ECDHE-RSA-AES128-SHA", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}, false},
		{"ECDHE-RSA-AES256-SHA", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA}, false},
		{"AES256-SHA", tls.VersionTLS12, []uint16{tls.TLS_RSA_WITH_AES_256_CBC_SHA}, false},
		{"AES128-SHA256", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256}, false},
		{"ECDHE-RSA-AES128-GCM-SHA256", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}, true},
		{"ECDHE-RSA-CHACHA20-POLY1305", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}, true},
		{"TLS 1.3", tls.VersionTLS13, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(),
				&tls.Config{InsecureSkipVerify: true, MaxVersion: tc.max, CipherSuites: tc.suites})
			if err == nil {
				conn.Close()
			}
			if (err == nil) != tc.wantOK {
				t.Errorf("handshake offering only %s = %v, want ok %v", tc.name, err, tc.wantOK)
			}
		})
	}
}

func writeRSACert(t *testing.T, certFile, keyFile string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestClientTLSFiles: the clients' tls_*_file keys ([log] for NATS,
// [telemetry]) expand ${VAR} as every *_file does (a systemd credential),
// name a variable that is not set, and say what a CA file must hold.
func TestClientTLSFiles(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	writeRSACert(t, cert, key)
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PIPELINED_TEST_CREDS", dir)
	t.Setenv("PIPELINED_TEST_UNSET", "")
	os.Unsetenv("PIPELINED_TEST_UNSET")
	for _, tt := range []struct {
		name, ca, cert, key, err string
	}{
		{"pair through a variable", "", "${PIPELINED_TEST_CREDS}/client.pem", "${PIPELINED_TEST_CREDS}/client.key", ""},
		{"a CA file", cert, "", "", ""},
		{"unset variable", "", "${PIPELINED_TEST_UNSET}/client.pem", key, "log.tls_cert_file \"${PIPELINED_TEST_UNSET}/client.pem\": environment variable PIPELINED_TEST_UNSET is not set"},
		{"CA not PEM", notPEM, "", "", "log.tls_ca_file: " + notPEM + " holds no PEM certificate: give the CA"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tc, err := clientTLS("log", tt.ca, tt.cert, tt.key, "give the CA")
			if tt.err == "" && (err != nil || tc == nil) {
				t.Fatalf("clientTLS = %v, %v; want a config", tc, err)
			}
			if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("clientTLS = %v; want an error with %q", err, tt.err)
			}
		})
	}
	if tc, err := clientTLS("log", "", "", "", ""); tc != nil || err != nil {
		t.Errorf("clientTLS with no file = %v, %v; want nil, nil", tc, err)
	}
}

func TestNATSCredentialFiles(t *testing.T) {
	t.Setenv("PIPELINED_TEST_CREDS", "/run/credentials/pipelined.service")
	t.Setenv("PIPELINED_TEST_UNSET", "")
	os.Unsetenv("PIPELINED_TEST_UNSET")
	for _, tt := range []struct {
		name                 string
		log                  config.Log
		creds, nkey, wantErr string
	}{
		{"none", config.Log{}, "", "", ""},
		{"creds through a variable", config.Log{CredsFile: "${PIPELINED_TEST_CREDS}/nats.creds"}, "/run/credentials/pipelined.service/nats.creds", "", ""},
		{"nkey through a variable", config.Log{NKeyFile: "$PIPELINED_TEST_CREDS/nats.nk"}, "", "/run/credentials/pipelined.service/nats.nk", ""},
		{"creds, unset variable", config.Log{CredsFile: "${PIPELINED_TEST_UNSET}/nats.creds"}, "", "", `log.creds_file "${PIPELINED_TEST_UNSET}/nats.creds": environment variable PIPELINED_TEST_UNSET is not set`},
		{"nkey, unset variable", config.Log{NKeyFile: "${PIPELINED_TEST_UNSET}/nats.nk"}, "", "", `log.nkey_file "${PIPELINED_TEST_UNSET}/nats.nk": environment variable PIPELINED_TEST_UNSET is not set`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			creds, nkey, err := natsCredentials(tt.log)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("natsCredentials = %q, %q, %v; want the error %q", creds, nkey, err, tt.wantErr)
				}
				return
			}
			if err != nil || creds != tt.creds || nkey != tt.nkey {
				t.Fatalf("natsCredentials = %q, %q, %v; want %q, %q", creds, nkey, err, tt.creds, tt.nkey)
			}
		})
	}
}
