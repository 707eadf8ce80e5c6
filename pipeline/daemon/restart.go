package daemon

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/pipelined/pipelined/pipeline/config"
)

// startOnly is a setting read only at start: the listeners, the log, the
// admin API's token and pages. A reload that changes one keeps the running
// value in the configuration it checks and stores, and warns, so that the
// stored configuration says what runs and the next reload warns again.
type startOnly struct {
	key string
	// backend, when set, limits the setting to a log backend: the one
	// running, as the log is opened only at start.
	backend string
	// value renders c's value; keep copies it from running to c.
	value func(c *config.Config) string
	keep  func(c, running *config.Config)
}

// field is a startOnly setting over one comparable field of the config.
func field[T comparable](key string, f func(*config.Config) *T) startOnly {
	return startOnly{
		key:   key,
		value: func(c *config.Config) string { return fmt.Sprint(*f(c)) },
		keep:  func(c, running *config.Config) { *f(c) = *f(running) },
	}
}

// on limits s to the log backend b.
func (s startOnly) on(b string) startOnly { s.backend = b; return s }

var startOnlySettings = []startOnly{
	field("server.listen", func(c *config.Config) *string { return &c.Server.Listen }),
	field("server.tls_cert_file", func(c *config.Config) *string { return &c.Server.TLSCertFile }),
	field("server.tls_key_file", func(c *config.Config) *string { return &c.Server.TLSKeyFile }),
	field("server.read_header_timeout", func(c *config.Config) *config.Duration { return &c.Server.ReadHeaderTimeout }),
	field("server.read_timeout", func(c *config.Config) *config.Duration { return &c.Server.ReadTimeout }),
	field("server.write_timeout", func(c *config.Config) *config.Duration { return &c.Server.WriteTimeout }),
	field("server.idle_timeout", func(c *config.Config) *config.Duration { return &c.Server.IdleTimeout }),
	field("server.max_header_bytes", func(c *config.Config) *config.Size { return &c.Server.MaxHeaderBytes }),
	field("server.max_conns_per_ip", func(c *config.Config) *int { return &c.Server.MaxConnsPerIP }),
	field("admin.listen", func(c *config.Config) *string { return &c.Admin.Listen }),
	field("admin.token_env", func(c *config.Config) *string { return &c.Admin.TokenEnv }),
	field("admin.token_file", func(c *config.Config) *string { return &c.Admin.TokenFile }),
	field("admin.pprof", func(c *config.Config) *bool { return &c.Admin.Pprof }),
	field("admin.ui", func(c *config.Config) *bool { return &c.Admin.UI }),
	field("admin.read_timeout", func(c *config.Config) *config.Duration { return &c.Admin.ReadTimeout }),
	field("admin.write_timeout", func(c *config.Config) *config.Duration { return &c.Admin.WriteTimeout }),
	field("admin.idle_timeout", func(c *config.Config) *config.Duration { return &c.Admin.IdleTimeout }),
	field("log.dir", func(c *config.Config) *string { return &c.Log.Dir }),
	field("log.backend", func(c *config.Config) *string { return &c.Log.Backend }),
	field("log.retention", func(c *config.Config) *config.Duration { return &c.Log.Retention }),
	field("log.memtable_size", func(c *config.Config) *config.Size { return &c.Log.MemtableSize }).on("badger"),
	{
		key: "log.urls", backend: "jetstream",
		value: func(c *config.Config) string { return strings.Join(c.Log.URLs, ",") },
		keep:  func(c, running *config.Config) { c.Log.URLs = running.Log.URLs },
	},
	field("log.stream", func(c *config.Config) *string { return &c.Log.Stream }).on("jetstream"),
	field("log.replicas", func(c *config.Config) *int { return &c.Log.Replicas }).on("jetstream"),
	field("log.creds_file", func(c *config.Config) *string { return &c.Log.CredsFile }).on("jetstream"),
	field("log.nkey_file", func(c *config.Config) *string { return &c.Log.NKeyFile }).on("jetstream"),
	field("log.tls_ca_file", func(c *config.Config) *string { return &c.Log.TLSCAFile }).on("jetstream"),
	field("log.tls_cert_file", func(c *config.Config) *string { return &c.Log.TLSCertFile }).on("jetstream"),
	field("log.tls_key_file", func(c *config.Config) *string { return &c.Log.TLSKeyFile }).on("jetstream"),
}

// startChange is a start-only setting that a reload changed.
type startChange struct {
	key, was, now string
	// inPart: the setting is read at start for one purpose and on every
	// reload for another (server.trusted_proxies); the new value is kept.
	inPart bool
}

// keepStartOnly puts back in cfg the running value of each start-only
// setting that cfg changes, and returns what it found changed: [telemetry]
// too (the tracer is set up at start only; its values are not shown),
// and server.trusted_proxies, which the ingest handler reads at every
// reload and the per-address connection limit (when there is one) only at
// start.
func keepStartOnly(cfg, running *config.Config) []startChange {
	var out []startChange
	for _, s := range startOnlySettings {
		if s.backend != "" && s.backend != running.Log.Backend {
			continue
		}
		if was, now := s.value(running), s.value(cfg); was != now {
			out = append(out, startChange{key: s.key, was: was, now: now})
			s.keep(cfg, running)
		}
	}
	if !reflect.DeepEqual(cfg.Telemetry, running.Telemetry) {
		out = append(out, startChange{key: "[telemetry]"})
		cfg.Telemetry = running.Telemetry
	}
	if was, now := strings.Join(running.Server.TrustedProxies, ","), strings.Join(cfg.Server.TrustedProxies, ","); was != now && running.Server.MaxConnsPerIP > 0 {
		out = append(out, startChange{key: "server.trusted_proxies", was: was, now: now, inPart: true})
	}
	return out
}

// warnStartOnly logs each change of a start-only setting that a reload
// made, once the reload is in force.
func (d *Daemon) warnStartOnly(changes []startChange) {
	for _, c := range changes {
		switch {
		case c.inPart:
			d.log.Warn("a changed setting takes effect in part: allow_cidrs believes the new proxies now, max_conns_per_ip exempts them only after a restart",
				"key", c.key, "running", c.was, "new", c.now)
		case c.key == "[telemetry]":
			d.log.Warn("[telemetry] changed; it takes effect when pipelined restarts (the tracer in force stays)")
		default:
			d.log.Warn("a changed setting takes effect only at restart", "key", c.key, "running", c.was, "new", c.now)
		}
	}
}
