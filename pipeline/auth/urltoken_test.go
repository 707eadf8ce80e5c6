package auth

import (
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
