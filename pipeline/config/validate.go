package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/pipelined/pipelined/pipeline/auth"
	"github.com/pipelined/pipelined/pipeline/rules"
)

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9_-]+$`)
	pluginRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	sourceRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	sha256RE = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	// headerNameRE is an RFC 9110 token, the syntax of a header name.
	headerNameRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// Compile checks the whole configuration and compiles it into the [Plan]
// that serve, check, test and reload share: every expression, schema and
// authentication check is built here, once. It returns errors.Join of
// every problem, each naming the key path and the fix (with
// file:line:col when the configuration came from [Parse]). [Parse] calls
// it; [Config.Plan] returns what it compiled.
func (c *Config) Compile() (*Plan, error) {
	p := &problems{c: c}
	plan := &Plan{}
	c.checkServer(p, plan)
	c.checkSources(p, plan)
	sinks := c.checkSinks(p)
	c.checkOrder(p, plan)
	c.checkRoutes(p, plan, sinks)
	c.checkTelemetry(p)
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return plan, nil
}

// Recheck compiles c again once a reload has put its settings read only at
// start back to their running values: it checks how those combine with the
// rest (an order_key needs the badger backend), not the files and secrets
// they name, which were read at start and are not read again (a rotated
// admin token's old file may be gone). The first Compile checked the rest.
func (c *Config) Recheck() error {
	was := c.secretsOptional
	c.secretsOptional = true
	defer func() { c.secretsOptional = was }()
	_, err := c.Compile()
	return err
}

// problems collects what is wrong with a configuration.
type problems struct {
	c    *Config
	errs []error
}

func (p *problems) add(err error) { p.errs = append(p.errs, err) }

// at adds a problem placed at the line of key in the idx-th table (-1: a
// plain table).
func (p *problems) at(table string, idx int, key, format string, args ...any) {
	p.add(p.c.errAt(p.c.lineOf(table, idx, key), format, args...))
}

// checkServer checks [server], [admin], [log] and [plugins]: listeners,
// limits, timeouts, TLS, trusted proxies, the admin token and the log
// backend.
func (c *Config) checkServer(p *problems, plan *Plan) {
	srv := c.Server
	if _, _, err := net.SplitHostPort(srv.Listen); err != nil {
		p.at("server", -1, "listen", "server.listen: %q is not host:port (write e.g. %q)", srv.Listen, DefaultListen)
	}
	if srv.MaxBody <= 0 {
		p.at("server", -1, "max_body", `server.max_body: must be more than 0 (write e.g. "1MiB")`)
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{
		{"read_header_timeout", srv.ReadHeaderTimeout}, {"read_timeout", srv.ReadTimeout},
		{"write_timeout", srv.WriteTimeout}, {"idle_timeout", srv.IdleTimeout},
		{"shutdown_timeout", srv.ShutdownTimeout},
	} {
		if d.v.Duration <= 0 {
			p.at("server", -1, d.key, `server.%s: must be more than 0 (write e.g. "30s")`, d.key)
		}
	}
	switch {
	case (srv.TLSCertFile == "") != (srv.TLSKeyFile == ""):
		p.at("server", -1, "tls_cert_file", "server: set both tls_cert_file and tls_key_file for HTTPS, or neither")
	case srv.TLSCertFile != "" && !c.secretsOptional:
		c.checkTLSFiles(p)
	}
	if srv.MaxHeaderBytes < 1<<10 {
		p.at("server", -1, "max_header_bytes", `server.max_header_bytes: must be at least 1KiB (default "64KiB")`)
	}
	if srv.MaxConnsPerIP < 0 {
		p.at("server", -1, "max_conns_per_ip", "server.max_conns_per_ip: must be 0 (no bound) or more (default 256)")
	}
	if srv.MaxConcurrent < 1 {
		p.at("server", -1, "max_concurrent", "server.max_concurrent: must be at least 1 (default 1024)")
	}
	if need := srv.MaxBody * DecodeCost; srv.MaxBodyMemory < need {
		// Else a body near max_body would be refused whenever any other
		// request is in flight.
		p.at("server", -1, "max_body_memory", "server.max_body_memory: %s is less than %d times max_body (%s), what one body may take to decode: raise it to at least %q or lower max_body",
			srv.MaxBodyMemory, DecodeCost, srv.MaxBody, need)
	}
	var err error
	if plan.TrustedProxies, err = ParsePrefixes(srv.TrustedProxies); err != nil {
		p.at("server", -1, "trusted_proxies", "server.trusted_proxies: %v", err)
	}
	if plan.AdminTrustedProxies, err = ParsePrefixes(c.Admin.TrustedProxies); err != nil {
		p.at("admin", -1, "trusted_proxies", "admin.trusted_proxies: %v", err)
	}

	if _, port, err := net.SplitHostPort(c.Admin.Listen); err != nil {
		p.at("admin", -1, "listen", "admin.listen: %q is not host:port (write e.g. %q)", c.Admin.Listen, DefaultAdminListen)
	} else if c.Admin.Listen == srv.Listen && port != "0" { // port 0: each listener gets its own
		p.at("admin", -1, "listen", "admin.listen: %q is also server.listen; the admin API never shares the ingest listener: use another port (default %q)", c.Admin.Listen, DefaultAdminListen)
	}
	if _, err := c.AdminToken(); err != nil && !c.secretsOptional {
		p.at("admin", -1, "token_env", "%v", err)
	} else if c.Admin.TokenEnv == "" && c.Admin.TokenFile == "" && !c.AdminOnLoopback() {
		p.at("admin", -1, "listen", "admin.listen: %q is not a loopback address and no admin token is set: set admin.token_env or admin.token_file, or listen on 127.0.0.1", c.Admin.Listen)
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{
		{"read_timeout", c.Admin.ReadTimeout}, {"write_timeout", c.Admin.WriteTimeout}, {"idle_timeout", c.Admin.IdleTimeout},
	} {
		if d.v.Duration <= 0 {
			p.at("admin", -1, d.key, `admin.%s: must be more than 0 (write e.g. "30s")`, d.key)
		}
	}

	if strings.TrimSpace(c.Log.Dir) == "" {
		p.at("log", -1, "dir", "log.dir: must not be empty (default %q)", DefaultLogDir)
	}
	if c.Log.Retention.Duration <= 0 {
		p.at("log", -1, "retention", `log.retention: must be more than 0 (write e.g. "168h" or "7d")`)
	}
	switch c.Log.Backend {
	case "badger":
		if c.Log.MemtableSize < MinMemtableSize || c.Log.MemtableSize > MaxMemtableSize {
			p.at("log", -1, "memtable_size", `log.memtable_size: %s is out of range: write from %q to %q (default %q)`,
				c.Log.MemtableSize, MinMemtableSize, MaxMemtableSize, DefaultMemtableSize)
		}
	case "jetstream":
		validateJetStream(c, p.at)
		if !c.secretsOptional {
			l := c.Log
			for _, f := range []struct{ key, path string }{{"creds_file", l.CredsFile}, {"nkey_file", l.NKeyFile},
				{"tls_ca_file", l.TLSCAFile}, {"tls_cert_file", l.TLSCertFile}, {"tls_key_file", l.TLSKeyFile}} {
				c.checkFile(p, "log", f.key, f.path)
			}
		}
	default:
		p.at("log", -1, "backend", `log.backend: unknown backend %q (write backend = "badger" or "jetstream")`, c.Log.Backend)
	}
	for _, d := range c.Plugins.Dirs {
		if strings.TrimSpace(d) == "" {
			p.at("plugins", -1, "dirs", "plugins.dirs: empty directory name (remove it)")
		}
	}
}

// checkSources checks every [[source]] and compiles what ingest serves
// for it into plan.Sources: its dedup_key and accept expressions, its
// schema, its allowed addresses and its authentication.
func (c *Config) checkSources(p *problems, plan *Plan) {
	names := map[string]bool{}
	paths := map[string]string{}
	plan.Sources = make([]SourcePlan, len(c.Sources))
	for i, s := range c.Sources {
		sp := &plan.Sources[i]
		what := fmt.Sprintf("source %q", s.Name)
		if s.Name == "" {
			what = fmt.Sprintf("source #%d", i+1)
			p.at("source", i, "", "%s: name: missing (write name = \"...\")", what)
		} else if !sourceRE.MatchString(s.Name) {
			p.at("source", i, "name", "%s: name: use only letters, digits, '.', '_' and '-'", what)
		} else if names[s.Name] {
			p.at("source", i, "name", "%s: name: defined twice (source names must be unique)", what)
		}
		names[s.Name] = true
		switch {
		case !strings.HasPrefix(s.Path, "/"):
			p.at("source", i, "path", "%s: path: %q must start with \"/\" (write e.g. path = \"/hooks/%s\")", what, s.Path, s.Name)
		case paths[s.Path] != "":
			p.at("source", i, "path", "%s: path: %q is already the path of source %q (paths must be unique)", what, s.Path, paths[s.Path])
		default:
			paths[s.Path] = s.Name
		}
		var err error
		if s.DedupKey != "" {
			if sp.DedupKey, err = rules.CompileValue(s.DedupKey); err != nil {
				p.add(c.exprErr("source", i, "dedup_key", what, err))
			}
		}
		if strings.TrimSpace(s.Ignore) != "" {
			if sp.Ignore, err = rules.CompileBool(s.Ignore); err != nil {
				p.add(c.exprErr("source", i, "ignore", what, err))
			}
		}
		if strings.TrimSpace(s.Accept) != "" {
			if sp.Accept, err = rules.CompileBool(s.Accept); err != nil {
				p.add(c.exprErr("source", i, "accept", what, err))
			}
		}
		if s.SchemaFile != "" {
			if sp.Schema, err = c.Schema(i); err != nil {
				p.at("source", i, "schema_file", "%s: schema_file: %v", what, err)
			}
		}
		if s.Burst < 0 {
			p.at("source", i, "burst", "%s: burst: must not be negative", what)
		}
		if s.Burst > 0 && s.Rate.PerSecond == 0 {
			p.at("source", i, "burst", `%s: burst: set rate too (e.g. rate = "100/s")`, what)
		}
		if sp.Allow, err = ParsePrefixes(s.AllowCIDRs); err != nil {
			p.at("source", i, "allow_cidrs", "%s: allow_cidrs: %v", what, err)
		}
		if s.Auth.Type == "" {
			p.at("source", i, "auth", "%s: auth: missing; write it explicitly, e.g. auth = { type = \"none\" } or { type = \"standard-webhooks\", secret_env = \"CALLKARO_WEBHOOK_SECRET\" }", what)
			continue
		}
		spec, err := c.AuthSpec(i)
		switch {
		case err != nil && c.secretsOptional:
			sp.Verifier = missingSecret{scheme: spec.Type, reason: fmt.Sprintf(
				"source %s's secret is not available to pipelined test (%v): set it in the test file's env, at the top or in this case, to test signed requests", s.Name, err)}
		case err == nil:
			sp.Verifier, err = auth.New(spec)
		}
		if err != nil && sp.Verifier == nil {
			p.at("source", i, "auth", "%s: auth: %v", what, err)
		}
		if s.DedupKey == "" {
			sp.DedupHeader = auth.DedupHeader(spec)
		}
		sp.DeliveryHeader = auth.DeliveryHeader(spec)
		sp.Redactor = auth.NewRedactor(spec)
		if h := auth.SecretHeader(spec); h != "" {
			sp.DropHeaders = append(sp.DropHeaders, strings.ToLower(h))
		}
		for _, h := range s.DropHeaders {
			if !headerNameRE.MatchString(h) {
				p.at("source", i, "drop_headers", "%s: drop_headers: %q is not a header name", what, h)
				continue
			}
			sp.DropHeaders = append(sp.DropHeaders, strings.ToLower(h))
		}
	}
}

// checkSinks checks every [[sink]] and returns the names defined.
func (c *Config) checkSinks(p *problems) map[string]bool {
	sinks := map[string]bool{}
	for i, s := range c.Sinks {
		what := fmt.Sprintf("sink %q", s.Name)
		switch {
		case s.Name == "":
			what = fmt.Sprintf("sink #%d", i+1)
			p.at("sink", i, "", "%s: name: missing (write name = \"...\")", what)
		case !nameRE.MatchString(s.Name):
			p.at("sink", i, "name", "%s: name: use only a-z, 0-9, '_' and '-'", what)
		case sinks[s.Name]:
			p.at("sink", i, "name", "%s: name: defined twice (sink names must be unique)", what)
		}
		sinks[s.Name] = true
		switch {
		case s.Plugin == "" && s.Command == "":
			p.at("sink", i, "", "%s: set plugin = \"name\" (binary pipelined-sink-name) or command = \"/path/to/binary\"", what)
		case s.Plugin != "" && s.Command != "":
			p.at("sink", i, "command", "%s: plugin and command are both set; keep one", what)
		case s.Plugin != "" && !pluginRE.MatchString(s.Plugin):
			p.at("sink", i, "plugin", "%s: plugin: %q is not a plugin name (a-z, 0-9, '_', '-'; the binary is pipelined-sink-<plugin>; use command for a path)", what, s.Plugin)
		}
		if s.SHA256 != "" && !sha256RE.MatchString(s.SHA256) {
			p.at("sink", i, "sha256", "%s: sha256: must be 64 hex characters (the output of sha256sum) or empty", what)
		}
		d := s.Delivery
		if d.BatchMax < 1 || d.BatchMax > 10000 {
			p.at("sink", i, "batch_max", "%s: delivery.batch_max: %d is out of range 1..10000", what, d.BatchMax)
		}
		if d.MaxAttempts < 0 {
			p.at("sink", i, "max_attempts", "%s: delivery.max_attempts: must be 0 (no limit: max_age decides) or more", what)
		}
		if d.BreakerFailures < 1 {
			p.at("sink", i, "breaker_failures", "%s: delivery.breaker_failures: must be at least 1 (default 5)", what)
		}
		if d.BreakerProbeMax.Duration < 0 {
			p.at("sink", i, "breaker_probe_max", "%s: delivery.breaker_probe_max: must be more than 0 (default 5m)", what)
		}

		if d.BackoffMin.Duration <= 0 {
			p.at("sink", i, "backoff_min", "%s: delivery.backoff_min: must be more than 0", what)
		} else if d.BackoffMax.Duration < d.BackoffMin.Duration {
			p.at("sink", i, "backoff_max", "%s: delivery.backoff_max: %v is less than backoff_min %v", what, d.BackoffMax.Duration, d.BackoffMin.Duration)
		}
	}
	delete(sinks, "")
	return sinks
}

// checkRoutes checks every [[route]] against the sinks defined and
// compiles the routes into plan.Router. A when written the same way in
// several routes is compiled once.
func (c *Config) checkRoutes(p *problems, plan *Plan, sinks map[string]bool) {
	defined := "none"
	if len(sinks) > 0 {
		defined = strings.Join(slices.Sorted(maps.Keys(sinks)), ", ")
	}
	routes := map[string]bool{}
	whens := map[string]*rules.Program{}
	compiled := make([]rules.CompiledRoute, 0, len(c.Routes))
	for i, r := range c.Routes {
		what := fmt.Sprintf("route %q", r.Name)
		if r.Name == "" {
			what = fmt.Sprintf("route #%d", i+1)
			p.at("route", i, "", "%s: name: missing (write name = \"...\")", what)
		} else if routes[r.Name] {
			p.at("route", i, "name", "%s: name: defined twice (route names must be unique)", what)
		}
		routes[r.Name] = true
		cr := rules.CompiledRoute{Name: r.Name, To: r.To}
		var err error
		switch {
		case strings.TrimSpace(r.When) == "":
			p.at("route", i, "", "%s: when: missing (write when = 'true' to route every event)", what)
		case whens[r.When] != nil:
			cr.When = whens[r.When]
		default:
			if cr.When, err = rules.CompileBool(r.When); err != nil {
				p.add(c.exprErr("route", i, "when", what, err))
			}
			whens[r.When] = cr.When
		}
		if r.Transform != "" {
			if cr.Transform, err = rules.CompileValue(r.Transform); err != nil {
				p.add(c.exprErr("route", i, "transform", what, err))
			}
		}
		compiled = append(compiled, cr)
		if len(r.To) == 0 {
			p.at("route", i, "", "%s: to: missing (write to = [\"sink-name\"])", what)
		}
		seen := map[string]bool{}
		for _, to := range r.To {
			switch {
			case !sinks[to]:
				p.at("route", i, "to", "%s: to: unknown sink %q (defined sinks: %s)", what, to, defined)
			case seen[to]:
				p.at("route", i, "to", "%s: to: sink %q listed twice", what, to)
			}
			seen[to] = true
		}
	}
	if len(p.errs) == 0 {
		plan.Router = rules.NewRouterOf(compiled)
	}
}

// exprErr places an expression's compile error in the file.
func (c *Config) exprErr(table string, idx int, key, what string, err error) error {
	var se *rules.SyntaxError
	if errors.As(err, &se) {
		l, col := c.exprPos(table, idx, key, se.Line, se.Column)
		if l > 0 && col > 0 {
			return c.errAtCol(l, col, "%s: %s: %s", what, key, se.Msg)
		}
		return c.errAt(l, "%s: %s: %s (%d:%d in the expression)", what, key, se.Msg, se.Line, se.Column)
	}
	return c.errAt(c.lineOf(table, idx, key), "%s: %s: %v", what, key, err)
}

// missingSecret is the verifier of a source whose secrets were not there
// when a configuration was parsed with [ParseOptions.SecretsOptional]: it
// refuses every request, saying which secret to set.
type missingSecret struct {
	scheme string
	reason string
}

func (m missingSecret) Verify(http.Header, []byte, time.Time) error {
	return &auth.Error{Reason: m.reason}
}

func (m missingSecret) Name() string { return m.scheme }
