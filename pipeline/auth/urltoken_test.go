package auth

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

var (
	urlTok1 = "tok-2f9a8c1d-new"
	urlTok2 = "tok-77b0e4aa-old"
)

func urlSpec(tokens ...string) Spec {
	s := Spec{Type: TypeURLToken, Param: "token"}
	for _, t := range tokens {
		s.Secrets = append(s.Secrets, []byte(t))
	}
	return s
}

func TestURLToken(t *testing.T) {
	one := urlSpec(urlTok1)
	rotated := urlSpec(urlTok1, urlTok2)
	key := urlSpec(urlTok1)
	key.Param = "key"
	for _, c := range []struct {
		name  string
		spec  Spec
		query string
		want  string
	}{
		{"right token", one, "token=" + urlTok1, ""},
		{"right token among other parameters", one, "agent=7&token=" + urlTok1 + "&x=", ""},
		{"right token, escaped", urlSpec("a.b~c-d_e"), "token=a%2Eb%7Ec-d_e", ""},
		{"right token, escaped name", one, "%74oken=" + urlTok1, ""},
		{"wrong token", one, "token=" + urlTok2, "invalid token in the token query parameter"},
		{"a prefix of the token", one, "token=" + urlTok1[:8], "invalid token in the token query parameter"},
		{"the token and more", one, "token=" + urlTok1 + "x", "invalid token in the token query parameter"},
		{"missing: no query", one, "", "missing token: the URL has no token query parameter"},
		{"missing: other parameters only", one, "agent=7&tokens=" + urlTok1, "missing token: the URL has no token query parameter"},
		{"token in another parameter", key, "token=" + urlTok1, "missing token: the URL has no key query parameter"},
		{"token in the configured other parameter", key, "token=x&key=" + urlTok1, ""},
		{"empty", one, "token=", "empty token in the token query parameter"},
		{"name without value", one, "token", "empty token in the token query parameter"},
		{"bad escape", one, "token=%zz" + urlTok1, "malformed token query parameter: bad %-escape"},
		{"repeated, both right", one, "token=" + urlTok1 + "&token=" + urlTok1, "multiple token query parameters in the URL"},
		{"repeated, one right", one, "token=a&token=" + urlTok1, "multiple token query parameters in the URL"},
		{"repeated, escaped name", one, "token=" + urlTok1 + "&%74oken=b", "multiple token query parameters in the URL"},
		{"case of the name matters", one, "Token=" + urlTok1, "missing token: the URL has no token query parameter"},
		{"rotation: new accepted", rotated, "token=" + urlTok1, ""},
		{"rotation: old accepted", rotated, "token=" + urlTok2, ""},
		{"rotation: removed refused", urlSpec(urlTok1), "token=" + urlTok2, "invalid token in the token query parameter"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, err := New(c.spec)
			if err != nil {
				t.Fatalf("New() = %v", err)
			}
			uv, ok := v.(URLVerifier)
			if !ok {
				t.Fatalf("New(url-token) = %T, want a URLVerifier", v)
			}
			err = uv.VerifyURL(c.query, http.Header{}, body, now)
			got := reasonOf(t, err)
			if got != c.want {
				t.Errorf("VerifyURL(%q) reason = %q, want %q", c.query, got, c.want)
			}
			for _, s := range append([]string{urlTok1, urlTok2}, strings.Split(c.query, "&")...) {
				if len(s) >= 8 && strings.Contains(got, s) {
					t.Errorf("reason %q contains a token or a part of the query", got)
				}
			}
			// Verify, which has no URL, never accepts.
			if err := v.Verify(http.Header{"Authorization": {"Bearer " + urlTok1}}, body, now); err == nil {
				t.Error("Verify() without the URL accepted")
			}
		})
	}
}

func TestURLTokenNewErrors(t *testing.T) {
	const leak = "SUPERSECRET-do-not-print"
	for _, c := range []struct {
		name string
		spec Spec
		want string
	}{
		{"no param", Spec{Type: TypeURLToken, Secrets: [][]byte{[]byte(leak)}}, `param: missing; name the query parameter that carries the token`},
		{"param with =", Spec{Type: TypeURLToken, Param: "to=ken", Secrets: [][]byte{[]byte(leak)}}, `param: "to=ken" is not a query parameter name`},
		{"param with &", Spec{Type: TypeURLToken, Param: "a&b", Secrets: [][]byte{[]byte(leak)}}, `param: "a&b" is not a query parameter name`},
		{"no secret", Spec{Type: TypeURLToken, Param: "token"}, `secrets: type "url-token" needs at least one secret (secret_env or secret_file)`},
		{"empty secret", Spec{Type: TypeURLToken, Param: "token", Secrets: [][]byte{[]byte(leak), nil}}, "secret 2 of 2: empty"},
		{"secret with space", Spec{Type: TypeURLToken, Param: "token", Secrets: [][]byte{[]byte(leak + " x")}}, "secret 1 of 1: a URL token must be URL-safe"},
		{"secret a URL must escape", Spec{Type: TypeURLToken, Param: "token", Secrets: [][]byte{[]byte(leak), []byte("a+b/c=d")}}, "secret 2 of 2: a URL token must be URL-safe, letters, digits, '-', '.', '_' and '~' only (openssl rand -hex 32 makes one)"},
		{"param on bearer", Spec{Type: TypeBearer, Param: "token", Secrets: [][]byte{[]byte(leak)}}, `param: applies only to type "url-token"; remove it`},
		{"header on url-token", Spec{Type: TypeURLToken, Param: "token", Header: "X-T", Secrets: [][]byte{[]byte(leak)}}, `header: applies only to type "hmac"`},
		{"tolerance on url-token", Spec{Type: TypeURLToken, Param: "token", Tolerance: time.Minute, Secrets: [][]byte{[]byte(leak)}}, "tolerance: applies only to"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, err := New(c.spec)
			if err == nil {
				t.Fatalf("New() = %v, nil; want error containing %q", v, c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("New() = %q, want it to contain %q", err, c.want)
			}
			if strings.Contains(err.Error(), "SUPERSECRET") {
				t.Errorf("New() = %q, contains a secret", err)
			}
		})
	}
	v, err := New(urlSpec(urlTok1))
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Name(); got != "url-token" {
		t.Errorf("Name() = %q, want url-token", got)
	}
	if got := SecretParam(urlSpec(urlTok1)); got != "token" {
		t.Errorf("SecretParam(url-token) = %q, want token", got)
	}
	if got := SecretParam(Spec{Type: TypeBearer, Param: "token"}); got != "" {
		t.Errorf("SecretParam(bearer) = %q, want \"\"", got)
	}
}

func TestRedactQuery(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"token=abc", "token=REDACTED"},
		{"a=1&token=abc&b=2", "a=1&token=REDACTED&b=2"},
		{"token=abc&token=def", "token=REDACTED&token=REDACTED"},
		{"%74oken=abc", "%74oken=REDACTED"},
		{"tokens=abc&mytoken=x", "tokens=abc&mytoken=x"},
		{"/hooks/callkaro?token=abc", "/hooks/callkaro?token=REDACTED"},
		{"https://h.example/hooks/callkaro?x=1&token=a?b;c#frag", "https://h.example/hooks/callkaro?x=1&token=REDACTED"},
		{"/a?token=abc, /b?token=def", "/a?token=REDACTED"}, // a value ends at '&' only: too much redacted rather than too little
		{"token= abc", "token=REDACTED"},
		{"x;token=abc", "x;token=REDACTED"},
		{"/a#token=abc", "/a#token=REDACTED"}, // a fragment's parameters too
		{"/a?x=1#frag&token=abc", "/a?x=1#frag&token=REDACTED"},
		{"no query at all", "no query at all"},
		{"token", "token"},
	} {
		if got := RedactQuery(c.in, "token"); got != c.want {
			t.Errorf("RedactQuery(%q, token) = %q, want %q", c.in, got, c.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { RedactQuery("/hooks/callkaro?agent=7&tokens=x&a=b", "token") }); n != 0 {
		t.Errorf("RedactQuery of a value without the parameter allocates %v times, want 0", n)
	}
	if got := RedactQuery("token=abc", ""); got != "token=abc" {
		t.Errorf("RedactQuery with no param = %q, want it unchanged", got)
	}
}

func TestRedactor(t *testing.T) {
	r := NewRedactor(urlSpec(urlTok1, urlTok2, "tok-short", "short"))
	// enc percent-encodes every byte of s, with hex digits in the case given.
	enc := func(s string, upper bool) string {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			f := "%%%02x"
			if upper {
				f = "%%%02X"
			}
			fmt.Fprintf(&b, f, s[i])
		}
		return b.String()
	}
	t1 := urlTok1 // tok-2f9a8c1d-new
	for _, c := range []struct{ name, in, want string }{
		{"no token", "/hooks/callkaro?agent=7&a=b", "/hooks/callkaro?agent=7&a=b"},
		{"the parameter, as RedactQuery", "/hooks/callkaro?agent=7&token=" + t1, "/hooks/callkaro?agent=7&token=REDACTED"},
		{"a wrong token in the parameter", "/hooks/callkaro?token=guess", "/hooks/callkaro?token=REDACTED"},
		{"another parameter", "/hooks/callkaro?key=" + t1 + "&agent=7", "/hooks/callkaro?key=REDACTED&agent=7"},
		{"the rotated-out token", "/x?apikey=" + urlTok2, "/x?apikey=REDACTED"},
		{"a token of another length", "/x?k=tok-short&y=1", "/x?k=REDACTED&y=1"},
		{"in the path", "/hooks/" + t1 + "/x", "/hooks/REDACTED/x"},
		// The token's span inside the parameter's: one REDACTED, to the
		// parameter's end.
		{"a token inside the decoded parameter's value", "/l?next=%2Fh%3Ftoken%3Dx" + t1 + "y-secret-tail&z=1", "/l?next=%2Fh%3Ftoken%3DREDACTED&z=1"},
		// Under 8 bytes, a token is ordinary text: redacted as the
		// parameter's value only.
		{"a token too short to look for", "a short sentence, shortly; ?token=short", "a short sentence, shortly; ?token=REDACTED"},
		{"in a fragment", "/x#" + t1, "/x#REDACTED"},
		{"after a semicolon", "/x;k=" + t1, "/x;k=REDACTED"},
		{"twice, and next to each other", "a=" + t1 + "&b=" + t1 + urlTok2, "a=REDACTED&b=REDACTED"},
		{"one byte escaped", "/x?key=tok-2f9a8c1d-n%65w", "/x?key=REDACTED"},
		{"the token's own case counts", "/x?key=%74OK-2f9a8c1d-new", "/x?key=%74OK-2f9a8c1d-new"}, // OK is not ok
		{"every byte escaped, lower-case hex", "/x?key=" + enc(t1, false) + "&y=1", "/x?key=REDACTED&y=1"},
		{"every byte escaped, upper-case hex", "/x?key=" + enc(t1, true), "/x?key=REDACTED"},
		{"the parameter's name escaped", "/x?%74oken=" + t1, "/x?%74oken=REDACTED"},
		{"the parameter escaped in another URL's query", "/login?next=%2Fhooks%3Ftoken%3D" + t1 + "%26agent%3D7",
			"/login?next=%2Fhooks%3Ftoken%3DREDACTED%26agent%3D7"},
		{"a wrong token escaped in another URL's query", "/login?next=%2Fhooks%3Ftoken%3Dguess%26agent%3D7",
			"/login?next=%2Fhooks%3Ftoken%3DREDACTED%26agent%3D7"},
		{"twice escaped", "/x?key=tok-2f9a8c1d-n%2565w", "/x?key=REDACTED"},
		{"twice escaped, every byte", "/x?next=" + strings.ReplaceAll(enc(t1, false), "%", "%25"), "/x?next=REDACTED"},
		{"escaped four times", "/x?k=tok-2f9a8c1d-n%25252565w", "/x?k=REDACTED"},
		{"escaped five times: past the bound", "/x?k=tok-2f9a8c1d-n%2525252565w", "/x?k=tok-2f9a8c1d-n%2525252565w"},
		{"the escaped token and an escape of its own before it", "%41%2574ok-2f9a8c1d-new", "%41REDACTED"},
		{"a bad escape next to it", "%zz" + t1 + "%", "%zzREDACTED%"},
		{"two header lines", "/a?token=x, /b?k=" + t1, "/a?token=REDACTED"},
		{"a prefix is not the token", "/x?k=tok-2f9a8c1d-ne", "/x?k=tok-2f9a8c1d-ne"},
	} {
		if got := r.Redact(c.in); got != c.want {
			t.Errorf("%s: Redact(%q) = %q, want %q", c.name, c.in, got, c.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { r.Redact("/hooks/callkaro?agent=7&tokens=x&a=b") }); n != 0 {
		t.Errorf("Redact of a value without the token or an escape allocates %v times, want 0", n)
	}
	var nilR *Redactor
	if got := nilR.Redact("token=" + t1); got != "token="+t1 {
		t.Errorf("nil Redact(token=...) = %q, want it unchanged", got)
	}
	if NewRedactor(Spec{Type: TypeBearer, Secrets: [][]byte{[]byte(t1)}}) != nil {
		t.Errorf("NewRedactor(bearer) is not nil")
	}
	// Without the secrets (pipelined test): by parameter only.
	if got := NewRedactor(urlSpec()).Redact("/x?token=a&key=" + t1); got != "/x?token=REDACTED&key="+t1 {
		t.Errorf("NewRedactor(no secrets).Redact = %q, want the parameter redacted", got)
	}
}

// TestRedactorCostIsLinear: a header as large as max_header_bytes allows
// by default, escapes nested as deep as they go, costs a bounded number of
// passes over it (P9), not one per level.
func TestRedactorCostIsLinear(t *testing.T) {
	r := NewRedactor(urlSpec(urlTok1, urlTok2, "tok-short"))
	perByte := func(s string, n int) float64 { // ns
		best := time.Duration(1 << 62)
		for range 5 {
			start := time.Now()
			for range n {
				r.Redact(s)
			}
			best = min(best, time.Since(start))
		}
		return float64(best) / float64(n*len(s))
	}
	// Each decoding peels one level off: %2525...2541 is %25...2541.
	small := "%" + strings.Repeat("25", 1<<10) + "41"
	large := "%" + strings.Repeat("25", 30<<10) + "41" // 60 KiB
	ps, pl := perByte(small, 20), perByte(large, 1)
	if pl > 8*ps {
		t.Errorf("Redact costs %.1f ns a byte on %d bytes, %.1f on %d: want it linear", pl, len(large), ps, len(small))
	}
}

func BenchmarkRedactor(b *testing.B) {
	r := NewRedactor(urlSpec(urlTok1, urlTok2))
	for _, c := range []struct{ name, v string }{
		{"no token", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"},
		{"plain", "https://callkaro.example/hooks/callkaro?agent=7&token=" + urlTok1},
		{"escaped", "/login?next=%2Fhooks%2Fcallkaro%3Fagent%3D7%26key%3D" + urlTok1},
		{"4KiB", strings.Repeat("/a%2Fb?x=1&", 372)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.v)))
			for b.Loop() {
				r.Redact(c.v)
			}
		})
	}
}
