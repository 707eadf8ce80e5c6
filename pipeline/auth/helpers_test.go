package auth

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The helpers in this file compute signatures with crypto/hmac directly
// from the documented formats, independently of the package under test.

var (
	now    = time.Unix(1700000000, 0)
	nowTS  = "1700000000"
	body   = []byte(`{"event":"call_ended","data":{"callSid":"CA123"}}`)
	swKey1 = []byte("first-standard-webhooks-key-32b!")
	swKey2 = []byte("second-standard-webhooks-key-32!")
	swKey3 = []byte("a-removed-standard-webhooks-key!")
	// swSecretN are the secrets as a sender shows them: "whsec_" + base64.
	swSecret1 = "whsec_" + base64.StdEncoding.EncodeToString(swKey1)
	swSecret2 = "whsec_" + base64.StdEncoding.EncodeToString(swKey2)
	hmacKey1  = []byte("hmac-secret-number-one")
	hmacKey2  = []byte("hmac-secret-number-two")
	hmacKey3  = []byte("hmac-secret-removed")
)

func mac(newHash func() hash.Hash, key []byte, parts ...string) []byte {
	m := hmac.New(newHash, key)
	for _, p := range parts {
		m.Write([]byte(p))
	}
	return m.Sum(nil)
}

// swSig is a Standard Webhooks signature: v1,base64(HMAC-SHA256(key, id.ts.body)).
func swSig(key []byte, id, ts string, b []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(mac(sha256.New, key, id, ".", ts, ".", string(b)))
}

// stripeSig is the hex HMAC-SHA256 of "<ts>.<body>".
func stripeSig(key []byte, ts string, b []byte) string {
	return hex.EncodeToString(mac(sha256.New, key, ts, ".", string(b)))
}

// hdr builds a header from name, value pairs (names canonicalised by Add).
func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func swHeader(key []byte, id, ts string, b []byte) http.Header {
	return hdr("webhook-id", id, "webhook-timestamp", ts, "webhook-signature", swSig(key, id, ts, b))
}

func unix(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }

func basicAuth(userpass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(userpass))
}

func callKaro(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile("testdata/call_ended.json")
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// vcase is one request against one Spec; want is the expected Reason, or
// "" when the request must be accepted.
type vcase struct {
	name string
	spec Spec
	h    http.Header
	body []byte
	now  time.Time
	want string
}

func runCases(t *testing.T, cases []vcase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, err := New(c.spec)
			if err != nil {
				t.Fatalf("New(%s spec) = %v", c.spec.Type, err)
			}
			err = v.Verify(c.h, c.body, c.now)
			got := reasonOf(t, err)
			if got != c.want {
				t.Errorf("Verify() reason = %q, want %q", got, c.want)
			}
			if err != nil {
				assertNoLeak(t, got, c)
			}
		})
	}
}

// reasonOf returns "" for nil and the Reason of an *Error; anything else
// fails the test.
func reasonOf(t testing.TB, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("Verify() = %T %v, want nil or *Error", err, err)
	}
	if ae.Reason == "" || strings.ContainsAny(ae.Reason, "\r\n") {
		t.Fatalf("Verify() reason = %q, want one non-empty line", ae.Reason)
	}
	return ae.Reason
}

// forbidden lists what a reason must never contain for case c: every
// secret (as given and decoded), every header value the sender sent (the
// received signature or credentials) and every MAC that a secret computes
// over the body in each scheme's signed-content format and encoding.
func forbidden(c vcase) []string {
	var keys [][]byte
	for _, s := range c.spec.Secrets {
		keys = append(keys, s)
		if k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(string(s), "whsec_")); err == nil && len(k) > 0 {
			keys = append(keys, k)
		}
	}
	var out []string
	for _, k := range keys {
		out = append(out, string(k))
	}
	for _, vs := range c.h {
		for _, v := range vs {
			if len(v) >= 8 { // short values ("v1,", "t=1") are words of a reason
				out = append(out, v)
			}
		}
	}
	id, ts := c.h.Get("webhook-id"), c.h.Get("webhook-timestamp")
	for _, k := range keys {
		for _, nh := range []func() hash.Hash{sha1.New, sha256.New, sha512.New} {
			for _, msg := range [][]string{{string(c.body)}, {id, ".", ts, ".", string(c.body)}, {nowTS, ".", string(c.body)}} {
				m := mac(nh, k, msg...)
				out = append(out, hex.EncodeToString(m), base64.StdEncoding.EncodeToString(m))
			}
		}
	}
	return out
}

func assertNoLeak(t testing.TB, reason string, c vcase) {
	t.Helper()
	for _, f := range forbidden(c) {
		if f != "" && strings.Contains(reason, f) {
			t.Errorf("reason %q contains a secret, a MAC or a received value (%d bytes)", reason, len(f))
		}
	}
}

// urlParseQuery is url.ParseQuery, the reference for what a query holds.
func urlParseQuery(q string) (url.Values, error) { return url.ParseQuery(q) }
