package auth

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// checkFuzzResult is the property every fuzz target shares: Verify returned
// nil or an *Error whose Reason is one non-empty line that contains none of
// the secrets.
func checkFuzzResult(t *testing.T, err error, secrets ...string) {
	t.Helper()
	reason := reasonOf(t, err)
	for _, s := range secrets {
		if err != nil && strings.Contains(reason, s) {
			t.Fatalf("reason %q contains a secret", reason)
		}
	}
}

func mustNew(tb testing.TB, s Spec) Verifier {
	tb.Helper()
	v, err := New(s)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

func FuzzStandardWebhooks(f *testing.F) {
	good := swHeader(swKey1, "msg_1", nowTS, body)
	f.Add("msg_1", nowTS, good.Get("webhook-signature"), body, int64(0))
	f.Add("msg_1", nowTS, "v1,abc v2,def "+good.Get("webhook-signature"), body, int64(-300))
	f.Add("", "", "", []byte{}, int64(301))
	f.Add("a.b", "0", "v1,", []byte("x"), int64(-1<<62))
	f.Add("id", "9223372036854775807", "v1a,xyz", []byte("{}"), int64(1<<62))
	v := mustNew(f, swSpec(swSecret1, swSecret2))
	f.Fuzz(func(t *testing.T, id, ts, sig string, b []byte, skew int64) {
		// Arbitrary headers: never a panic, a proper result, and an
		// acceptance only when the header really holds the right MAC.
		h := http.Header{"Webhook-Id": {id}, "Webhook-Timestamp": {ts}, "Webhook-Signature": {sig}}
		err := v.Verify(h, b, now)
		checkFuzzResult(t, err, swSecret1, swSecret2, string(swKey1), string(swKey2))
		if err == nil && !strings.Contains(" "+sig+" ", " "+swSig(swKey1, id, ts, b)+" ") &&
			!strings.Contains(" "+sig+" ", " "+swSig(swKey2, id, ts, b)+" ") {
			t.Fatalf("Verify accepted id=%q ts=%q sig=%q without a valid signature", id, ts, sig)
		}

		// A valid signature over the fuzzed body, within tolerance, verifies.
		if id == "" {
			id = "msg_fuzz"
		}
		d := time.Duration(skew%300) * time.Second
		at := unix(now.Add(d))
		h = swHeader(swKey2, id, at, b)
		if err := v.Verify(h, b, now); err != nil {
			t.Fatalf("Verify(valid signature, skew %v, id %q) = %v", d, id, err)
		}
	})
}

func FuzzHMAC(f *testing.F) {
	good := hex.EncodeToString(mac(sha256Hash, hmacKey1, string(body)))
	f.Add(good, body, false)
	f.Add("sha256="+good, body, true)
	f.Add("", []byte{}, true)
	f.Add(strings.ToUpper(good), []byte("x"), false)
	f.Add("sha256=zz", []byte("{}"), true)
	generic := mustNew(f, Spec{Type: TypeHMAC, Header: "X-Signature", Secrets: [][]byte{hmacKey1, hmacKey2}})
	github := mustNew(f, Spec{Type: TypeHMAC, Preset: "github", Secrets: [][]byte{hmacKey1, hmacKey2}})
	f.Fuzz(func(t *testing.T, sig string, b []byte, gh bool) {
		want1 := hex.EncodeToString(mac(sha256Hash, hmacKey1, string(b)))
		want2 := hex.EncodeToString(mac(sha256Hash, hmacKey2, string(b)))
		v, name, prefix := generic, "X-Signature", ""
		if gh {
			v, name, prefix = github, "X-Hub-Signature-256", "sha256="
		}
		err := v.Verify(http.Header{name: {sig}}, b, now)
		checkFuzzResult(t, err, string(hmacKey1), string(hmacKey2), want1, want2)
		if err == nil && !strings.EqualFold(sig, prefix+want1) && !strings.EqualFold(sig, prefix+want2) {
			t.Fatalf("Verify accepted %q without a valid signature", sig)
		}
		if err := v.Verify(http.Header{name: {prefix + want2}}, b, now); err != nil {
			t.Fatalf("Verify(valid signature) = %v", err)
		}
	})
}

func FuzzStripe(f *testing.F) {
	sig := stripeSig(hmacKey1, nowTS, body)
	f.Add("t="+nowTS+",v1="+sig, body, int64(0))
	f.Add("t="+nowTS+",v1=ab,v1="+sig+",v0=zz", body, int64(299))
	f.Add("", []byte{}, int64(-299))
	f.Add("t=,v1=", []byte("x"), int64(1<<62))
	f.Add(",,=,t=1=2", []byte("{}"), int64(-1<<62))
	v := mustNew(f, Spec{Type: TypeHMAC, Preset: "stripe", Secrets: [][]byte{hmacKey1, hmacKey2}})
	f.Fuzz(func(t *testing.T, hv string, b []byte, skew int64) {
		err := v.Verify(http.Header{"Stripe-Signature": {hv}}, b, now)
		checkFuzzResult(t, err, string(hmacKey1), string(hmacKey2))
		if err == nil {
			// Accepted: some t= and some v1= must carry the right MAC.
			ok := false
			for item := range strings.SplitSeq(hv, ",") {
				if ts, found := strings.CutPrefix(strings.TrimSpace(item), "t="); found {
					l := strings.ToLower(hv)
					ok = strings.Contains(l, "v1="+stripeSig(hmacKey1, ts, b)) || strings.Contains(l, "v1="+stripeSig(hmacKey2, ts, b))
				}
			}
			if !ok {
				t.Fatalf("Verify accepted %q without a valid signature", hv)
			}
		}
		ts := unix(now.Add(time.Duration(skew%300) * time.Second))
		valid := "t=" + ts + ",v1=" + stripeSig(hmacKey2, ts, b)
		if err := v.Verify(http.Header{"Stripe-Signature": {valid}}, b, now); err != nil {
			t.Fatalf("Verify(%q) = %v", valid, err)
		}
	})
}

func FuzzBasic(f *testing.F) {
	f.Add(basicAuth("callkaro:pa55"), "callkaro:pa55", false)
	f.Add("Basic ", "u:", false)
	f.Add("Bearer tok", "tok", true)
	f.Add("basic Y2FsbGthcm86cGE1NQ==", "a:b:c", false)
	f.Add("Basic !!!", "", false)
	basic := mustNew(f, Spec{Type: TypeBasic, Secrets: [][]byte{[]byte("callkaro:pa55"), []byte("ops:rotated-0ld")}})
	bearer := mustNew(f, Spec{Type: TypeBearer, Secrets: [][]byte{[]byte("tok-0123456789"), []byte("tok-old")}})
	f.Fuzz(func(t *testing.T, authz, cred string, useBearer bool) {
		v, secrets := basic, []string{"callkaro:pa55", "ops:rotated-0ld", "pa55", "rotated-0ld"}
		if useBearer {
			v, secrets = bearer, []string{"tok-0123456789", "tok-old"}
		}
		err := v.Verify(http.Header{"Authorization": {authz}}, nil, now)
		checkFuzzResult(t, err, secrets...)
		if err == nil {
			scheme, rest, _ := strings.Cut(authz, " ")
			rest = strings.TrimLeft(rest, " ")
			got := rest
			if !useBearer {
				b, _ := base64.StdEncoding.DecodeString(rest)
				got = string(b)
			}
			if (useBearer && !strings.EqualFold(scheme, "bearer")) || (!useBearer && !strings.EqualFold(scheme, "basic")) ||
				(got != secrets[0] && got != secrets[1]) {
				t.Fatalf("Verify accepted %q", authz)
			}
		}
		// Valid credentials always verify; a fuzzed user:password or token
		// verifies exactly when it is configured.
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte(secrets[1]))
		if useBearer {
			want = "Bearer " + secrets[1]
		}
		if err := v.Verify(http.Header{"Authorization": {want}}, nil, now); err != nil {
			t.Fatalf("Verify(valid) = %v", err)
		}
		if cred != "" && strings.Contains(cred, ":") && !useBearer {
			err := v.Verify(http.Header{"Authorization": {basicAuth(cred)}}, nil, now)
			if (err == nil) != (cred == secrets[0] || cred == secrets[1]) {
				t.Fatalf("Verify(basic %q) = %v", cred, err)
			}
		}
	})
}

// FuzzSvixSpelling fuzzes which of the six webhook-* and svix-* headers a
// request has: a request with any of both spellings is refused, and one is
// accepted only when its own spelling's headers hold a valid signature.
func FuzzSvixSpelling(f *testing.F) {
	f.Add(uint8(0b000111), "msg_1", nowTS, true)
	f.Add(uint8(0b111000), "msg_1", nowTS, true)
	f.Add(uint8(0b111111), "msg_1", nowTS, true)
	f.Add(uint8(0b011100), "msg_1", nowTS, false)
	v := mustNew(f, swSpec(swSecret1))
	f.Fuzz(func(t *testing.T, mask uint8, id, ts string, valid bool) {
		mask &= 0b111111
		sig := "v1,AAAA"
		if valid {
			sig = swSig(swKey1, id, ts, body)
		}
		h := http.Header{}
		for i, name := range []string{"webhook-id", "webhook-timestamp", "webhook-signature", "svix-id", "svix-timestamp", "svix-signature"} {
			if mask&(1<<i) == 0 {
				continue
			}
			h.Set(name, []string{id, ts, sig}[i%3])
		}
		err := v.Verify(h, body, now)
		web, svix := mask&0b000111 != 0, mask&0b111000 != 0
		if web && svix && err == nil {
			t.Fatalf("Verify(headers %06b) accepted a request with both spellings", mask)
		}
		if err == nil && (!valid || (mask != 0b000111 && mask != 0b111000)) {
			t.Fatalf("Verify(headers %06b, valid %v) accepted without one whole spelling's valid signature", mask, valid)
		}
	})
}

// FuzzURLToken: an arbitrary query string is accepted only when it holds
// the token parameter exactly once, unescaping to a configured token; the
// reason never holds a token; RedactQuery leaves no configured token
// after "token=" in a query, whatever else it holds; and a Redactor
// leaves no configured token anywhere in a value, nor in what the value
// percent-decodes to up to RedactDecodes times over, whatever the value
// holds and however the token was put in it (raw, under another name,
// escaped in part or whole, in either case, once or twice over).
func FuzzURLToken(f *testing.F) {
	f.Add("token=" + urlTok1)
	f.Add("a=1&token=" + urlTok2 + "&b=2")
	f.Add("token=a&token=" + urlTok1)
	f.Add("%74oken=" + urlTok1)
	f.Add("token=%zz")
	f.Add("")
	f.Add("token")
	f.Add("&&=&token=;?#")
	f.Add("next=%2Fhooks%3Ftoken%3D")
	f.Add("%25%")
	f.Add("%4")
	v := mustNew(f, urlSpec(urlTok1, urlTok2)).(URLVerifier)
	rd := NewRedactor(urlSpec(urlTok1, urlTok2))
	f.Fuzz(func(t *testing.T, q string) {
		for _, tok := range []string{urlTok1, urlTok2} {
			for _, in := range []string{q, q + tok, tok + q, q + "&key=" + tok, q + "#" + tok + q,
				q + escapeSome(tok, len(q), false) + q, q + escapeSome(tok, len(q)+1, true),
				q + strings.ReplaceAll(escapeSome(tok, len(q), false), "%", "%25") + q,
				q + strings.ReplaceAll(escapeSome(escapeSome(tok, len(q), true), len(q)+1, false), "%", "%25")} {
				r := rd.Redact(in)
				for i, l := range decodings(r, RedactDecodes) {
					for _, tok := range []string{urlTok1, urlTok2} {
						if strings.Contains(l, tok) {
							t.Fatalf("Redact(%q) = %q, which decoded %d times holds a token: %q", in, r, i, l)
						}
					}
				}
			}
		}
		err := v.VerifyURL(q, http.Header{}, nil, now)
		checkFuzzResult(t, err, urlTok1, urlTok2)
		if err == nil {
			// ParseQuery goes on past a malformed other parameter, as
			// VerifyURL does.
			vals, _ := urlParseQuery(q)
			if got := vals["token"]; len(got) != 1 || (got[0] != urlTok1 && got[0] != urlTok2) {
				t.Fatalf("VerifyURL(%q) accepted; ParseQuery has token = %q", q, got)
			}
		}
		for _, tok := range []string{urlTok1, urlTok2} {
			r := RedactQuery(q+"&token="+tok, "token")
			for part := range strings.FieldsFuncSeq(r, func(c rune) bool { return c == '&' || c == '?' || c == ';' }) {
				k, val, _ := strings.Cut(part, "=")
				if paramIs(k, "token") && strings.Contains(val, tok) {
					t.Fatalf("RedactQuery(%q) = %q, still holds the token", q+"&token="+tok, r)
				}
			}
			if !strings.Contains(r, "token="+Redacted) {
				t.Fatalf("RedactQuery(%q) = %q, no %s", q+"&token="+tok, r, Redacted)
			}
		}
		if !strings.Contains(q, "=") && RedactQuery(q, "token") != q {
			t.Fatalf("RedactQuery(%q) changed a query with no parameter value", q)
		}
		// The valid token is accepted after any other parameters that do
		// not name it.
		if !strings.Contains(q, "oken") && !strings.Contains(q, "%") && !strings.Contains(q, "+") {
			if err := v.VerifyURL(q+"&token="+urlTok1, http.Header{}, nil, now); err != nil {
				t.Fatalf("VerifyURL(%q + valid token) = %v", q, err)
			}
		}
	})
}

// escapeSome returns s with some of its bytes percent-encoded, which ones
// chosen by seed, in upper- or lower-case hex.
func escapeSome(s string, seed int, upper bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if (seed>>(i%8))&1 == 1 || seed%len(s) == i {
			if upper {
				fmt.Fprintf(&b, "%%%02X", s[i])
			} else {
				fmt.Fprintf(&b, "%%%02x", s[i])
			}
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

var escapeRE = regexp.MustCompile(`%[0-9a-fA-F]{2}`)

// decodings returns s and what it percent-decodes to, n times over, what is
// not an escape left as it is: independent of the Redactor's own decoder.
func decodings(s string, n int) []string {
	out := []string{s}
	for range n {
		s = escapeRE.ReplaceAllStringFunc(s, func(e string) string {
			b, _ := hex.DecodeString(e[1:])
			return string(b)
		})
		out = append(out, s)
	}
	return out
}
