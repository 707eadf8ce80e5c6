package auth

import (
	"crypto/hmac"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Standard Webhooks header names, as the reasons spell them.
const (
	headerWebhookID        = standardwebhooks.HeaderWebhookID
	headerWebhookTimestamp = standardwebhooks.HeaderWebhookTimestamp
	headerWebhookSignature = standardwebhooks.HeaderWebhookSignature

	// Svix (Clerk, Resend) sends the same headers under other names; the
	// reference libraries accept both. One request uses one spelling.
	headerSvixID        = "svix-id"
	headerSvixTimestamp = "svix-timestamp"
	headerSvixSignature = "svix-signature"
)

// swHeaders are the names of the three headers in one spelling.
type swHeaders struct{ id, timestamp, signature string }

var (
	webhookSpelling = swHeaders{headerWebhookID, headerWebhookTimestamp, headerWebhookSignature}
	svixSpelling    = swHeaders{headerSvixID, headerSvixTimestamp, headerSvixSignature}
)

func (s swHeaders) any(h http.Header) bool {
	return len(h.Values(s.id)) > 0 || len(h.Values(s.timestamp)) > 0 || len(h.Values(s.signature)) > 0
}

// spelling returns the header names h uses: webhook-* (also when it has
// neither, so that the reasons name the standard ones) or svix-*; a
// request with some of each is a failure, as it is ambiguous.
func spelling(h http.Header) (swHeaders, error) {
	web, svix := webhookSpelling.any(h), svixSpelling.any(h)
	switch {
	case web && svix:
		return swHeaders{}, fail("both webhook-* and svix-* headers: send one spelling")
	case svix:
		return svixSpelling, nil
	}
	return webhookSpelling, nil
}

// DedupKey returns the value of a request's dedup header (see
// [DedupHeader]); for webhook-id, that of svix-id when the request uses
// the Svix spelling.
func DedupKey(h http.Header, header string) string {
	if header == headerWebhookID && !webhookSpelling.any(h) {
		return h.Get(headerSvixID)
	}
	return h.Get(header)
}

// swVerifier implements the Standard Webhooks specification.
//
// The reference library decodes the secrets and computes the MAC
// ([standardwebhooks.Webhook.Sign]). Its Verify is not used: it reads
// time.Now itself and fixes the tolerance at five minutes, where a source
// may configure another one and tests pass the clock; and its errors
// ("unable to verify payload, err: ...") do not say which header is wrong.
// So the headers, the timestamp and the comparison are done here.
type swVerifier struct {
	hooks []*standardwebhooks.Webhook
	tol   time.Duration
}

var _ Verifier = (*swVerifier)(nil)

func newStandardWebhooks(s Spec) (Verifier, error) {
	if err := checkSecrets(s); err != nil {
		return nil, err
	}
	v := &swVerifier{tol: tolerance(s)}
	var errs []error
	for i, sec := range s.Secrets {
		// The library trims "whsec_" and decodes standard base64. Its error
		// is not wrapped: it would say nothing more than this one.
		wh, err := standardwebhooks.NewWebhook(string(sec))
		if err != nil {
			errs = append(errs, fmt.Errorf(`secret %d of %d: not a Standard Webhooks secret; want "whsec_" followed by standard base64`, i+1, len(s.Secrets)))
			continue
		}
		if b := strings.TrimPrefix(string(sec), "whsec_"); b == "" {
			errs = append(errs, fmt.Errorf(`secret %d of %d: no key after "whsec_"`, i+1, len(s.Secrets)))
			continue
		}
		v.hooks = append(v.hooks, wh)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return v, nil
}

func (v *swVerifier) Name() string { return TypeStandardWebhooks }

func (v *swVerifier) Verify(h http.Header, body []byte, now time.Time) error {
	names, err := spelling(h)
	if err != nil {
		return err
	}
	id, err := header(h, names.id, names.id)
	if err != nil {
		return err
	}
	ts, err := header(h, names.timestamp, names.timestamp)
	if err != nil {
		return err
	}
	sigs, err := header(h, names.signature, names.signature)
	if err != nil {
		return err
	}
	sec, ok := parseUnix(ts)
	if !ok {
		return fail("malformed " + names.timestamp + " header")
	}
	if err := checkTime(sec, now, v.tol); err != nil {
		return err
	}

	// The header holds space-delimited "<version>,<base64>" signatures; only
	// v1 ones count, others are ignored as the specification says.
	var v1 []string
	for f := range strings.SplitSeq(sigs, " ") {
		ver, sig, ok := strings.Cut(f, ",")
		if ok && ver == "v1" {
			v1 = append(v1, sig)
		}
	}
	if len(v1) == 0 {
		return fail("no v1 signature in " + names.signature + " header")
	}

	// parseUnix accepts only the canonical form, so the library (which
	// signs timestamp.Unix() formatted in decimal) signs the header's text.
	t := time.Unix(sec, 0)
	for _, wh := range v.hooks {
		want, err := wh.Sign(id, t, body)
		if err != nil {
			continue // Sign never fails in v0.0.1
		}
		want = strings.TrimPrefix(want, "v1,")
		for _, got := range v1 {
			if hmac.Equal([]byte(got), []byte(want)) {
				return nil
			}
		}
	}
	return fail("signature mismatch")
}
