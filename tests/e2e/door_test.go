package e2e

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
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// doorConfig is a source signed with Standard Webhooks, with a rate limit,
// HTTPS when certFile is set, and a short header timeout.
func doorConfig(dir, certFile, keyFile string) string {
	tlsKeys := ""
	if certFile != "" {
		tlsKeys = fmt.Sprintf("tls_cert_file = %q\ntls_key_file = %q\n", certFile, keyFile)
	}
	return fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
read_header_timeout = "1s"
%s
[admin]
listen = "127.0.0.1:0"
[log]
dir = %q

[[source]]
name = "signed"
path = "/hooks/signed"
auth = { type = "standard-webhooks", secret_env = ["PIPELINED_E2E_NEW_SECRET", "PIPELINED_E2E_OLD_SECRET"] }

[[sink]]
name = "archive"
plugin = "archive"
config = { dir = %q }

[[route]]
name = "all"
when = 'true'
to = ["archive"]
`, tlsKeys, filepath.Join(dir, "log"), filepath.Join(dir, "archive"))
}

const (
	newSecret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
	oldSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
)

// signedPost posts body signed by the reference library with secret and
// returns the status and the answer's error, or "duplicate" for an answer
// duplicate=true.
func signedPost(t *testing.T, c *http.Client, url, secret, id string, body []byte) (int, string) {
	t.Helper()
	h, err := harness.SignedHeader(secret, id, body)
	if err != nil {
		t.Fatal(err)
	}
	code, ans, err := harness.PostWith(c, url, "application/json", h, body)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	if ans["duplicate"] == true {
		return code, "duplicate"
	}
	msg, _ := ans["error"].(string)
	return code, msg
}

func TestServeVerifiesSignaturesAndLeaksNoSecret(t *testing.T) {
	t.Setenv("PIPELINED_E2E_NEW_SECRET", newSecret)
	t.Setenv("PIPELINED_E2E_OLD_SECRET", oldSecret)
	dir := t.TempDir()
	d := harness.Start(t, harness.WriteConfig(t, dir, doorConfig(dir, "", "")))
	url := d.URL + "/hooks/signed"
	body := harness.CallEvent("door-1", "interested")

	if code, ans := signedPost(t, harness.Client, url, newSecret, "msg_1", body); code != 200 {
		t.Fatalf("POST signed by the reference library with the new secret = %d %s, want 200", code, ans)
	}
	if code, ans := signedPost(t, harness.Client, url, oldSecret, "msg_2", harness.CallEvent("door-2", "x")); code != 200 {
		t.Fatalf("POST signed with the old (rotated) secret = %d %s, want 200", code, ans)
	}
	code, ans := signedPost(t, harness.Client, url, oldSecret, "msg_1", body)
	if code != 200 || ans != "duplicate" {
		t.Errorf("same webhook-id again = %d %s, want 200 duplicate (webhook-id is the dedup key)", code, ans)
	}
	const stranger = "whsec_c3RyYW5nZXJzLXNlY3JldC1rZXktMTIzNDU2"
	if code, ans := signedPost(t, harness.Client, url, stranger, "msg_3", body); code != 401 || !strings.Contains(ans, "signature mismatch") {
		t.Errorf("POST signed with another secret = %d %s, want 401 signature mismatch", code, ans)
	}
	if code, _, _ := harness.Post(url, body); code != 401 {
		t.Errorf("unsigned POST = %d, want 401", code)
	}

	// A config error that involves the secrets: check must not print them.
	bad := harness.WriteConfig(t, t.TempDir(), strings.Replace(doorConfig(dir, "", ""), `type = "standard-webhooks"`, `type = "standard-webhooks", preset = "github"`, 1))
	out, _ := exec.Command(harness.Bin(t, "pipelined"), "check", "--no-plugins", "-c", bad).CombinedOutput()
	if !strings.Contains(string(out), "preset") {
		t.Errorf("check of a config with a preset on standard-webhooks said %q, want it to name the problem", out)
	}
	d.Kill(syscall.SIGTERM)
	logs := d.Log() + string(out)
	for _, secret := range []string{newSecret, oldSecret, stranger, strings.TrimPrefix(newSecret, "whsec_"), strings.TrimPrefix(oldSecret, "whsec_")} {
		if strings.Contains(logs, secret) {
			t.Errorf("a secret (%.10s…) appears in the daemon's log or check's output", secret)
		}
	}
	d.WaitLog(t, "signature mismatch", 1, 5*time.Second) // the refused request, with its reason; the pipe may lag the answer
}

// selfSigned writes a certificate and key for 127.0.0.1 under dir.
func selfSigned(t *testing.T, dir, name string) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	// Write to temporary names and rename, as a certificate manager does.
	for f, block := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "EC PRIVATE KEY", Bytes: kb}} {
		if err := os.WriteFile(f+".tmp", pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f+".tmp", f); err != nil {
			t.Fatal(err)
		}
	}
	cert, _ = x509.ParseCertificate(der)
	return certFile, keyFile, cert
}

func TestServeHTTPS(t *testing.T) {
	t.Setenv("PIPELINED_E2E_NEW_SECRET", newSecret)
	t.Setenv("PIPELINED_E2E_OLD_SECRET", oldSecret)
	dir := t.TempDir()
	certFile, keyFile, first := selfSigned(t, dir, "first")
	d := harness.Start(t, harness.WriteConfig(t, dir, doorConfig(dir, certFile, keyFile)))
	url := strings.Replace(d.URL, "http://", "https://", 1) + "/hooks/signed"

	trusting := func(c *x509.Certificate, maxVersion uint16) *http.Client {
		pool := x509.NewCertPool()
		pool.AddCert(c)
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MaxVersion: maxVersion},
		}}
	}
	if code, ans := signedPost(t, trusting(first, 0), url, newSecret, "tls_1", harness.CallEvent("tls-1", "x")); code != 200 {
		t.Fatalf("POST over HTTPS = %d %s, want 200", code, ans)
	}
	if _, err := trusting(first, tls.VersionTLS11).Get(url); err == nil {
		t.Errorf("a TLS 1.1 client got through; want TLS 1.2 at least")
	}
	// A renewed certificate is picked up without a restart.
	_, _, second := selfSigned(t, dir, "second")
	harness.Eventually(t, 10*time.Second, func() error {
		resp, err := trusting(second, 0).Get(url)
		if err != nil {
			return fmt.Errorf("the renewed certificate is not served: %w", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			return fmt.Errorf("GET %s with the renewed certificate = %d, want 405", url, resp.StatusCode)
		}
		return nil // the handshake verified against the new certificate
	})
}

func TestServeCutsOffSlowClients(t *testing.T) {
	t.Setenv("PIPELINED_E2E_NEW_SECRET", newSecret)
	t.Setenv("PIPELINED_E2E_OLD_SECRET", oldSecret)
	dir := t.TempDir()
	d := harness.Start(t, harness.WriteConfig(t, dir, doorConfig(dir, "", "")))
	conn, err := net.Dial("tcp", strings.TrimPrefix(d.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	req := "POST /hooks/signed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	var werr error
	for i := 0; i < len(req) && werr == nil; i++ {
		_, werr = conn.Write([]byte{req[i]})
		time.Sleep(250 * time.Millisecond) // four bytes a second: headers never finish in time
		if time.Since(start) > 10*time.Second {
			break
		}
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, rerr := conn.Read(make([]byte, 1024))
	if werr == nil && rerr == nil {
		t.Fatalf("a client sending headers at 4 bytes/s was still served after %v", time.Since(start))
	}
	if took := time.Since(start); took > 6*time.Second {
		t.Errorf("a slow client held its connection for %v; read_header_timeout is 1s", took)
	}
}
