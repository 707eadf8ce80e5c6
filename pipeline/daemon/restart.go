package daemon

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/pipelined/pipelined/pipeline/config"
)

// startOnly is a setting read only at start: the listeners, the log, the
// admin API's token and pages, the tracer. A reload that changes one keeps
// the running value in the configuration it checks and stores, and warns,
// so that the stored configuration says what runs and the next reload
// warns again.
type startOnly struct {
	key string
	// applies, when set, says whether the setting counts with the running
	// configuration (a log backend's keys, say).
	applies func(running *config.Config) bool
	// value renders c's value; keep copies it from running to c. keep is
	// nil for a setting read at start for one purpose and at every reload
	// for another (server.trusted_proxies): the new value is kept.
	value func(c *config.Config) string
	keep  func(c, running *config.Config)
	// warn is the message, with running and new values unless quiet.
	warn  string
	quiet bool
}

// restartWarning is the message of a setting that changes only at restart.
const restartWarning = "a changed setting takes effect only at restart"

// socketOwnedWarning is the message of a changed listen address whose
// listener systemd passes: the daemon never binds it, at a reload or at a
// restart.
const socketOwnedWarning = "a changed listen address cannot take effect: systemd passes this listener (socket activation) and its socket unit owns the address; change ListenStream= in the socket unit, then restart the socket unit and pipelined (a restart of pipelined alone keeps the socket)"

// field is a startOnly setting over one comparable field of the config.
func field[T comparable](key string, f func(*config.Config) *T) startOnly {
	return startOnly{
		key:   key,
		value: func(c *config.Config) string { return fmt.Sprint(*f(c)) },
		keep:  func(c, running *config.Config) { *f(c) = *f(running) },
		warn:  restartWarning,
	}
}

// on limits s to the log backend b.
func (s startOnly) on(b string) startOnly {
	s.applies = func(running *config.Config) bool { return running.Log.Backend == b }
	return s
}

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
	{ // the ingest handler reads it at every reload, the per-address connection limit only at start
		key:     "server.trusted_proxies",
		applies: func(running *config.Config) bool { return running.Server.MaxConnsPerIP > 0 },
		value:   func(c *config.Config) string { return strings.Join(c.Server.TrustedProxies, ",") },
		warn:    "a changed setting takes effect in part: allow_cidrs believes the new proxies now, max_conns_per_ip exempts them only after a restart",
	},
	field("admin.listen", func(c *config.Config) *string { return &c.Admin.Listen }),
	{
		key:   "admin.trusted_proxies",
		value: func(c *config.Config) string { return strings.Join(c.Admin.TrustedProxies, ",") },
		keep:  func(c, running *config.Config) { c.Admin.TrustedProxies = running.Admin.TrustedProxies },
		warn:  restartWarning,
	},
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
	startOnly{
		key:   "log.urls",
		value: func(c *config.Config) string { return strings.Join(c.Log.URLs, ",") },
		keep:  func(c, running *config.Config) { c.Log.URLs = running.Log.URLs },
		warn:  restartWarning,
	}.on("jetstream"),
	field("log.stream", func(c *config.Config) *string { return &c.Log.Stream }).on("jetstream"),
	field("log.replicas", func(c *config.Config) *int { return &c.Log.Replicas }).on("jetstream"),
	field("log.creds_file", func(c *config.Config) *string { return &c.Log.CredsFile }).on("jetstream"),
	field("log.nkey_file", func(c *config.Config) *string { return &c.Log.NKeyFile }).on("jetstream"),
	field("log.tls_ca_file", func(c *config.Config) *string { return &c.Log.TLSCAFile }).on("jetstream"),
	field("log.tls_cert_file", func(c *config.Config) *string { return &c.Log.TLSCertFile }).on("jetstream"),
	field("log.tls_key_file", func(c *config.Config) *string { return &c.Log.TLSKeyFile }).on("jetstream"),
	{ // the tracer is set up at start; its values are not shown
		key: "[telemetry]",
		value: func(c *config.Config) string {
			b, _ := json.Marshal(c.Telemetry) // sample_ratio by value, not its pointer
			return string(b)
		},
		keep:  func(c, running *config.Config) { c.Telemetry = running.Telemetry },
		warn:  "[telemetry] changed; it takes effect when pipelined restarts (the tracer in force stays)",
		quiet: true,
	},
}

// startChange is a start-only setting that a reload changed.
type startChange struct {
	s        *startOnly
	was, now string
}

// keepStartOnly puts back in cfg the running value of each start-only
// setting that cfg changes (but those read in part at reload) and returns
// what it found changed.
func keepStartOnly(cfg, running *config.Config) []startChange {
	var out []startChange
	for i := range startOnlySettings {
		s := &startOnlySettings[i]
		if s.applies != nil && !s.applies(running) {
			continue
		}
		if was, now := s.value(running), s.value(cfg); was != now {
			out = append(out, startChange{s: s, was: was, now: now})
			if s.keep != nil {
				s.keep(cfg, running)
			}
		}
	}
	return out
}

// warnStartOnly logs each change of a start-only setting that a reload
// made, once the reload is in force.
func (d *Daemon) warnStartOnly(changes []startChange) {
	for _, c := range changes {
		if d.socketOwned(c.s.key) {
			d.log.Warn(socketOwnedWarning, "key", c.s.key, "running", d.sockets[socketOf(c.s.key)].Addr().String(), "new", c.now)
			continue
		}
		if c.s.quiet {
			d.log.Warn(c.s.warn)
			continue
		}
		d.log.Warn(c.s.warn, "key", c.s.key, "running", c.was, "new", c.now)
	}
}
