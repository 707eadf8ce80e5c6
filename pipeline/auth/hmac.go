package auth

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strings"
	"time"
)

// HMAC presets ([Spec.Preset]).
const (
	presetGitHub = "github"
	presetStripe = "stripe"
)

const headerStripe = "Stripe-Signature"

var algorithms = map[string]func() hash.Hash{
	"sha1":   sha1.New,
	"sha256": sha256.New,
	"sha512": sha512.New,
}

// hmacVerifier checks an HMAC of the body carried in one header: a generic
// one, or GitHub's X-Hub-Signature-256.
type hmacVerifier struct {
	name    string
	header  string // canonical name
	newHash func() hash.Hash
	size    int // MAC length in bytes
	b64     bool
	prefix  string
	keys    [][]byte
	malform string // reason for a value that cannot be a signature
}

// stripeVerifier checks Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...],
// an HMAC-SHA256 over "<t>.<body>".
type stripeVerifier struct {
	keys [][]byte
	tol  time.Duration
}

var (
	_ Verifier = (*hmacVerifier)(nil)
	_ Verifier = (*stripeVerifier)(nil)
)

func newHMAC(s Spec) (Verifier, error) {
	errs := []error{checkSecrets(s)}
	if s.Header != "" && !validHeaderName(s.Header) {
		errs = append(errs, fmt.Errorf("header: %q is not a valid header name", s.Header))
	}
	switch s.Algorithm {
	case "", "sha1", "sha256", "sha512":
	default:
		errs = append(errs, fmt.Errorf(`algorithm: unknown %q; want "sha1", "sha256" or "sha512"`, s.Algorithm))
	}
	switch s.Encoding {
	case "", "hex", "base64":
	default:
		errs = append(errs, fmt.Errorf(`encoding: unknown %q; want "hex" or "base64"`, s.Encoding))
	}
	if strings.ContainsAny(s.Prefix, "\r\n") {
		errs = append(errs, errors.New("prefix: must not contain a line break"))
	}

	// A preset fixes every field; a field that disagrees with it is a
	// mistake in the configuration, not an override.
	type fixed struct{ header, algorithm, encoding, prefix string }
	var p fixed
	switch s.Preset {
	case "":
		if s.Header == "" {
			errs = append(errs, errors.New(`header: missing; name the header that carries the signature (e.g. "X-Signature"), or set preset = "github" or "stripe"`))
		}
		p = fixed{s.Header, s.Algorithm, s.Encoding, s.Prefix}
		if p.algorithm == "" {
			p.algorithm = "sha256"
		}
		if p.encoding == "" {
			p.encoding = "hex"
		}
	case presetGitHub:
		p = fixed{"X-Hub-Signature-256", "sha256", "hex", "sha256="}
	case presetStripe:
		p = fixed{headerStripe, "sha256", "hex", ""}
	default:
		errs = append(errs, fmt.Errorf(`preset: unknown %q; want "github", "stripe" or "" (generic)`, s.Preset))
	}
	if s.Preset == presetGitHub || s.Preset == presetStripe {
		for _, f := range []struct{ name, got, want string }{
			{"header", http.CanonicalHeaderKey(s.Header), p.header},
			{"algorithm", s.Algorithm, p.algorithm},
			{"encoding", s.Encoding, p.encoding},
			{"prefix", s.Prefix, p.prefix},
		} {
			if f.got != "" && f.got != f.want {
				errs = append(errs, fmt.Errorf("%s: preset %q fixes it to %q; remove %s or use a generic hmac (no preset)", f.name, s.Preset, f.want, f.name))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	if s.Preset == presetStripe {
		return &stripeVerifier{keys: s.Secrets, tol: tolerance(s)}, nil
	}
	v := &hmacVerifier{
		name:    "hmac-" + p.algorithm,
		header:  http.CanonicalHeaderKey(p.header),
		newHash: algorithms[p.algorithm],
		b64:     p.encoding == "base64",
		prefix:  p.prefix,
		keys:    s.Secrets,
	}
	if s.Preset == presetGitHub {
		v.name = presetGitHub
	}
	v.size = v.newHash().Size()
	want := fmt.Sprintf("a %d-digit hex", 2*v.size)
	if v.b64 {
		want = "a base64"
	}
	v.malform = fmt.Sprintf("malformed %s header: want %q followed by %s HMAC-%s", v.header, v.prefix, want, strings.ToUpper(p.algorithm))
	if v.prefix == "" {
		v.malform = fmt.Sprintf("malformed %s header: want %s HMAC-%s", v.header, want, strings.ToUpper(p.algorithm))
	}
	return v, nil
}

func (v *hmacVerifier) Name() string { return v.name }

func (v *hmacVerifier) Verify(h http.Header, body []byte, _ time.Time) error {
	val, err := header(h, v.header, v.header)
	if err != nil {
		return err
	}
	enc, ok := strings.CutPrefix(val, v.prefix)
	if !ok {
		return fail(v.malform)
	}
	var got []byte
	if v.b64 {
		got, err = base64.StdEncoding.DecodeString(enc)
	} else {
		got, err = hex.DecodeString(enc)
	}
	if err != nil || len(got) != v.size {
		return fail(v.malform)
	}
	for _, k := range v.keys {
		m := hmac.New(v.newHash, k)
		m.Write(body)
		if hmac.Equal(m.Sum(nil), got) {
			return nil
		}
	}
	return fail("signature mismatch")
}

func (v *stripeVerifier) Name() string { return presetStripe }

func (v *stripeVerifier) Verify(h http.Header, body []byte, now time.Time) error {
	val, err := header(h, headerStripe, headerStripe)
	if err != nil {
		return err
	}
	var (
		ts    string
		haveT bool
		sigs  [][]byte
		anyV1 bool
	)
	for item := range strings.SplitSeq(val, ",") {
		k, kv, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return fail("malformed Stripe-Signature header: want t=<unix>,v1=<hex>")
		}
		switch k {
		case "t":
			if haveT {
				return fail("malformed Stripe-Signature header: more than one t")
			}
			ts, haveT = kv, true
		case "v1":
			// Like Stripe's libraries, a v1 that is not a hex SHA-256 is
			// skipped: it cannot match, and another v1 may.
			anyV1 = true
			if b, err := hex.DecodeString(kv); err == nil && len(b) == sha256.Size {
				sigs = append(sigs, b)
			}
		}
		// Other schemes (v0, test-mode signatures) are ignored.
	}
	if !haveT {
		return fail("missing timestamp (t=) in Stripe-Signature header")
	}
	sec, ok := parseUnix(ts)
	if !ok {
		return fail("malformed timestamp (t=) in Stripe-Signature header")
	}
	if !anyV1 {
		return fail("no v1 signature in Stripe-Signature header")
	}
	if err := checkTime(sec, now, v.tol); err != nil {
		return err
	}
	for _, k := range v.keys {
		m := hmac.New(sha256.New, k)
		m.Write([]byte(ts))
		m.Write([]byte{'.'})
		m.Write(body)
		mac := m.Sum(nil)
		for _, s := range sigs {
			if hmac.Equal(mac, s) {
				return nil
			}
		}
	}
	return fail("signature mismatch")
}

// validHeaderName reports whether name is an RFC 9110 token.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
