package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// credVerifier checks Authorization: Bearer <token> or Basic
// base64(user:password). It keeps only the SHA-256 of each secret and
// compares the SHA-256 of what was sent against all of them, so that
// neither a secret's length nor which secret matched shows in the timing.
type credVerifier struct {
	basic  bool
	scheme string // "Bearer" or "Basic"
	sums   [][sha256.Size]byte
}

var _ Verifier = (*credVerifier)(nil)

func newCredential(s Spec) (Verifier, error) {
	errs := []error{checkSecrets(s)}
	v := &credVerifier{basic: s.Type == TypeBasic, scheme: "Bearer"}
	if v.basic {
		v.scheme = "Basic"
	}
	for i, sec := range s.Secrets {
		switch {
		case len(sec) == 0:
			// reported by checkSecrets
		case v.basic && strings.IndexByte(string(sec), ':') < 0:
			errs = append(errs, fmt.Errorf(`secret %d of %d: want "user:password" (no colon found)`, i+1, len(s.Secrets)))
		case !v.basic && strings.ContainsFunc(string(sec), func(r rune) bool { return r <= ' ' || r == 0x7f }):
			errs = append(errs, fmt.Errorf("secret %d of %d: a bearer token cannot contain spaces or control characters", i+1, len(s.Secrets)))
		}
		v.sums = append(v.sums, sha256.Sum256(sec))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return v, nil
}

func (v *credVerifier) Name() string {
	if v.basic {
		return TypeBasic
	}
	return TypeBearer
}

func (v *credVerifier) Verify(h http.Header, _ []byte, _ time.Time) error {
	val, err := header(h, "Authorization", "Authorization")
	if err != nil {
		return err
	}
	// RFC 9110: the scheme is case-insensitive, then one or more spaces.
	scheme, cred, _ := strings.Cut(val, " ")
	if !strings.EqualFold(scheme, v.scheme) {
		return fail("Authorization header must use the " + v.scheme + " scheme")
	}
	cred = strings.TrimLeft(cred, " ")
	if cred == "" {
		if v.basic {
			return fail("empty Basic credentials in Authorization header")
		}
		return fail("empty bearer token in Authorization header")
	}
	got := []byte(cred)
	if v.basic {
		got, err = base64.StdEncoding.DecodeString(cred)
		if err != nil {
			return fail("malformed Basic credentials: not base64")
		}
		if strings.IndexByte(string(got), ':') < 0 {
			return fail("malformed Basic credentials: want base64 of user:password")
		}
	}
	sum := sha256.Sum256(got)
	match := 0
	for i := range v.sums {
		match |= subtle.ConstantTimeCompare(sum[:], v.sums[i][:])
	}
	if match == 1 {
		return nil
	}
	if v.basic {
		return fail("invalid credentials")
	}
	return fail("invalid bearer token")
}
