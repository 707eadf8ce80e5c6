package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// URLVerifier is a [Verifier] whose credential travels in the request's
// URL rather than in its headers or body ("url-token"). The caller
// passes the URL's raw query string (url.URL.RawQuery, without the "?");
// Verify without it sees no token and refuses every request.
type URLVerifier interface {
	Verifier
	// VerifyURL is Verify with the request's raw query string.
	VerifyURL(rawQuery string, h http.Header, body []byte, now time.Time) error
}

// Redacted replaces the value of a url-token's query parameter wherever
// [RedactQuery] finds it.
const Redacted = "REDACTED"

// urlTokenVerifier checks a secret token in one query parameter. Like
// credVerifier it keeps only the SHA-256 of each secret and compares the
// SHA-256 of what was sent against all of them, so that neither a
// secret's length nor which secret matched shows in the timing.
type urlTokenVerifier struct {
	param string
	sums  [][sha256.Size]byte
}

var _ URLVerifier = (*urlTokenVerifier)(nil)

func newURLToken(s Spec) (Verifier, error) {
	errs := []error{checkSecrets(s)}
	switch {
	case s.Param == "":
		errs = append(errs, errors.New(`param: missing; name the query parameter that carries the token (e.g. param = "token" for https://host/hooks/x?token=...)`))
	case !validParam(s.Param):
		errs = append(errs, fmt.Errorf("param: %q is not a query parameter name: use letters, digits, '-', '_' and '.' only", s.Param))
	}
	v := &urlTokenVerifier{param: s.Param}
	for i, sec := range s.Secrets {
		// A token a sender must percent-encode ('+', '&', '#', '%', '=')
		// would be refused when pasted as is, with only "invalid token"
		// to say why: refused here instead.
		if len(sec) > 0 && strings.ContainsFunc(string(sec), func(r rune) bool { return !urlSafe(r) }) {
			errs = append(errs, fmt.Errorf("secret %d of %d: a URL token must be URL-safe, letters, digits, '-', '.', '_' and '~' only (openssl rand -hex 32 makes one)", i+1, len(s.Secrets)))
		}
		v.sums = append(v.sums, sha256.Sum256(sec))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return v, nil
}

func (v *urlTokenVerifier) Name() string { return TypeURLToken }

// Verify refuses: the token is in the URL, which only VerifyURL sees.
func (v *urlTokenVerifier) Verify(h http.Header, body []byte, now time.Time) error {
	return v.VerifyURL("", h, body, now)
}

func (v *urlTokenVerifier) VerifyURL(rawQuery string, _ http.Header, _ []byte, _ time.Time) error {
	vals, found := paramValues(rawQuery, v.param)
	switch {
	case found == 0:
		return fail("missing token: the URL has no " + v.param + " query parameter")
	case found > 1:
		// Which one did the sender mean? Refused rather than guessed, as a
		// repeated signature header is.
		return fail("multiple " + v.param + " query parameters in the URL")
	}
	tok, err := url.QueryUnescape(vals)
	if err != nil {
		return fail("malformed " + v.param + " query parameter: bad %-escape")
	}
	if tok == "" {
		return fail("empty token in the " + v.param + " query parameter")
	}
	sum := sha256.Sum256([]byte(tok))
	match := 0
	for i := range v.sums {
		match |= subtle.ConstantTimeCompare(sum[:], v.sums[i][:])
	}
	if match == 1 {
		return nil
	}
	return fail("invalid token in the " + v.param + " query parameter")
}

// paramValues returns the raw (still escaped) value of the last parameter
// named param in rawQuery and how many there are. Names are compared
// after unescaping, as url.ParseQuery does, so "%74oken" is "token" too.
func paramValues(rawQuery, param string) (raw string, n int) {
	for part := range strings.SplitSeq(rawQuery, "&") {
		if part == "" {
			continue
		}
		k, val, _ := strings.Cut(part, "=")
		if !paramIs(k, param) {
			continue
		}
		raw, n = val, n+1
	}
	return raw, n
}

// paramIs reports whether the escaped query key k names param.
func paramIs(k, param string) bool {
	if k == param {
		return true
	}
	if !strings.ContainsAny(k, "%+") {
		return false
	}
	u, err := url.QueryUnescape(k)
	return err == nil && u == param
}

// RedactQuery returns s, a raw query string, a URL, or a header value
// that carries one (X-Forwarded-Uri, X-Original-URL, Referer), with the
// value of every parameter named param replaced by [Redacted] and the rest
// as it was. A parameter starts s or follows '?', '&', ';' or '#' (a
// fragment); its value runs to the next '&'. It returns s itself, without allocating, when s
// holds no such parameter.
func RedactQuery(s, param string) string {
	if param == "" || !strings.Contains(s, "=") {
		return s
	}
	return replaceSpans(s, paramSpans(nil, s, nil, param))
}

func isQuerySep(c byte) bool { return c == '&' || c == '?' || c == ';' || c == '#' }

// validParam reports whether name is a plain query parameter name, one
// that needs no escaping.
func validParam(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// urlSafe reports whether r is one of RFC 3986's unreserved characters,
// which a URL carries as they are.
func urlSafe(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '.' || r == '_' || r == '~'
}
