package config

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline/auth"
)

// TestSecretsOptional: parsed for rule tests, a configuration whose admin
// token, TLS files and source secrets are missing loads; the source without
// its secret refuses every request, naming the variable; parsed for serve,
// the same text fails, naming each.
func TestSecretsOptional(t *testing.T) {
	const text = `
[server]
tls_cert_file = "/nonexistent/cert.pem"
tls_key_file = "/nonexistent/key.pem"

[admin]
token_env = "PIPELINED_CFGTEST_ADMIN_UNSET"

[[source]]
name = "crm"
path = "/hooks/crm"
auth = { type = "bearer", secret_env = "PIPELINED_CFGTEST_CRM_UNSET" }

[[source]]
name = "open"
path = "/hooks/open"
auth = { type = "none" }
`
	_, err := Parse("pipeline.toml", []byte(text))
	if err == nil {
		t.Fatal("Parse without the secrets = nil error, want one: serve needs them")
	}
	for _, want := range []string{"PIPELINED_CFGTEST_ADMIN_UNSET", "PIPELINED_CFGTEST_CRM_UNSET", "tls_cert_file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Parse error does not name %s:\n%v", want, err)
		}
	}

	c, err := ParseWith("pipeline.toml", []byte(text), &ParseOptions{SecretsOptional: true})
	if err != nil {
		t.Fatalf("ParseWith(SecretsOptional) = %v, want no error", err)
	}
	crm := c.Plan().Sources[0].Verifier
	verr := crm.Verify(http.Header{"Authorization": {"Bearer x"}}, nil, time.Now())
	var ae *auth.Error
	if !errors.As(verr, &ae) || !strings.Contains(verr.Error(), "PIPELINED_CFGTEST_CRM_UNSET") {
		t.Errorf("crm Verify = %v, want an *auth.Error naming PIPELINED_CFGTEST_CRM_UNSET", verr)
	}
	if crm.Name() != "bearer" {
		t.Errorf("crm Verifier.Name() = %q, want bearer", crm.Name())
	}
	if err := c.Plan().Sources[1].Verifier.Verify(http.Header{}, nil, time.Now()); err != nil {
		t.Errorf("open Verify = %v, want nil", err)
	}

	// A configuration wrong in another way is still refused.
	if _, err := ParseWith("pipeline.toml", []byte(strings.Replace(text, `type = "none"`, `type = "nope"`, 1)), &ParseOptions{SecretsOptional: true}); err == nil {
		t.Error("ParseWith(SecretsOptional) of an unknown auth type = nil error, want one")
	}
}
