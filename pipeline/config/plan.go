package config

import (
	"net/netip"

	"github.com/pipelined/pipelined/pipeline/auth"
	"github.com/pipelined/pipelined/pipeline/rules"
)

// Plan is a configuration compiled by [Config.Compile]: what the daemon
// serves, built once per load, so that serve, check, test and reload
// share the very same programs. Its programs, schemas and verifiers are
// safe for concurrent use; it holds no state (rate limiters are built from
// [Source.Rate] by whoever serves the plan).
type Plan struct {
	// TrustedProxies is server.trusted_proxies, parsed.
	TrustedProxies []netip.Prefix
	// AdminTrustedProxies is admin.trusted_proxies, parsed.
	AdminTrustedProxies []netip.Prefix
	// Sources are the compiled [[source]] tables, in file order.
	Sources []SourcePlan
	// Router evaluates every [[route]], in file order.
	Router *rules.Router
	// OrderKeys are the compiled delivery.order_key of the sinks that
	// set one, by sink name.
	OrderKeys map[string]*rules.Program
}

// SourcePlan is one [[source]], compiled.
type SourcePlan struct {
	// Verifier checks each request's authentication, built from the
	// secrets read at load.
	Verifier auth.Verifier
	// DedupKey is the compiled dedup_key, nil when there is none; then
	// DedupHeader, when set, names the header whose value is the dedup key
	// (webhook-id for Standard Webhooks).
	DedupKey    *rules.Program
	DedupHeader string
	// DeliveryHeader, when set, names the header that identifies one
	// delivery in the source's auth scheme (webhook-id for Standard
	// Webhooks), which the request log prints: see [auth.DeliveryHeader].
	DeliveryHeader string
	// Ignore is the compiled ignore rule, nil when there is none.
	Ignore *rules.Program
	// Accept is the compiled accept rule, nil when there is none.
	Accept *rules.Program
	// Schema is the compiled schema_file, nil when there is none.
	Schema *rules.Schema
	// Allow is allow_cidrs, parsed.
	Allow []netip.Prefix
	// DropHeaders are the lower-case names of the headers the source's
	// auth reads and of drop_headers: never stored nor shown to rules.
	DropHeaders []string
	// Redactor removes a url-token source's token from every header value
	// that holds it (auth.NewRedactor); nil for every other auth type.
	Redactor *auth.Redactor
}

// Plan returns the plan [Parse] compiled c into; nil for a Config that
// was not parsed (call [Config.Compile]).
func (c *Config) Plan() *Plan { return c.plan }
