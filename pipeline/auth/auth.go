package auth

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Scheme names accepted in [Spec.Type].
const (
	TypeNone             = "none"
	TypeStandardWebhooks = "standard-webhooks"
	TypeHMAC             = "hmac"
	TypeBearer           = "bearer"
	TypeBasic            = "basic"
	TypeURLToken         = "url-token"
)

const validTypes = "none, standard-webhooks, hmac, bearer, basic, url-token"

// DefaultTolerance is the timestamp tolerance of standard-webhooks and the
// stripe preset when [Spec.Tolerance] is zero.
const DefaultTolerance = 5 * time.Minute

// Spec is one source's authentication, with its secrets already read (from
// environment variables or files). The zero value of each optional field
// means its default.
type Spec struct {
	// Type is "none", "standard-webhooks", "hmac", "bearer", "basic" or
	// "url-token".
	Type string
	// Secrets are several at once for rotation: any match accepts.
	// standard-webhooks: the "whsec_<base64>" strings as given (the prefix
	// may be left out); hmac: raw key bytes; bearer and url-token: tokens;
	// basic: "user:password".
	Secrets [][]byte
	// Param (url-token) is the query parameter that carries the token,
	// e.g. "token" for https://host/hooks/x?token=<secret>. Required.
	Param string
	// Header (hmac) is the header carrying the signature. Required for a
	// generic hmac; a preset sets it.
	Header string
	// Algorithm (hmac) is "sha1", "sha256" (default) or "sha512".
	Algorithm string
	// Encoding (hmac) is "hex" (default) or "base64".
	Encoding string
	// Prefix (hmac) precedes the encoded MAC in the header, e.g. "sha256=".
	Prefix string
	// Preset (hmac) is "github" (X-Hub-Signature-256: sha256=<hex>),
	// "stripe" (Stripe-Signature: t=<unix>,v1=<hex>[,v1=...], HMAC-SHA256
	// over "<t>.<body>") or "" for a generic HMAC described by the fields
	// above. A preset fixes Header, Algorithm, Encoding and Prefix; those
	// fields must then be empty or equal to the preset's values.
	Preset string
	// Tolerance (standard-webhooks, stripe) bounds how far a signed
	// timestamp may be from now, in both directions. Default
	// [DefaultTolerance].
	Tolerance time.Duration
}

// Verifier checks requests for one source. It is safe for concurrent use.
type Verifier interface {
	// Verify checks a request's headers and raw body against the time now.
	// It returns nil when the request is accepted; a failure is an *[Error].
	Verify(h http.Header, body []byte, now time.Time) error
	// Name is the scheme recorded on the event: "standard-webhooks",
	// "hmac-sha256" (generic hmac, by algorithm), "github", "stripe",
	// "bearer", "basic", "url-token" or "none".
	Name() string
}

// New validates s and returns its Verifier, with the keys decoded and
// hashed once. Errors name the field and say what to fix; they never contain
// secret bytes.
func New(s Spec) (Verifier, error) {
	if err := checkUnused(s); err != nil {
		return nil, err
	}
	switch s.Type {
	case TypeNone:
		return noneVerifier{}, nil
	case TypeStandardWebhooks:
		return newStandardWebhooks(s)
	case TypeHMAC:
		return newHMAC(s)
	case TypeBearer, TypeBasic:
		return newCredential(s)
	case TypeURLToken:
		return newURLToken(s)
	case "":
		return nil, errors.New("missing type (valid types: " + validTypes + ")")
	}
	return nil, fmt.Errorf("unknown type %q (valid types: %s)", s.Type, validTypes)
}

// DedupHeader returns the header whose value is the natural dedup key of the
// scheme: "webhook-id" for standard-webhooks, "" otherwise.
func DedupHeader(s Spec) string {
	if s.Type == TypeStandardWebhooks {
		return "webhook-id"
	}
	return ""
}

// DeliveryHeader returns the header that names one delivery of a webhook
// in the scheme, which the request log prints so that two copies of one
// event can be told apart: "webhook-id" for standard-webhooks (its value
// read with [DedupKey], which takes svix-id in the Svix spelling),
// "X-GitHub-Delivery" for the hmac preset "github"; "" otherwise.
func DeliveryHeader(s Spec) string {
	switch {
	case s.Type == TypeStandardWebhooks:
		return headerWebhookID
	case s.Type == TypeHMAC && s.Preset == presetGitHub:
		return "X-GitHub-Delivery"
	}
	return ""
}

// SecretHeader returns the header that carries the scheme's credential or
// signature, which must never be stored: Authorization for bearer and
// basic, webhook-signature for standard-webhooks, the signature header of
// hmac; "" for none.
func SecretHeader(s Spec) string {
	switch s.Type {
	case TypeBearer, TypeBasic:
		return "Authorization"
	case TypeStandardWebhooks:
		return headerWebhookSignature
	case TypeHMAC:
		switch s.Preset {
		case presetGitHub:
			return "X-Hub-Signature-256"
		case presetStripe:
			return headerStripe
		}
		return s.Header
	}
	return ""
}

// SecretParam returns the query parameter that carries the scheme's
// credential, which must never be logged nor stored (see [RedactQuery]):
// Param for url-token, "" for every other type.
func SecretParam(s Spec) string {
	if s.Type == TypeURLToken {
		return s.Param
	}
	return ""
}

// checkUnused refuses fields that the scheme does not read, so that a typo
// in the configuration is not silently ignored.
func checkUnused(s Spec) error {
	var errs []error
	if s.Type != TypeHMAC {
		for _, f := range []struct{ name, val string }{
			{"header", s.Header}, {"algorithm", s.Algorithm}, {"encoding", s.Encoding},
			{"prefix", s.Prefix}, {"preset", s.Preset},
		} {
			if f.val != "" {
				errs = append(errs, fmt.Errorf("%s: applies only to type \"hmac\"; remove it", f.name))
			}
		}
	}
	if s.Type != TypeURLToken && s.Param != "" {
		errs = append(errs, errors.New(`param: applies only to type "url-token"; remove it`))
	}
	usesTolerance := s.Type == TypeStandardWebhooks || (s.Type == TypeHMAC && s.Preset == presetStripe)
	if s.Tolerance != 0 && !usesTolerance {
		errs = append(errs, errors.New(`tolerance: applies only to type "standard-webhooks" and the hmac preset "stripe"; remove it`))
	}
	if s.Tolerance < 0 {
		errs = append(errs, fmt.Errorf("tolerance: %v is negative; want a positive duration such as \"5m\"", s.Tolerance))
	}
	if s.Type == TypeNone && len(s.Secrets) > 0 {
		errs = append(errs, errors.New(`secrets: type "none" takes no secret; remove them or choose another type`))
	}
	return errors.Join(errs...)
}

// checkSecrets reports a missing secret list or an empty secret, by index.
func checkSecrets(s Spec) error {
	if len(s.Secrets) == 0 {
		return fmt.Errorf("secrets: type %q needs at least one secret (secret_env or secret_file)", s.Type)
	}
	var errs []error
	for i, sec := range s.Secrets {
		if len(sec) == 0 {
			errs = append(errs, fmt.Errorf("secret %d of %d: empty", i+1, len(s.Secrets)))
		}
	}
	return errors.Join(errs...)
}

func tolerance(s Spec) time.Duration {
	if s.Tolerance == 0 {
		return DefaultTolerance
	}
	return s.Tolerance
}

// header returns the only value of header name. A missing or empty header
// and a repeated one are failures: a repeated signature header is ambiguous
// (which one did the sender mean?) and is refused rather than guessed.
// display is the name as the reasons spell it.
func header(h http.Header, name, display string) (string, error) {
	vs := h.Values(name)
	switch {
	case len(vs) == 0 || (len(vs) == 1 && vs[0] == ""):
		return "", fail("missing " + display + " header")
	case len(vs) > 1:
		return "", fail("multiple " + display + " headers")
	}
	return vs[0], nil
}

// parseUnix parses a timestamp in whole seconds since the Unix epoch, in
// canonical form only (ASCII digits, no sign, no leading zero), so that the
// string that was signed and the number that is checked are the same.
func parseUnix(v string) (int64, bool) {
	if v == "" || len(v) > 19 || (len(v) > 1 && v[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

// checkTime reports a signed timestamp more than tol before or after now.
// sec is not negative (parseUnix). A time.Time cannot hold seconds near
// MaxInt64 (time.Unix wraps them into the past), so they are clamped to a
// date millions of years ahead; time.Time.Sub saturates from there.
func checkTime(sec int64, now time.Time, tol time.Duration) error {
	t := time.Unix(min(sec, 1<<53), 0)
	if now.Sub(t) > tol {
		return fail("timestamp too old")
	}
	if t.Sub(now) > tol {
		return fail("timestamp too far in the future")
	}
	return nil
}

// noneVerifier accepts every request.
type noneVerifier struct{}

var _ Verifier = noneVerifier{}

func (noneVerifier) Verify(http.Header, []byte, time.Time) error { return nil }
func (noneVerifier) Name() string                                { return TypeNone }
