package http

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// TestSecretRotation: with secret_env = ["NEW", "OLD"] every request
// carries both signatures in one webhook-signature header, and a receiver
// holding either secret verifies it with the reference library.
func TestSecretRotation(t *testing.T) {
	newSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("the-new-secret-of-32-bytes-long!"))
	t.Setenv("TEST_HTTP_NEW", newSecret)
	t.Setenv("TEST_HTTP_OLD", testSecret)
	dir := t.TempDir()
	newFile, oldFile := filepath.Join(dir, "new"), filepath.Join(dir, "old")
	for f, v := range map[string]string{newFile: newSecret, oldFile: testSecret} {
		if err := os.WriteFile(f, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	unrelated, _ := standardwebhooks.NewWebhook("whsec_" + base64.StdEncoding.EncodeToString([]byte("another-secret-of-32-bytes-long!")))
	for name, cfg := range map[string]map[string]any{
		"secret_env":  {"secret_env": []string{"TEST_HTTP_NEW", "TEST_HTTP_OLD"}},
		"secret_file": {"secret_file": []string{newFile, oldFile}},
	} {
		t.Run(name, func(t *testing.T) {
			rc := newReceiver(t, nil)
			cfg["url"] = rc.URL
			s := newSinkLogger(discard())
			sinktest.Configure(t, s, cfg)
			sinktest.DeliverAll(t, s, []sdk.Event{sinktest.NewEvent(1)})
			reqs := rc.requests()
			if len(reqs) != 1 {
				t.Fatalf("receiver got %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if got := r.header.Values("webhook-signature"); len(got) != 1 || len(strings.Fields(got[0])) != 2 {
				t.Fatalf("webhook-signature = %q, want one header holding two space-separated signatures", got)
			}
			for secretName, secret := range map[string]string{"new": newSecret, "old": testSecret} {
				wh, err := standardwebhooks.NewWebhook(secret)
				if err != nil {
					t.Fatal(err)
				}
				if err := wh.Verify(r.body, r.header); err != nil {
					t.Errorf("receiver with the %s secret: Verify = %v, want nil", secretName, err)
				}
			}
			if err := unrelated.Verify(r.body, r.header); err == nil {
				t.Errorf("receiver with an unrelated secret: Verify = nil, want an error")
			}
		})
	}
}

// TestSecretListErrors: the list forms are checked like the single one.
func TestSecretListErrors(t *testing.T) {
	t.Setenv("TEST_HTTP_OLD", testSecret)
	tests := []struct {
		name string
		cfg  map[string]any
		want string
	}{
		{"env and file", map[string]any{"secret_env": []string{"TEST_HTTP_OLD"}, "secret_file": "/x"}, "set only one of secret_env and secret_file"},
		{"unset variable", map[string]any{"secret_env": []string{"TEST_HTTP_UNSET_NEW", "TEST_HTTP_OLD"}}, "TEST_HTTP_UNSET_NEW is not set"},
		{"empty entry", map[string]any{"secret_env": []string{"", "TEST_HTTP_OLD"}}, "entry 1 is empty"},
		{"not strings", map[string]any{"secret_env": []int{1}}, "want a string or an array of strings"},
		{"too many", map[string]any{"secret_env": []string{"A", "B", "C", "D", "E"}}, "more than 4 secrets"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg["url"] = "https://a.example/h"
			err := newSinkLogger(discard()).Configure(t.Context(), sinktest.Config(t, tt.cfg))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Configure(%v) = %v, want an error containing %q", tt.cfg, err, tt.want)
			}
		})
	}
}

// TestMutualTLS: a receiver behind a private CA that requires a client
// certificate gets the event with tls_ca_file, tls_cert_file and
// tls_key_file, and refuses (a retry, not a delivery) without them.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCA(t)
	clientCert, clientKey := issue(t, ca, caKey, "pipelined-sink-http")
	certFile, keyFile, clientCAFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key"), filepath.Join(dir, "client-ca.pem")
	writePEM(t, certFile, "CERTIFICATE", clientCert.Raw)
	keyDER, err := x509.MarshalECPrivateKey(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
	writePEM(t, clientCAFile, "CERTIFICATE", ca.Raw)

	var seenCN []string // handler calls are serial: one event at a time
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenCN = append(seenCN, r.TLS.PeerCertificates[0].Subject.CommonName)
		w.WriteHeader(http.StatusNoContent)
	}))
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(ca)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCAs}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	serverCAFile := filepath.Join(dir, "server-ca.pem")
	writePEM(t, serverCAFile, "CERTIFICATE", srv.Certificate().Raw)

	tests := []struct {
		name      string
		cfg       map[string]any
		delivered bool
		errWant   string
	}{
		{"ca and client cert", map[string]any{"tls_ca_file": serverCAFile, "tls_cert_file": certFile, "tls_key_file": keyFile}, true, ""},
		// Refusals by the server: under TLS 1.3 the server checks the
		// client's certificate after the client's side of the handshake is
		// done, so the client sees the alert or, as often, a broken pipe
		// while it writes the request. Either way nothing is delivered, and
		// the receiver saw no request (seenCN, below).
		{"no client cert", map[string]any{"tls_ca_file": serverCAFile}, false, ""},
		{"no ca", map[string]any{"tls_cert_file": certFile, "tls_key_file": keyFile}, false, "certificate"},
		{"client cert from another CA", map[string]any{"tls_ca_file": clientCAFile, "tls_cert_file": certFile, "tls_key_file": keyFile}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg["url"] = srv.URL + "/hook"
			tt.cfg["timeout"] = "5s"
			s := newSinkLogger(discard())
			sinktest.Configure(t, s, tt.cfg)
			r := deliverOne(t, s, sinktest.NewEvent(1))
			if got := r.IsDelivered(); got != tt.delivered {
				t.Fatalf("delivered = %v (%v), want %v", got, r, tt.delivered)
			}
			if !tt.delivered && !strings.Contains(r.String(), tt.errWant) {
				t.Errorf("result = %v, want it to mention %q", r, tt.errWant)
			}
		})
	}
	if len(seenCN) != 1 || seenCN[0] != "pipelined-sink-http" {
		t.Errorf("receiver saw client certificates %q, want one from pipelined-sink-http", seenCN)
	}
}

// TestTLSConfigErrors: the tls_* keys are checked at Configure.
func TestTLSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  map[string]any
		want string
	}{
		{"cert without key", map[string]any{"tls_cert_file": notPEM}, `set both "tls_cert_file" and "tls_key_file"`},
		{"missing ca file", map[string]any{"tls_ca_file": filepath.Join(dir, "nope.pem")}, `config key "tls_ca_file"`},
		{"ca not PEM", map[string]any{"tls_ca_file": notPEM}, "holds no PEM certificate"},
		{"bad key pair", map[string]any{"tls_cert_file": notPEM, "tls_key_file": notPEM}, `"tls_cert_file" / "tls_key_file"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg["url"] = "https://a.example/h"
			err := newSinkLogger(discard()).Configure(t.Context(), sinktest.Config(t, tt.cfg))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Configure(%v) = %v, want an error containing %q", tt.cfg, err, tt.want)
			}
		})
	}
}

func newCA(t testing.TB) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test client CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func issue(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
