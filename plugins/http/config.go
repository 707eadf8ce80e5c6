package http

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/pipelined/pipelined/sdk"
)

// config is the sink's config table as written in pipeline.toml, and the
// one description of it: describe is built from its tags and
// defaultConfig. The key names are a contract with users' configs: add
// keys, never rename them.
type config struct {
	// URL is where events go (http or https). It may carry a token in its
	// query; only scheme://host/path is ever logged. Exactly one of URL,
	// URLEnv and URLFile is set.
	URL     string `json:"url" doc:"Required unless url_env or url_file is set. The receiver's http or https address; it may carry a token in its query (only scheme://host/path is logged). When the whole URL is secret, set url_env or url_file instead."`
	URLEnv  string `json:"url_env" doc:"Environment variable holding the whole URL, instead of \"url\"."`
	URLFile string `json:"url_file" doc:"File holding the whole URL (e.g. a systemd credential), instead of \"url\"."`
	// Method is POST, PUT or PATCH.
	Method string `json:"method" doc:"POST, PUT or PATCH."`
	// Headers are static header values sent with every request (not secrets).
	Headers map[string]string `json:"headers" doc:"Static header values sent with every request; not for secrets (use header_env)."`
	// HeaderEnv maps a header name to the environment variable holding its
	// value (Authorization, X-Api-Key); read once, at Configure.
	HeaderEnv map[string]string `json:"header_env" doc:"Header name to the environment variable holding its value, for secret headers such as Authorization; read when the sink starts."`
	// Timeout bounds one request, response included.
	Timeout sdk.Duration `json:"timeout" doc:"Limit for one request, response included; a request that passes it is retried."`
	// Body is "payload" (Event.Payload) or "envelope" (a JSON object with
	// the event's metadata).
	Body string `json:"body" doc:"\"payload\": the route's transform output, else the body as received. \"envelope\": a JSON object {id, source, route, received_at, attempt, body, payload (when transformed)}."`
	// ContentType is the Content-Type header of every request.
	ContentType string `json:"content_type" doc:"Content-Type of every request."`
	// Concurrency is how many events of a batch are in flight at once.
	Concurrency int `json:"concurrency" doc:"Events of a batch in flight at once; 1 sends them in order, one at a time."`
	// MaxIdleConns is how many idle keep-alive connections are kept; 0
	// means as many as Concurrency.
	MaxIdleConns int `json:"max_idle_conns" default:"0" doc:"Idle keep-alive connections kept to the receiver; 0 means as many as concurrency."`
	// Secret describes the Standard Webhooks signing secret, which is
	// never written inline (DecodeConfig refuses "secret"); SecretEnv and
	// SecretFile, declared on their own because each may list several,
	// say where it is, and parseConfig reads them.
	Secret string `json:"secret" secret:"true" doc:"Standard Webhooks signing secret (\"whsec_...\"), via secret_env or secret_file; when set, requests carry webhook-timestamp and webhook-signature."`
	// SecretEnv / SecretFile name the Standard Webhooks signing secret
	// ("whsec_..."), or several (new first, then old, during a rotation):
	// every request then carries one signature per secret. With neither,
	// requests are not signed.
	SecretEnv  stringList `json:"secret_env" type:"string or []string" doc:"Environment variable holding the signing secret, or a list of them ([\"NEW\", \"OLD\"] while a receiver rotates): each request then carries one signature per secret in its webhook-signature header."`
	SecretFile stringList `json:"secret_file" type:"string or []string" doc:"File holding the signing secret (e.g. a systemd credential), or a list of files, like secret_env."`
	// TLSCAFile is a PEM file of the CAs that sign the receiver's
	// certificate, instead of the system's roots (a private CA).
	TLSCAFile string `json:"tls_ca_file" doc:"PEM file of the CA certificate(s) that sign the receiver's certificate, instead of the system's roots (a private CA)."`
	// TLSCertFile and TLSKeyFile are the PEM client certificate and key
	// sent to a receiver that requires mutual TLS; both or neither.
	TLSCertFile string `json:"tls_cert_file" doc:"PEM client certificate for a receiver that requires mutual TLS; set with tls_key_file."`
	TLSKeyFile  string `json:"tls_key_file" doc:"PEM private key of tls_cert_file."`
	// PermanentStatus lists the statuses that fail an event for good (the
	// dead-letter queue); every other 4xx and 5xx is retried.
	PermanentStatus []int `json:"permanent_status" doc:"Statuses (400 to 599) that send the event to the dead-letter queue at once: those that refuse the event itself. Every other 4xx and 5xx is retried, so an expired token's 401 or a moved endpoint's 404 waits like an outage; [] retries them all; 429 is always retried."`
}

// stringList is a config value written as one string or a list of them.
type stringList []string

// UnmarshalJSON reads a string or an array of strings.
func (l *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = stringList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("want a string or an array of strings")
	}
	*l = many
	return nil
}

// Body modes.
const (
	bodyPayload  = "payload"
	bodyEnvelope = "envelope"
)

// maxConcurrency bounds the concurrency key.
const maxConcurrency = 256

// settings is a validated config, secrets resolved.
type settings struct {
	url          *url.URL
	method       string
	header       http.Header // static and secret headers, canonical names
	secretValues []string    // values read from the environment or files, for scrubbing
	timeout      time.Duration
	envelope     bool
	contentType  string
	concurrency  int
	maxIdleConns int
	signers      []*standardwebhooks.Webhook // none: unsigned; else one signature each
	tls          *tls.Config                 // nil: the system's roots, no client certificate
	permanent    map[int]bool                // statuses that fail an event for good
}

func defaultConfig() config {
	return config{
		Method:      http.MethodPost,
		Timeout:     sdk.Duration(10 * time.Second),
		Body:        bodyPayload,
		ContentType: "application/json",
		Concurrency: 1,
		// A copy: the config is decoded over it.
		PermanentStatus: slices.Clone(defaultPermanentStatus),
	}
}

// reservedHeaders are set by the sink itself and may not be configured.
var reservedHeaders = map[string]string{
	"Content-Type":      `use the "content_type" key`,
	"Content-Length":    "it is computed from the body",
	"Host":              `it comes from "url"`,
	"Webhook-Id":        "it is the event id, set by the sink",
	"Webhook-Timestamp": "it is set by the sink when signing",
	"Webhook-Signature": "it is set by the sink when signing",
}

// parseConfig decodes raw over the defaults, validates it and reads the
// secrets it names, reporting every problem, each naming its key and the
// fix. Errors never contain a secret value. It opens no connection.
func parseConfig(raw json.RawMessage) (settings, error) {
	c := defaultConfig()
	var s settings
	var errs []error
	if err := sdk.DecodeConfig(raw, &c); err != nil {
		errs = append(errs, err) // and go on: report every problem at once
	}
	errs = s.target(c, errs)
	errs = s.headers(c, errs)
	errs = s.request(c, errs)
	errs = s.secrets(c, errs)
	s.permanent, errs = permanentStatuses(c.PermanentStatus, errs)

	if t, err := tlsConfig(c); err != nil {
		errs = append(errs, err)
	} else {
		s.tls = t
	}

	if len(errs) > 0 {
		return settings{}, errors.Join(errs...)
	}
	return s, nil
}

// target sets the receiver's URL from url, url_env or url_file (exactly
// one), appending a problem to errs for each thing wrong with it; the
// parts of a URL that may be secret join secretValues.
func (s *settings) target(c config, errs []error) []error {
	var rawURL string
	switch {
	case c.URL != "" && (c.URLEnv != "" || c.URLFile != ""):
		errs = append(errs, errors.New(`set only one of "url", "url_env" and "url_file"`))
	case c.URL != "":
		rawURL = c.URL
	case c.URLEnv != "" || c.URLFile != "":
		v, err := sdk.Secret("url", c.URLEnv, c.URLFile)
		if err != nil {
			errs = append(errs, err)
		} else {
			rawURL = strings.TrimSpace(v)
			s.secretValues = append(s.secretValues, rawURL)
		}
	default:
		errs = append(errs, errors.New(`config key "url" is required: set it to the receiver's address, e.g. url = "https://crm.example.com/hooks/pipelined" (or url_env / url_file when the whole URL is secret)`))
	}
	if rawURL != "" {
		u, err := url.Parse(rawURL)
		switch {
		case err != nil:
			// url.Parse errors quote the input, which may be secret.
			errs = append(errs, errors.New(`config key "url" is not a valid URL: write e.g. "https://crm.example.com/hooks/pipelined"`))
		case u.Scheme != "http" && u.Scheme != "https":
			errs = append(errs, fmt.Errorf(`config key "url" has scheme %q: use http or https`, u.Scheme))
		case u.Host == "":
			errs = append(errs, errors.New(`config key "url" has no host: write e.g. "https://crm.example.com/hooks/pipelined"`))
		default:
			s.url = u
			if u.RawQuery != "" {
				// The whole query, and each value on its own: a receiver
				// may echo one parameter, or the query re-encoded.
				s.secretValues = append(s.secretValues, u.RawQuery)
				for _, vs := range u.Query() {
					s.secretValues = append(s.secretValues, vs...)
				}
			}
			if p, ok := u.User.Password(); ok {
				s.secretValues = append(s.secretValues, p)
			}
		}
	}
	return errs
}

// headers sets the fixed headers of every request, from headers and
// header_env (whose values are secret), appending a problem to errs for
// each one that cannot be sent.
func (s *settings) headers(c config, errs []error) []error {
	s.header = http.Header{}
	for _, name := range sortedNames(c.Headers) {
		if err := checkHeader("headers", name, c.Headers[name]); err != nil {
			errs = append(errs, err)
			continue
		}
		s.header.Set(name, c.Headers[name])
	}
	for _, name := range sortedNames(c.HeaderEnv) {
		envVar := c.HeaderEnv[name]
		if err := checkHeader("header_env", name, ""); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, dup := c.Headers[name]; dup || len(s.header.Values(name)) > 0 {
			errs = append(errs, fmt.Errorf(`header %q is set in both "headers" and "header_env": keep one`, name))
			continue
		}
		if envVar == "" {
			errs = append(errs, fmt.Errorf(`config key "header_env" header %q: name the environment variable that holds its value`, name))
			continue
		}
		v, ok := os.LookupEnv(envVar)
		if !ok || v == "" {
			errs = append(errs, fmt.Errorf(`config key "header_env" header %q: environment variable %s is not set (or empty) for the daemon`, name, envVar))
			continue
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			errs = append(errs, fmt.Errorf(`config key "header_env" header %q: environment variable %s holds a line break or NUL, which no header value may contain`, name, envVar))
			continue
		}
		s.header.Set(name, v)
		s.secretValues = append(s.secretValues, v)
		if _, cred, ok := strings.Cut(v, " "); ok { // "Bearer <token>": the token alone too
			s.secretValues = append(s.secretValues, strings.TrimSpace(cred))
		}
	}
	return errs
}

// request sets the method, timeout, body, content type and connection
// limits, appending a problem to errs for each value out of range.
func (s *settings) request(c config, errs []error) []error {
	s.method = strings.ToUpper(c.Method)
	switch s.method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
	default:
		errs = append(errs, fmt.Errorf(`config key "method" = %q: use "POST", "PUT" or "PATCH"`, c.Method))
	}

	s.timeout = time.Duration(c.Timeout)
	if s.timeout <= 0 {
		errs = append(errs, errors.New(`config key "timeout" must be positive, e.g. "10s"`))
	}

	switch c.Body {
	case bodyPayload:
	case bodyEnvelope:
		s.envelope = true
	default:
		errs = append(errs, fmt.Errorf(`config key "body" = %q: use "payload" (the route's transform output, else the body as received) or "envelope" (a JSON object with id, source, route, received_at, attempt, body, payload)`, c.Body))
	}

	s.contentType = c.ContentType
	if strings.TrimSpace(c.ContentType) == "" || strings.ContainsAny(c.ContentType, "\r\n\x00") {
		errs = append(errs, errors.New(`config key "content_type" must be a media type, e.g. "application/json"`))
	}

	s.concurrency = c.Concurrency
	if c.Concurrency < 1 || c.Concurrency > maxConcurrency {
		errs = append(errs, fmt.Errorf(`config key "concurrency" = %d: use 1 (in order, one at a time) up to %d`, c.Concurrency, maxConcurrency))
	}
	s.maxIdleConns = c.MaxIdleConns
	if c.MaxIdleConns < 0 {
		errs = append(errs, fmt.Errorf(`config key "max_idle_conns" = %d: use 0 (as many as concurrency) or more`, c.MaxIdleConns))
	}
	if s.maxIdleConns == 0 {
		s.maxIdleConns = max(s.concurrency, 1)
	}
	return errs
}

// secrets sets the signers of secret_env or secret_file, appending a
// problem to errs for each secret that cannot be read or used.
func (s *settings) secrets(c config, errs []error) []error {
	switch {
	case len(c.SecretEnv) > 0 && len(c.SecretFile) > 0:
		errs = append(errs, errors.New("set only one of secret_env and secret_file (either may list several secrets)"))
	case len(c.SecretEnv) > maxSecrets || len(c.SecretFile) > maxSecrets:
		errs = append(errs, fmt.Errorf("secret_env / secret_file list more than %d secrets: keep the new and the old one while receivers rotate", maxSecrets))
	default:
		for i := range max(len(c.SecretEnv), len(c.SecretFile)) {
			var env, file string
			if i < len(c.SecretEnv) {
				env = c.SecretEnv[i]
			}
			if i < len(c.SecretFile) {
				file = c.SecretFile[i]
			}
			if env == "" && file == "" {
				errs = append(errs, fmt.Errorf("secret_env / secret_file entry %d is empty: name an environment variable or a file", i+1))
				continue
			}
			secret, err := sdk.Secret("secret", env, file)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			s.secretValues = append(s.secretValues, secret, strings.TrimPrefix(secret, "whsec_"))
			if w, err := newSigner(secret); err != nil {
				errs = append(errs, err)
			} else {
				s.signers = append(s.signers, w)
			}
		}
	}
	return errs
}

// permanentStatuses checks the permanent_status list and makes its set,
// appending a problem to errs for each code that cannot be in it.
func permanentStatuses(codes []int, errs []error) (map[int]bool, []error) {
	const key = `config key "permanent_status"`
	set := make(map[int]bool, len(codes))
	for _, code := range codes {
		switch {
		case set[code]:
			errs = append(errs, fmt.Errorf("%s lists %d twice: keep one", key, code))
		case code >= 200 && code < 300:
			errs = append(errs, fmt.Errorf("%s lists %d: a 2xx answer is a delivery, never a failure; list statuses from 400 to 599", key, code))
		case code >= 300 && code < 400:
			errs = append(errs, fmt.Errorf("%s lists %d: a redirect is not followed and always retried, its error naming the Location to set url to; list statuses from 400 to 599", key, code))
		case code == http.StatusTooManyRequests:
			errs = append(errs, fmt.Errorf("%s lists 429: 429 Too Many Requests asks to slow down and is always retried, after its Retry-After; remove it", key))
		case code < 400 || code > 599:
			errs = append(errs, fmt.Errorf("%s lists %d: list statuses from 400 to 599, e.g. [400, 413, 422]", key, code))
		}
		set[code] = true
	}
	return set, errs
}

// maxSecrets bounds how many signing secrets may be listed.
const maxSecrets = 4

// tlsConfig builds the client TLS config the tls_* keys ask for; nil when
// none is set. Errors name the key and the file, never its contents.
func tlsConfig(c config) (*tls.Config, error) {
	if c.TLSCAFile == "" && c.TLSCertFile == "" && c.TLSKeyFile == "" {
		return nil, nil
	}
	var errs []error
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("config key \"tls_ca_file\": %w", err))
		default:
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf(`config key "tls_ca_file": %s holds no PEM certificate: give the CA certificate(s) that sign the receiver's certificate`, c.TLSCAFile))
			}
			t.RootCAs = pool
		}
	}
	switch {
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		errs = append(errs, errors.New(`set both "tls_cert_file" and "tls_key_file" (the client certificate and its key, PEM) or neither`))
	case c.TLSCertFile != "":
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			// The error of LoadX509KeyPair names what is wrong, not the key's bytes.
			errs = append(errs, fmt.Errorf(`config keys "tls_cert_file" / "tls_key_file": load %s and %s: %w`, c.TLSCertFile, c.TLSKeyFile, err))
		} else {
			t.Certificates = []tls.Certificate{cert}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

// newSigner checks a Standard Webhooks secret and makes its signer. Errors
// never contain the secret.
func newSigner(secret string) (*standardwebhooks.Webhook, error) {
	const fix = `: a Standard Webhooks secret is "whsec_" followed by base64 of 24 to 64 random bytes`
	rest, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return nil, errors.New(`the signing secret (secret_env / secret_file) does not start with "whsec_"` + fix)
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil || len(key) == 0 {
		return nil, errors.New(`the signing secret (secret_env / secret_file) is not valid base64 after "whsec_"` + fix)
	}
	w, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return nil, errors.New(`the signing secret (secret_env / secret_file) is invalid` + fix)
	}
	return w, nil
}

// checkHeader validates a configured header name and value.
func checkHeader(key, name, value string) error {
	if !validToken(name) {
		return fmt.Errorf(`config key %q: %q is not a valid header name`, key, name)
	}
	if why, ok := reservedHeaders[http.CanonicalHeaderKey(name)]; ok {
		return fmt.Errorf(`config key %q: header %q cannot be set here: %s`, key, name, why)
	}
	if strings.ContainsAny(value, "\r\n\x00") {
		return fmt.Errorf(`config key %q: header %q has a line break or NUL in its value`, key, name)
	}
	return nil
}

// validToken reports whether s is an HTTP token (RFC 9110), as header names are.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("!#$%&'*+-.^_`|~", r):
		default:
			return false
		}
	}
	return true
}

func sortedNames(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// describe lists every config key, from the config struct; it is the
// contract of this sink's config.
func describe() sdk.Description {
	return sdk.DescribeConfig("Forwards each event to a URL over HTTP(S), optionally signed with Standard Webhooks.", defaultConfig())
}
