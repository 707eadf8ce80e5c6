package auth

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

func swSpec(secrets ...string) Spec {
	s := Spec{Type: TypeStandardWebhooks}
	for _, x := range secrets {
		s.Secrets = append(s.Secrets, []byte(x))
	}
	return s
}

func swCases() []vcase {
	one := swSpec(swSecret1)
	rotated := swSpec(swSecret2, swSecret1) // new secret first, old still accepted
	removed := swSpec(swSecret2)            // old secret removed
	const id = "msg_2Yd8x"
	good := swHeader(swKey1, id, nowTS, body)
	at := func(d time.Duration) http.Header { return swHeader(swKey1, id, unix(now.Add(d)), body) }
	with := func(name, value string) http.Header {
		h := good.Clone()
		h.Set(name, value)
		return h
	}
	without := func(name string) http.Header {
		h := good.Clone()
		h.Del(name)
		return h
	}
	bad1 := "v1," + base64.StdEncoding.EncodeToString(make([]byte, 32))
	tol10 := swSpec(swSecret1)
	tol10.Tolerance = 10 * time.Minute
	tol1s := swSpec(swSecret1)
	tol1s.Tolerance = time.Second
	return []vcase{
		{"valid", one, good, body, now, ""},
		{"valid, secret without whsec_ prefix", swSpec(base64.StdEncoding.EncodeToString(swKey1)), good, body, now, ""},
		{"valid, empty body", one, swHeader(swKey1, id, nowTS, nil), nil, now, ""},
		{"tampered body", one, good, []byte(`{"event":"call_ended","data":{"callSid":"CA124"}}`), now, "signature mismatch"},
		{"tampered id", one, with("webhook-id", "msg_other"), body, now, "signature mismatch"},
		{"tampered timestamp", one, with("webhook-timestamp", unix(now.Add(-time.Second))), body, now, "signature mismatch"},
		{"wrong secret", one, swHeader(swKey2, id, nowTS, body), body, now, "signature mismatch"},
		{"rotation: new secret accepted", rotated, swHeader(swKey2, id, nowTS, body), body, now, ""},
		{"rotation: old secret still accepted", rotated, good, body, now, ""},
		{"rotation: removed secret refused", removed, good, body, now, "signature mismatch"},
		{"rotation: unknown third secret refused", rotated, swHeader(swKey3, id, nowTS, body), body, now, "signature mismatch"},
		{"old, just inside tolerance", one, at(-5 * time.Minute), body, now, ""},
		{"old, just outside tolerance", one, at(-5*time.Minute - time.Second), body, now, "timestamp too old"},
		{"future, just inside tolerance", one, at(5 * time.Minute), body, now, ""},
		{"future, just outside tolerance", one, at(5*time.Minute + time.Second), body, now, "timestamp too far in the future"},
		{"tolerance 10m, old 9m59s", tol10, at(-10*time.Minute + time.Second), body, now, ""},
		{"tolerance 10m, old 10m1s", tol10, at(-10*time.Minute - time.Second), body, now, "timestamp too old"},
		{"tolerance 10m, future 10m", tol10, at(10 * time.Minute), body, now, ""},
		{"tolerance 10m, future 10m1s", tol10, at(10*time.Minute + time.Second), body, now, "timestamp too far in the future"},
		{"tolerance 1s, old 2s", tol1s, at(-2 * time.Second), body, now, "timestamp too old"},
		{"timestamp zero", one, swHeader(swKey1, id, "0", body), body, now, "timestamp too old"},
		{"timestamp max int64", one, swHeader(swKey1, id, "9223372036854775807", body), body, now, "timestamp too far in the future"},
		{"missing webhook-id", one, without("webhook-id"), body, now, "missing webhook-id header"},
		{"missing webhook-timestamp", one, without("webhook-timestamp"), body, now, "missing webhook-timestamp header"},
		{"missing webhook-signature", one, without("webhook-signature"), body, now, "missing webhook-signature header"},
		{"empty webhook-signature", one, with("webhook-signature", ""), body, now, "missing webhook-signature header"},
		{"no headers", one, hdr(), body, now, "missing webhook-id header"},
		{"repeated webhook-signature", one, func() http.Header { h := good.Clone(); h.Add("webhook-signature", bad1); return h }(), body, now, "multiple webhook-signature headers"},
		{"timestamp not a number", one, with("webhook-timestamp", "yesterday"), body, now, "malformed webhook-timestamp header"},
		{"timestamp negative", one, with("webhook-timestamp", "-1"), body, now, "malformed webhook-timestamp header"},
		{"timestamp with plus sign", one, with("webhook-timestamp", "+"+nowTS), body, now, "malformed webhook-timestamp header"},
		{"timestamp with leading zero", one, with("webhook-timestamp", "0"+nowTS), body, now, "malformed webhook-timestamp header"},
		{"timestamp in milliseconds overflowing", one, with("webhook-timestamp", "99999999999999999999"), body, now, "malformed webhook-timestamp header"},
		{"timestamp fractional", one, with("webhook-timestamp", nowTS+".5"), body, now, "malformed webhook-timestamp header"},
		{"timestamp with space", one, with("webhook-timestamp", nowTS+" 1"), body, now, "malformed webhook-timestamp header"},
		{"signature without version", one, with("webhook-signature", strings.TrimPrefix(good.Get("webhook-signature"), "v1,")), body, now, "no v1 signature in webhook-signature header"},
		{"signature only unknown versions", one, with("webhook-signature", "v2,"+strings.TrimPrefix(good.Get("webhook-signature"), "v1,")+" v1a,xyz"), body, now, "no v1 signature in webhook-signature header"},
		{"signature v1 empty", one, with("webhook-signature", "v1,"), body, now, "signature mismatch"},
		{"signature v1 not base64", one, with("webhook-signature", "v1,!!!not-base64!!!"), body, now, "signature mismatch"},
		{"signature v1 in upper case version", one, with("webhook-signature", "V1,"+strings.TrimPrefix(good.Get("webhook-signature"), "v1,")), body, now, "no v1 signature in webhook-signature header"},
		{"multiple: one valid among invalid and unknown versions", one, with("webhook-signature", strings.Join([]string{bad1, "v2," + strings.TrimPrefix(good.Get("webhook-signature"), "v1,"), good.Get("webhook-signature"), "v1a,abc", bad1}, " ")), body, now, ""},
		{"multiple: valid one last, doubled spaces", one, with("webhook-signature", bad1+"  "+good.Get("webhook-signature")), body, now, ""},
		{"multiple: all invalid", one, with("webhook-signature", bad1+" "+swSig(swKey2, id, nowTS, body)+" v2,xyz"), body, now, "signature mismatch"},
		{"multiple: valid only under unknown version", one, with("webhook-signature", "v0,"+strings.TrimPrefix(good.Get("webhook-signature"), "v1,")+" "+bad1), body, now, "signature mismatch"},
	}
}

func TestStandardWebhooks(t *testing.T) { runCases(t, swCases()) }

func TestStandardWebhooksCallKaro(t *testing.T) {
	b := callKaro(t)
	runCases(t, []vcase{
		{"valid", swSpec(swSecret1), swHeader(swKey1, "msg_1", nowTS, b), b, now, ""},
		{"one byte changed", swSpec(swSecret1), swHeader(swKey1, "msg_1", nowTS, b), append([]byte(" "), b[1:]...), now, "signature mismatch"},
	})
}

// TestStandardWebhooksReferenceLibrarySigns: what the reference library
// signs, Verify accepts, with every secret of a rotation.
func TestStandardWebhooksReferenceLibrarySigns(t *testing.T) {
	v, err := New(swSpec(swSecret1, swSecret2))
	if err != nil {
		t.Fatal(err)
	}
	b := callKaro(t)
	for _, secret := range []string{swSecret1, swSecret2} {
		for _, ts := range []time.Time{now, now.Add(-4 * time.Minute), now.Add(4 * time.Minute)} {
			wh, err := standardwebhooks.NewWebhook(secret)
			if err != nil {
				t.Fatal(err)
			}
			sig, err := wh.Sign("msg_lib", ts, b)
			if err != nil {
				t.Fatal(err)
			}
			h := hdr("webhook-id", "msg_lib", "webhook-timestamp", unix(ts), "webhook-signature", sig)
			if err := v.Verify(h, b, now); err != nil {
				t.Errorf("Verify(library-signed at %v) = %v, want nil", ts.Sub(now), err)
			}
			// And the independent helper agrees with the library.
			if want := swSig(swKey(t, secret), "msg_lib", unix(ts), b); sig != want {
				t.Errorf("library Sign = %q, independent HMAC = %q", sig, want)
			}
		}
	}
}

func swKey(t *testing.T, secret string) []byte {
	k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestStandardWebhooksLibraryVector uses the test vector of the reference
// library's webhook_test.go (TestWebhookSign), and the tampered signature of
// its Python tests.
func TestStandardWebhooksLibraryVector(t *testing.T) {
	const (
		secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		id     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
		ts     = "1614265330"
		sig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	)
	payload := []byte(`{"test": 2432232314}`)
	at := time.Unix(1614265330, 0)
	if got := swSig(swKey(t, secret), id, ts, payload); got != sig {
		t.Fatalf("independent HMAC of the vector = %q, want %q", got, sig)
	}
	runCases(t, []vcase{
		{"vector", swSpec(secret), hdr("webhook-id", id, "webhook-timestamp", ts, "webhook-signature", sig), payload, at, ""},
		{"vector, last base64 digit changed", swSpec(secret), hdr("webhook-id", id, "webhook-timestamp", ts, "webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="), payload, at, "signature mismatch"},
		{"vector, now one hour later", swSpec(secret), hdr("webhook-id", id, "webhook-timestamp", ts, "webhook-signature", sig), payload, at.Add(time.Hour), "timestamp too old"},
	})
}

func hmacCases() []vcase {
	gen := Spec{Type: TypeHMAC, Header: "X-Signature", Secrets: [][]byte{hmacKey1}}
	rotated := gen
	rotated.Secrets = [][]byte{hmacKey2, hmacKey1}
	removed := gen
	removed.Secrets = [][]byte{hmacKey2}
	sha1b64 := Spec{Type: TypeHMAC, Header: "X-Body-Sig", Algorithm: "sha1", Encoding: "base64", Secrets: [][]byte{hmacKey1}}
	sha512p := Spec{Type: TypeHMAC, Header: "X-Sig", Algorithm: "sha512", Prefix: "sha512=", Secrets: [][]byte{hmacKey1}}
	good := hex.EncodeToString(mac(sha256.New, hmacKey1, string(body)))
	return []vcase{
		{"sha256 hex: valid", gen, hdr("X-Signature", good), body, now, ""},
		{"sha256 hex: upper-case hex accepted", gen, hdr("X-Signature", strings.ToUpper(good)), body, now, ""},
		{"sha256 hex: lower-case header name on the wire", gen, hdr("x-signature", good), body, now, ""},
		{"sha256 hex: tampered body", gen, hdr("X-Signature", good), []byte(`{}`), now, "signature mismatch"},
		{"sha256 hex: wrong secret", gen, hdr("X-Signature", hex.EncodeToString(mac(sha256.New, hmacKey2, string(body)))), body, now, "signature mismatch"},
		{"sha256 hex: sha1 MAC sent", gen, hdr("X-Signature", hex.EncodeToString(mac(sha1.New, hmacKey1, string(body)))), body, now, "malformed X-Signature header: want a 64-digit hex HMAC-SHA256"},
		{"sha256 hex: missing header", gen, hdr("X-Other", good), body, now, "missing X-Signature header"},
		{"sha256 hex: repeated header", gen, hdr("X-Signature", good, "X-Signature", good), body, now, "multiple X-Signature headers"},
		{"sha256 hex: not hex", gen, hdr("X-Signature", strings.Repeat("zz", 32)), body, now, "malformed X-Signature header: want a 64-digit hex HMAC-SHA256"},
		{"sha256 hex: odd length", gen, hdr("X-Signature", good[1:]), body, now, "malformed X-Signature header: want a 64-digit hex HMAC-SHA256"},
		{"sha256 hex: unexpected prefix", gen, hdr("X-Signature", "sha256="+good), body, now, "malformed X-Signature header: want a 64-digit hex HMAC-SHA256"},
		{"sha256 hex: two signatures in one header", gen, hdr("X-Signature", good+","+good), body, now, "malformed X-Signature header: want a 64-digit hex HMAC-SHA256"},
		{"rotation: old secret still accepted", rotated, hdr("X-Signature", good), body, now, ""},
		{"rotation: new secret accepted", rotated, hdr("X-Signature", hex.EncodeToString(mac(sha256.New, hmacKey2, string(body)))), body, now, ""},
		{"rotation: removed secret refused", removed, hdr("X-Signature", good), body, now, "signature mismatch"},
		{"sha1 base64: valid", sha1b64, hdr("X-Body-Sig", base64.StdEncoding.EncodeToString(mac(sha1.New, hmacKey1, string(body)))), body, now, ""},
		{"sha1 base64: hex sent", sha1b64, hdr("X-Body-Sig", hex.EncodeToString(mac(sha1.New, hmacKey1, string(body)))), body, now, "malformed X-Body-Sig header: want a base64 HMAC-SHA1"},
		{"sha1 base64: unpadded", sha1b64, hdr("X-Body-Sig", base64.RawStdEncoding.EncodeToString(mac(sha1.New, hmacKey1, string(body)))), body, now, "malformed X-Body-Sig header: want a base64 HMAC-SHA1"},
		{"sha1 base64: tampered body", sha1b64, hdr("X-Body-Sig", base64.StdEncoding.EncodeToString(mac(sha1.New, hmacKey1, string(body)))), []byte("x"), now, "signature mismatch"},
		{"sha512 prefix: valid", sha512p, hdr("X-Sig", "sha512="+hex.EncodeToString(mac(sha512.New, hmacKey1, string(body)))), body, now, ""},
		{"sha512 prefix: prefix missing", sha512p, hdr("X-Sig", hex.EncodeToString(mac(sha512.New, hmacKey1, string(body)))), body, now, `malformed X-Sig header: want "sha512=" followed by a 128-digit hex HMAC-SHA512`},
		{"sha512 prefix: wrong secret", sha512p, hdr("X-Sig", "sha512="+hex.EncodeToString(mac(sha512.New, hmacKey2, string(body)))), body, now, "signature mismatch"},
	}
}

func TestHMAC(t *testing.T) { runCases(t, hmacCases()) }

func githubCases() []vcase {
	gh := Spec{Type: TypeHMAC, Preset: "github", Secrets: [][]byte{hmacKey1}}
	rotated := Spec{Type: TypeHMAC, Preset: "github", Secrets: [][]byte{hmacKey2, hmacKey1}}
	// GitHub's documented example ("Validating webhook deliveries").
	doc := Spec{Type: TypeHMAC, Preset: "github", Secrets: [][]byte{[]byte("It's a Secret to Everybody")}}
	const docSig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	good := "sha256=" + hex.EncodeToString(mac(sha256.New, hmacKey1, string(body)))
	return []vcase{
		{"documented example", doc, hdr("X-Hub-Signature-256", docSig), []byte("Hello, World!"), now, ""},
		{"documented example, tampered body", doc, hdr("X-Hub-Signature-256", docSig), []byte("Hello, World?"), now, "signature mismatch"},
		{"valid", gh, hdr("X-Hub-Signature-256", good), body, now, ""},
		{"tampered body", gh, hdr("X-Hub-Signature-256", good), append([]byte{}, body[:len(body)-1]...), now, "signature mismatch"},
		{"wrong secret", gh, hdr("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac(sha256.New, hmacKey3, string(body)))), body, now, "signature mismatch"},
		{"rotation: old secret still accepted", rotated, hdr("X-Hub-Signature-256", good), body, now, ""},
		{"only the legacy sha1 header", gh, hdr("X-Hub-Signature", "sha1="+hex.EncodeToString(mac(sha1.New, hmacKey1, string(body)))), body, now, "missing X-Hub-Signature-256 header"},
		{"prefix missing", gh, hdr("X-Hub-Signature-256", strings.TrimPrefix(good, "sha256=")), body, now, `malformed X-Hub-Signature-256 header: want "sha256=" followed by a 64-digit hex HMAC-SHA256`},
		{"sha1 prefix", gh, hdr("X-Hub-Signature-256", "sha1="+strings.TrimPrefix(good, "sha256=")), body, now, `malformed X-Hub-Signature-256 header: want "sha256=" followed by a 64-digit hex HMAC-SHA256`},
		{"truncated", gh, hdr("X-Hub-Signature-256", good[:len(good)-2]), body, now, `malformed X-Hub-Signature-256 header: want "sha256=" followed by a 64-digit hex HMAC-SHA256`},
	}
}

func TestGitHub(t *testing.T) { runCases(t, githubCases()) }

func stripeCases() []vcase {
	st := Spec{Type: TypeHMAC, Preset: "stripe", Secrets: [][]byte{hmacKey1}}
	rotated := Spec{Type: TypeHMAC, Preset: "stripe", Secrets: [][]byte{hmacKey2, hmacKey1}}
	removed := Spec{Type: TypeHMAC, Preset: "stripe", Secrets: [][]byte{hmacKey2}}
	tol := Spec{Type: TypeHMAC, Preset: "stripe", Secrets: [][]byte{hmacKey1}, Tolerance: time.Minute}
	sig := stripeSig(hmacKey1, nowTS, body)
	bad := strings.Repeat("ab", 32)
	s := func(v string) http.Header { return hdr("Stripe-Signature", v) }
	at := func(d time.Duration) http.Header {
		ts := unix(now.Add(d))
		return s("t=" + ts + ",v1=" + stripeSig(hmacKey1, ts, body))
	}
	return []vcase{
		{"valid", st, s("t=" + nowTS + ",v1=" + sig), body, now, ""},
		{"valid, v1 before t", st, s("v1=" + sig + ",t=" + nowTS), body, now, ""},
		{"valid, with a v0 test-mode signature", st, s("t=" + nowTS + ",v1=" + sig + ",v0=" + bad), body, now, ""},
		{"tampered body", st, s("t=" + nowTS + ",v1=" + sig), []byte(`{"x":1}`), now, "signature mismatch"},
		{"tampered timestamp", st, s("t=" + unix(now.Add(time.Second)) + ",v1=" + sig), body, now, "signature mismatch"},
		{"wrong secret", st, s("t=" + nowTS + ",v1=" + stripeSig(hmacKey3, nowTS, body)), body, now, "signature mismatch"},
		{"rotation: old secret still accepted", rotated, s("t=" + nowTS + ",v1=" + sig), body, now, ""},
		{"rotation: removed secret refused", removed, s("t=" + nowTS + ",v1=" + sig), body, now, "signature mismatch"},
		{"multiple: one valid among invalid", st, s("t=" + nowTS + ",v1=" + bad + ",v1=nothex,v1=" + sig + ",v1=" + bad), body, now, ""},
		{"multiple: all invalid", st, s("t=" + nowTS + ",v1=" + bad + ",v1=" + stripeSig(hmacKey2, nowTS, body)), body, now, "signature mismatch"},
		{"valid only as v0", st, s("t=" + nowTS + ",v0=" + sig), body, now, "no v1 signature in Stripe-Signature header"},
		{"old, just inside tolerance", st, at(-5 * time.Minute), body, now, ""},
		{"old, just outside tolerance", st, at(-5*time.Minute - time.Second), body, now, "timestamp too old"},
		{"future, just inside tolerance", st, at(5 * time.Minute), body, now, ""},
		{"future, just outside tolerance", st, at(5*time.Minute + time.Second), body, now, "timestamp too far in the future"},
		{"tolerance 1m, old 61s", tol, at(-61 * time.Second), body, now, "timestamp too old"},
		{"tolerance 1m, future 60s", tol, at(time.Minute), body, now, ""},
		{"missing header", st, hdr("X-Hub-Signature-256", "sha256="+sig), body, now, "missing Stripe-Signature header"},
		{"repeated header", st, hdr("Stripe-Signature", "t="+nowTS+",v1="+sig, "Stripe-Signature", "t="+nowTS+",v1="+bad), body, now, "multiple Stripe-Signature headers"},
		{"missing t", st, s("v1=" + sig), body, now, "missing timestamp (t=) in Stripe-Signature header"},
		{"missing v1", st, s("t=" + nowTS), body, now, "no v1 signature in Stripe-Signature header"},
		{"two t", st, s("t=" + nowTS + ",t=" + nowTS + ",v1=" + sig), body, now, "malformed Stripe-Signature header: more than one t"},
		{"t not a number", st, s("t=now,v1=" + sig), body, now, "malformed timestamp (t=) in Stripe-Signature header"},
		{"t empty", st, s("t=,v1=" + sig), body, now, "malformed timestamp (t=) in Stripe-Signature header"},
		{"item without =", st, s("t=" + nowTS + "," + sig), body, now, "malformed Stripe-Signature header: want t=<unix>,v1=<hex>"},
		{"trailing comma", st, s("t=" + nowTS + ",v1=" + sig + ","), body, now, "malformed Stripe-Signature header: want t=<unix>,v1=<hex>"},
		{"GitHub-style value", st, s("sha256=" + sig), body, now, "missing timestamp (t=) in Stripe-Signature header"},
	}
}

func TestStripe(t *testing.T) { runCases(t, stripeCases()) }

func credCases() []vcase {
	bearer := Spec{Type: TypeBearer, Secrets: [][]byte{[]byte("tok-new-0123456789"), []byte("tok-old-abcdef")}}
	bearerRemoved := Spec{Type: TypeBearer, Secrets: [][]byte{[]byte("tok-new-0123456789")}}
	basic := Spec{Type: TypeBasic, Secrets: [][]byte{[]byte("callkaro:n3w-pa55word"), []byte("callkaro:old-password")}}
	basicRemoved := Spec{Type: TypeBasic, Secrets: [][]byte{[]byte("callkaro:n3w-pa55word")}}
	a := func(v string) http.Header { return hdr("Authorization", v) }
	return []vcase{
		{"bearer: valid", bearer, a("Bearer tok-new-0123456789"), body, now, ""},
		{"bearer: scheme in lower case, extra spaces", bearer, a("bearer   tok-new-0123456789"), body, now, ""},
		{"bearer: rotation, old token still accepted", bearer, a("Bearer tok-old-abcdef"), body, now, ""},
		{"bearer: rotation, removed token refused", bearerRemoved, a("Bearer tok-old-abcdef"), body, now, "invalid bearer token"},
		{"bearer: wrong token", bearer, a("Bearer tok-new-012345678"), body, now, "invalid bearer token"},
		{"bearer: token with a suffix", bearer, a("Bearer tok-new-0123456789x"), body, now, "invalid bearer token"},
		{"bearer: token and trailing word", bearer, a("Bearer tok-new-0123456789 extra"), body, now, "invalid bearer token"},
		{"bearer: missing header", bearer, hdr("X-Token", "tok-new-0123456789"), body, now, "missing Authorization header"},
		{"bearer: two headers", bearer, hdr("Authorization", "Bearer tok-new-0123456789", "Authorization", "Bearer x"), body, now, "multiple Authorization headers"},
		{"bearer: no scheme", bearer, a("tok-new-0123456789"), body, now, "Authorization header must use the Bearer scheme"},
		{"bearer: Basic sent", bearer, a(basicAuth("tok-new-0123456789:")), body, now, "Authorization header must use the Bearer scheme"},
		{"bearer: empty token", bearer, a("Bearer "), body, now, "empty bearer token in Authorization header"},
		{"basic: valid", basic, a(basicAuth("callkaro:n3w-pa55word")), body, now, ""},
		{"basic: rotation, old password still accepted", basic, a(basicAuth("callkaro:old-password")), body, now, ""},
		{"basic: rotation, removed password refused", basicRemoved, a(basicAuth("callkaro:old-password")), body, now, "invalid credentials"},
		{"basic: wrong password", basic, a(basicAuth("callkaro:n3w-pa55wore")), body, now, "invalid credentials"},
		{"basic: wrong user", basic, a(basicAuth("callkar0:n3w-pa55word")), body, now, "invalid credentials"},
		{"basic: empty password", basic, a(basicAuth("callkaro:")), body, now, "invalid credentials"},
		{"basic: missing header", basic, hdr(), body, now, "missing Authorization header"},
		{"basic: Bearer sent", basic, a("Bearer callkaro:n3w-pa55word"), body, now, "Authorization header must use the Basic scheme"},
		{"basic: credentials not encoded", basic, a("Basic callkaro:n3w-pa55word"), body, now, "malformed Basic credentials: not base64"},
		{"basic: no colon", basic, a(basicAuth("callkaron3w-pa55word")), body, now, "malformed Basic credentials: want base64 of user:password"},
		{"basic: empty", basic, a("Basic"), body, now, "empty Basic credentials in Authorization header"},
	}
}

func TestCredentials(t *testing.T) { runCases(t, credCases()) }

func TestNone(t *testing.T) {
	runCases(t, []vcase{
		{"no headers", Spec{Type: TypeNone}, hdr(), body, now, ""},
		{"any headers", Spec{Type: TypeNone}, hdr("Authorization", "Bearer x"), nil, time.Time{}, ""},
	})
}

func allCases() map[string][]vcase {
	return map[string][]vcase{
		"standard-webhooks": swCases(), "hmac": hmacCases(), "github": githubCases(),
		"stripe": stripeCases(), "credentials": credCases(),
	}
}

// TestReasonsLeakNothing runs every failure case of every scheme and checks
// that its reason holds no secret, no computed MAC and no received value.
func TestReasonsLeakNothing(t *testing.T) {
	n := 0
	for scheme, cases := range allCases() {
		for _, c := range cases {
			v, err := New(c.spec)
			if err != nil {
				t.Fatalf("%s/%s: New = %v", scheme, c.name, err)
			}
			err = v.Verify(c.h, c.body, c.now)
			if err == nil {
				continue
			}
			n++
			reason := reasonOf(t, err)
			assertNoLeak(t, reason, c)
			if !strings.Contains(err.Error(), reason) {
				t.Errorf("%s/%s: Error() = %q, want it to contain the reason", scheme, c.name, err.Error())
			}
		}
	}
	if n < 60 {
		t.Errorf("only %d failure cases ran", n)
	}
}

func TestName(t *testing.T) {
	for _, c := range []struct {
		spec Spec
		want string
	}{
		{Spec{Type: TypeNone}, "none"},
		{swSpec(swSecret1), "standard-webhooks"},
		{Spec{Type: TypeHMAC, Header: "X-S", Secrets: [][]byte{hmacKey1}}, "hmac-sha256"},
		{Spec{Type: TypeHMAC, Header: "X-S", Algorithm: "sha1", Secrets: [][]byte{hmacKey1}}, "hmac-sha1"},
		{Spec{Type: TypeHMAC, Header: "X-S", Algorithm: "sha512", Secrets: [][]byte{hmacKey1}}, "hmac-sha512"},
		{Spec{Type: TypeHMAC, Preset: "github", Secrets: [][]byte{hmacKey1}}, "github"},
		{Spec{Type: TypeHMAC, Preset: "stripe", Secrets: [][]byte{hmacKey1}}, "stripe"},
		{Spec{Type: TypeBearer, Secrets: [][]byte{[]byte("t")}}, "bearer"},
		{Spec{Type: TypeBasic, Secrets: [][]byte{[]byte("u:p")}}, "basic"},
	} {
		v, err := New(c.spec)
		if err != nil {
			t.Fatalf("New(%+v) = %v", c.spec.Type, err)
		}
		if got := v.Name(); got != c.want {
			t.Errorf("New(%s %s).Name() = %q, want %q", c.spec.Type, c.spec.Preset, got, c.want)
		}
	}
}

func TestDedupHeader(t *testing.T) {
	for typ, want := range map[string]string{
		TypeStandardWebhooks: "webhook-id", TypeHMAC: "", TypeBearer: "", TypeBasic: "", TypeNone: "",
	} {
		if got := DedupHeader(Spec{Type: typ}); got != want {
			t.Errorf("DedupHeader(%q) = %q, want %q", typ, got, want)
		}
	}
}

// TestDeliveryHeader: the header the request log prints as delivery_id.
func TestDeliveryHeader(t *testing.T) {
	for _, c := range []struct {
		spec Spec
		want string
	}{
		{Spec{Type: TypeStandardWebhooks}, "webhook-id"},
		{Spec{Type: TypeHMAC, Preset: "github"}, "X-GitHub-Delivery"},
		{Spec{Type: TypeHMAC, Preset: "stripe"}, ""},
		{Spec{Type: TypeHMAC}, ""},
		{Spec{Type: TypeBearer}, ""},
		{Spec{Type: TypeNone}, ""},
	} {
		if got := DeliveryHeader(c.spec); got != c.want {
			t.Errorf("DeliveryHeader(%s %s) = %q, want %q", c.spec.Type, c.spec.Preset, got, c.want)
		}
	}
}

// TestNewErrors checks that a bad Spec is refused with an error naming the
// field, and that no error contains a secret.
func TestNewErrors(t *testing.T) {
	const leak = "SUPERSECRET-do-not-print"
	sec := func(s ...string) [][]byte {
		var out [][]byte
		for _, x := range s {
			out = append(out, []byte(x))
		}
		return out
	}
	for _, c := range []struct {
		name string
		spec Spec
		want string // substring of the error
	}{
		{"empty type", Spec{}, "missing type (valid types: none, standard-webhooks, hmac, bearer, basic, url-token)"},
		{"unknown type", Spec{Type: "hmac-sha256", Secrets: sec(leak)}, `unknown type "hmac-sha256" (valid types: none, standard-webhooks, hmac, bearer, basic, url-token)`},
		{"none with a secret", Spec{Type: TypeNone, Secrets: sec(leak)}, `secrets: type "none" takes no secret`},
		{"standard-webhooks without secret", Spec{Type: TypeStandardWebhooks}, "needs at least one secret"},
		{"standard-webhooks empty secret", swSpec(swSecret1, ""), "secret 2 of 2: empty"},
		{"standard-webhooks not base64", swSpec("whsec_" + leak + "!"), `secret 1 of 1: not a Standard Webhooks secret; want "whsec_" followed by standard base64`},
		{"standard-webhooks only prefix", swSpec("whsec_"), `secret 1 of 1: no key after "whsec_"`},
		{"standard-webhooks with header", Spec{Type: TypeStandardWebhooks, Secrets: sec(swSecret1), Header: "X-S"}, `header: applies only to type "hmac"`},
		{"standard-webhooks negative tolerance", Spec{Type: TypeStandardWebhooks, Secrets: sec(swSecret1), Tolerance: -time.Second}, "tolerance: -1s is negative"},
		{"bearer with tolerance", Spec{Type: TypeBearer, Secrets: sec(leak), Tolerance: time.Minute}, "tolerance: applies only to"},
		{"hmac generic without header", Spec{Type: TypeHMAC, Secrets: sec(leak)}, "header: missing"},
		{"hmac generic with tolerance", Spec{Type: TypeHMAC, Header: "X-S", Secrets: sec(leak), Tolerance: time.Minute}, "tolerance: applies only to"},
		{"hmac bad header name", Spec{Type: TypeHMAC, Header: "X Sig\n", Secrets: sec(leak)}, "is not a valid header name"},
		{"hmac unknown algorithm", Spec{Type: TypeHMAC, Header: "X-S", Algorithm: "md5", Secrets: sec(leak)}, `algorithm: unknown "md5"`},
		{"hmac unknown encoding", Spec{Type: TypeHMAC, Header: "X-S", Encoding: "base32", Secrets: sec(leak)}, `encoding: unknown "base32"`},
		{"hmac unknown preset", Spec{Type: TypeHMAC, Preset: "gitlab", Secrets: sec(leak)}, `preset: unknown "gitlab"`},
		{"hmac without secret", Spec{Type: TypeHMAC, Header: "X-S"}, "needs at least one secret"},
		{"github with sha1", Spec{Type: TypeHMAC, Preset: "github", Algorithm: "sha1", Secrets: sec(leak)}, `algorithm: preset "github" fixes it to "sha256"`},
		{"github other header", Spec{Type: TypeHMAC, Preset: "github", Header: "X-Hub-Signature", Secrets: sec(leak)}, `header: preset "github" fixes it to "X-Hub-Signature-256"`},
		{"stripe with prefix", Spec{Type: TypeHMAC, Preset: "stripe", Prefix: "v1=", Secrets: sec(leak)}, `prefix: preset "stripe" fixes it to ""`},
		{"bearer without secret", Spec{Type: TypeBearer}, "needs at least one secret"},
		{"bearer with space", Spec{Type: TypeBearer, Secrets: sec("ok", leak+" x")}, "secret 2 of 2: a bearer token cannot contain spaces"},
		{"bearer with preset", Spec{Type: TypeBearer, Secrets: sec(leak), Preset: "github"}, `preset: applies only to type "hmac"`},
		{"basic without colon", Spec{Type: TypeBasic, Secrets: sec(leak)}, `secret 1 of 1: want "user:password"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, err := New(c.spec)
			if err == nil {
				t.Fatalf("New() = %v, nil; want error containing %q", v, c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("New() = %q, want it to contain %q", err, c.want)
			}
			if strings.Contains(err.Error(), leak) || strings.Contains(err.Error(), "SUPERSECRET") {
				t.Errorf("New() = %q, contains a secret", err)
			}
		})
	}
	// The valid forms of the fields the errors mention are accepted.
	for _, s := range []Spec{
		{Type: TypeHMAC, Preset: "github", Header: "x-hub-signature-256", Algorithm: "sha256", Encoding: "hex", Prefix: "sha256=", Secrets: sec("k")},
		{Type: TypeHMAC, Preset: "stripe", Tolerance: time.Hour, Secrets: sec("k")},
		{Type: TypeStandardWebhooks, Tolerance: time.Second, Secrets: sec(swSecret1)},
	} {
		if _, err := New(s); err != nil {
			t.Errorf("New(%s %s) = %v, want nil", s.Type, s.Preset, err)
		}
	}
}

// TestStandardWebhooksSvix: Svix senders (Clerk, Resend) spell the three
// headers svix-*; they are accepted as the webhook-* ones are, and a
// request with some of each spelling is refused as ambiguous.
func TestStandardWebhooksSvix(t *testing.T) {
	one := swSpec(swSecret1)
	const id = "msg_svix1"
	svix := hdr("svix-id", id, "svix-timestamp", nowTS, "svix-signature", swSig(swKey1, id, nowTS, body))
	with := func(h http.Header, kv ...string) http.Header {
		h = h.Clone()
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	without := func(h http.Header, name string) http.Header {
		h = h.Clone()
		h.Del(name)
		return h
	}
	good := swHeader(swKey1, id, nowTS, body)
	runCases(t, []vcase{
		{"svix spelling", one, svix, body, now, ""},
		{"svix, tampered body", one, svix, []byte(`{}`), now, "signature mismatch"},
		{"svix, wrong secret", one, hdr("svix-id", id, "svix-timestamp", nowTS, "svix-signature", swSig(swKey2, id, nowTS, body)), body, now, "signature mismatch"},
		{"svix, missing svix-signature", one, without(svix, "svix-signature"), body, now, "missing svix-signature header"},
		{"svix, timestamp too old", one, hdr("svix-id", id, "svix-timestamp", unix(now.Add(-time.Hour)), "svix-signature", swSig(swKey1, id, unix(now.Add(-time.Hour)), body)), body, now, "timestamp too old"},
		{"svix, malformed timestamp", one, with(svix, "svix-timestamp", "x"), body, now, "malformed svix-timestamp header"},
		{"both spellings, both valid", one, with(good, "svix-id", id, "svix-timestamp", nowTS, "svix-signature", svix.Get("svix-signature")), body, now, "both webhook-* and svix-* headers: send one spelling"},
		{"webhook-id with svix-timestamp and svix-signature", one, with(without(svix, "svix-id"), "webhook-id", id), body, now, "both webhook-* and svix-* headers: send one spelling"},
		{"valid webhook-* plus a stray svix-id", one, with(good, "svix-id", "other"), body, now, "both webhook-* and svix-* headers: send one spelling"},
	})
	for _, c := range []struct {
		name string
		h    http.Header
		want string
	}{
		{"webhook spelling", good, id},
		{"svix spelling", svix, id},
		{"neither", hdr(), ""},
	} {
		if got := DedupKey(c.h, DedupHeader(one)); got != c.want {
			t.Errorf("DedupKey(%s) = %q, want %q", c.name, got, c.want)
		}
	}
}
