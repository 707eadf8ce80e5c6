// Package config decodes pipeline.toml strictly into plain structs, applies
// defaults, checks the result and compiles it, once, into the [Plan] that
// serve, check, test and reload share (every expression, schema and auth
// check). It reports every problem at once with the file, line and (for
// expressions) column, the key path and the fix.
//
// Parse sets the defaults first and decodes over them; elements of the
// [[source]] and [[sink]] arrays get their defaults after decoding, in place
// of zero values. Unknown keys are errors, and so are keys spelled with a
// different case than documented (the TOML decoder would otherwise accept
// "LISTEN" for "listen"). The tables under sink.config are free-form: they
// are handed to the plugin as they are.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the whole of pipeline.toml.
type Config struct {
	Server  Server   `toml:"server"`
	Admin   Admin    `toml:"admin"`
	Log     Log      `toml:"log"`
	Plugins Plugins  `toml:"plugins"`
	Sources []Source `toml:"source"`
	Sinks   []Sink   `toml:"sink"`
	Routes  []Route  `toml:"route"`
	// Telemetry configures tracing; see [Telemetry].
	Telemetry Telemetry `toml:"telemetry"`

	// File is the file the configuration came from, used in messages.
	File string `toml:"-"`

	// files, when set, is where relative schema_file paths are read from
	// instead of the directory of File (the built-in configuration).
	files fs.FS
	// base is the absolute directory of File, which relative paths resolve
	// against; empty for the built-in configuration (the working directory).
	base string

	src []byte // the TOML text, to find lines for messages

	plan *Plan // what Parse compiled
	// secretsOptional: see [ParseOptions.SecretsOptional].
	secretsOptional bool
}

// Server configures the ingest listener.
type Server struct {
	Listen            string   `toml:"listen"`
	MaxBody           Size     `toml:"max_body"`
	ReadHeaderTimeout Duration `toml:"read_header_timeout"`
	ReadTimeout       Duration `toml:"read_timeout"`
	WriteTimeout      Duration `toml:"write_timeout"`
	IdleTimeout       Duration `toml:"idle_timeout"`
	ShutdownTimeout   Duration `toml:"shutdown_timeout"`
	// TLSCertFile and TLSKeyFile, when set, serve HTTPS (TLS 1.2 at least);
	// the pair is read again when either file changes, and on SIGHUP.
	TLSCertFile string `toml:"tls_cert_file"`
	TLSKeyFile  string `toml:"tls_key_file"`
	// MaxHeaderBytes bounds a request's header block.
	MaxHeaderBytes Size `toml:"max_header_bytes"`
	// MaxConcurrent bounds the requests handled at once; more are answered
	// 503 with Retry-After.
	MaxConcurrent int `toml:"max_concurrent"`
	// MaxBodyMemory bounds the memory that the bodies of the authenticated
	// requests in flight may take together, read and decoded for the
	// rules: each is counted at ingest.DecodeCost times its length, the
	// most that decoding it can take. A request over it is answered 503
	// with Retry-After. Default 256 MiB.
	MaxBodyMemory Size `toml:"max_body_memory"`
	// MaxConnsPerIP bounds the open ingest connections of one client
	// address (an IPv6 /64 counts as one); more are closed as soon as they
	// are accepted. Addresses in TrustedProxies are not bounded. 0 means no
	// bound. Default 256.
	MaxConnsPerIP int `toml:"max_conns_per_ip"`
	// TrustedProxies lists the addresses (CIDRs) of reverse proxies whose
	// X-Forwarded-For header is believed, for allow_cidrs.
	TrustedProxies []string `toml:"trusted_proxies"`
	// LogRequests logs one line per accepted or duplicate webhook at INFO;
	// refusals are logged either way, rate-limited per source and reason.
	LogRequests bool `toml:"log_requests"`
}

// Admin configures the admin listener, which never shares the ingest one.
type Admin struct {
	Listen string `toml:"listen"`
	// TokenEnv or TokenFile holds the bearer token that every call under
	// /v1/ and /debug/ needs (/healthz, /readyz and /metrics are open).
	// Without one, the admin listener must be on loopback.
	TokenEnv  string `toml:"token_env"`
	TokenFile string `toml:"token_file"`
	// Pprof serves Go's profiler under /debug/pprof/ (default false).
	Pprof bool `toml:"pprof"`
	// UI serves the web UI, the event inspector, under /ui/ (default
	// true); GET / redirects there.
	UI bool `toml:"ui"`
	// ReadTimeout, WriteTimeout and IdleTimeout bound how long one admin
	// connection may take to send a request, to take an answer (a replay's
	// stream excepted), and to sit idle between requests.
	ReadTimeout  Duration `toml:"read_timeout"`
	WriteTimeout Duration `toml:"write_timeout"`
	IdleTimeout  Duration `toml:"idle_timeout"`
	// TrustedProxies lists the reverse proxies (CIDRs) in front of the
	// admin listener whose X-Forwarded-For is believed: wrong tokens are
	// then counted per client behind the proxy, not per proxy.
	TrustedProxies []string `toml:"trusted_proxies"`
}

// Log configures the durable event log.
type Log struct {
	Dir       string   `toml:"dir"`
	Retention Duration `toml:"retention"`
	// Backend is "badger" (the default: an embedded store in Dir) or
	// "jetstream" (a NATS JetStream stream shared by several daemons; see
	// docs/jetstream.md). The keys below MemtableSize are read only for
	// "jetstream".
	Backend string `toml:"backend"`
	// MemtableSize is the size of the badger backend's memtables
	// (default 16 MiB, from 16 to 256 MiB). Larger makes fewer and longer
	// flushes to disk: a lower p99 under sustained load, for memory: each
	// memtable takes ~1.3 times its size of heap, two are in use and up to
	// four while flushes fall behind (docs/performance.md, "Seventh
	// round"). Read at start, only with backend = "badger".
	MemtableSize Size `toml:"memtable_size"`

	// URLs are the NATS servers, e.g. ["nats://10.0.0.1:4222", ...].
	URLs []string `toml:"urls"`
	// Stream names the stream and prefixes its subjects (default "PIPELINED").
	Stream string `toml:"stream"`
	// Replicas is the stream's replica count: 1 or 3 (default 1).
	Replicas int `toml:"replicas"`
	// CredsFile is a NATS credentials file; NKeyFile a file with an NKey
	// seed. At most one of them.
	CredsFile string `toml:"creds_file"`
	NKeyFile  string `toml:"nkey_file"`
	// TLSCAFile verifies the servers; TLSCertFile and TLSKeyFile are the
	// client certificate, both or neither.
	TLSCAFile   string `toml:"tls_ca_file"`
	TLSCertFile string `toml:"tls_cert_file"`
	TLSKeyFile  string `toml:"tls_key_file"`
}

// Plugins says where sink plugin binaries are looked for.
type Plugins struct {
	Dirs []string `toml:"dirs"`
}

// Source is one [[source]]: a path that receives webhooks.
type Source struct {
	Name string `toml:"name"`
	Path string `toml:"path"`
	// DedupKey is an expression over the event; empty means no dedup.
	DedupKey    string   `toml:"dedup_key"`
	DedupWindow Duration `toml:"dedup_window"`
	Auth        Auth     `toml:"auth"`
	// Rate limits the authenticated requests of the source ("100/s",
	// "6000/m"); over it, requests are answered 429 with Retry-After.
	// Empty means no limit. Burst is the bucket size (default: one
	// second's worth).
	Rate  Rate `toml:"rate"`
	Burst int  `toml:"burst"`
	// AllowCIDRs, when set, refuses (403) requests from other addresses.
	AllowCIDRs []string `toml:"allow_cidrs"`
	// Accept is an expression that must be true for an event to be
	// accepted; false (or an error) is answered 422. Empty accepts all.
	Accept string `toml:"accept"`
	// Ignore is an expression evaluated after authentication and before
	// Accept and SchemaFile: when true, the request is answered 200
	// {"ignored": true, "reason": "..."} and neither stored nor routed (an
	// event type this pipeline does not handle). An error counts as false.
	// Empty ignores nothing.
	Ignore string `toml:"ignore"`
	// SchemaFile is a JSON Schema (draft 2020-12) every body must match,
	// else 422. A relative path is relative to the directory of the
	// configuration file (see [Config.ReadSchema]).
	SchemaFile string `toml:"schema_file"`
	// KeepRejected, when set, keeps rejected requests (401, 400, 413, 415,
	// 422) that long in the log's own keyspace, for `pipelined events
	// list --rejected`. Zero keeps none (they are still counted).
	KeepRejected Duration `toml:"keep_rejected"`
	// DropHeaders names request headers never stored with an event or a
	// rejected request nor shown to rules, besides those that always are
	// dropped (credentials, signatures, the header the source's auth reads).
	DropHeaders []string `toml:"drop_headers"`
	// KeepRejectedMax bounds the size of this source's kept rejections
	// (bodies cut to 8 KiB and headers to 8 KiB each): past it, the oldest
	// are dropped first and counted in pipelined_rejections_evicted_total.
	// Default 64MiB.
	KeepRejectedMax Size `toml:"keep_rejected_max"`
	// AllowDuplicateKeys accepts bodies with a key twice in one object;
	// by default they are refused with 400 (see ingest.Source).
	AllowDuplicateKeys bool `toml:"allow_duplicate_keys"`
	// AllowInvalidUTF8 accepts bodies with bytes that are not UTF-8 or
	// with lone surrogates (\ud800); by default they are refused with 400
	// (see ingest.Source).
	AllowInvalidUTF8 bool `toml:"allow_invalid_utf8"`
}

// Auth says how a source authenticates requests. It must be written
// explicitly. Secrets are never inline: SecretEnv names environment
// variables, SecretFile files (a systemd credential, say); several of them
// at once accept any, for rotation.
type Auth struct {
	// Type is "none", "standard-webhooks", "hmac", "bearer", "basic" or
	// "url-token".
	Type       string     `toml:"type"`
	SecretEnv  StringList `toml:"secret_env"`
	SecretFile StringList `toml:"secret_file"`
	// Preset (hmac) is "github" or "stripe"; Header, Algorithm, Encoding
	// and Prefix describe a generic HMAC signature header.
	Preset    string `toml:"preset"`
	Header    string `toml:"header"`
	Algorithm string `toml:"algorithm"`
	Encoding  string `toml:"encoding"`
	Prefix    string `toml:"prefix"`
	// Param (url-token) is the query parameter that carries the token.
	Param string `toml:"param"`
	// Tolerance bounds the age of a signed timestamp (standard-webhooks,
	// stripe); default 5m.
	Tolerance Duration `toml:"tolerance"`
}

// Sink is one [[sink]]: a plugin process that events are delivered to.
type Sink struct {
	Name string `toml:"name"`
	// Plugin names the binary pipelined-sink-<Plugin> in the plugin dirs.
	// Exactly one of Plugin and Command is set.
	Plugin string `toml:"plugin"`
	// Command is the path of the plugin binary.
	Command string `toml:"command"`
	// SHA256 is the optional hex checksum of the plugin binary.
	SHA256 string `toml:"sha256"`
	// Config is handed to the plugin as it is (see [Config.SinkConfigJSON]).
	Config   map[string]any `toml:"config"`
	Delivery Delivery       `toml:"delivery"`
}

// Delivery configures batching and retries of one sink.
type Delivery struct {
	BatchMax  int      `toml:"batch_max"`
	BatchWait Duration `toml:"batch_wait"`
	// MaxAttempts sends an event to the dead-letter queue after that many
	// failed deliveries; 0 (the default) means no limit: MaxAge decides.
	MaxAttempts int      `toml:"max_attempts"`
	BackoffMin  Duration `toml:"backoff_min"`
	BackoffMax  Duration `toml:"backoff_max"`
	// MaxAge sends an event to the dead-letter queue when it has been
	// failing for longer than that (default 72h).
	MaxAge Duration `toml:"max_age"`
	// BreakerFailures failed calls in a row open the sink's circuit
	// breaker (default 5); BreakerProbe is the first wait between probes
	// of an open breaker (default 30s), doubling up to BreakerProbeMax
	// (default 5m) or BackoffMax, whichever is lower: after an outage of
	// any length, the queue starts to drain at most that long after the
	// sink is back.
	BreakerFailures int      `toml:"breaker_failures"`
	BreakerProbe    Duration `toml:"breaker_probe"`
	BreakerProbeMax Duration `toml:"breaker_probe_max"`
	// Rate, if set ("50/s"), bounds the events delivered per second.
	Rate Rate `toml:"rate"`
	// OrderKey, if set, is an expression over the event (the env of
	// routes: body, headers, source, id, received_at): events with the
	// same key reach the sink in log order, one at a time, while other
	// keys keep flowing. Badger log only.
	OrderKey string `toml:"order_key"`
	// OrderOnDead is what an event of an ordered key that goes to the
	// dead-letter queue does to its key: "release" (the default: the
	// key's next event goes on) or "block" (the key waits until the dead
	// letter is retried or dropped).
	OrderOnDead string `toml:"order_on_dead"`
}

// Route is one [[route]]: every route whose When is true delivers the event
// to each sink in To (fan-out).
type Route struct {
	Name      string   `toml:"name"`
	When      string   `toml:"when"`
	To        []string `toml:"to"`
	Transform string   `toml:"transform"`
}

// Defaults.
const (
	DefaultListen      = "127.0.0.1:8080"
	DefaultAdminListen = "127.0.0.1:8081"
	DefaultMaxBody     = Size(1 << 20)
	DefaultLogDir      = "data"
	DefaultBackend     = "badger"
	DefaultDedupWindow = 24 * time.Hour
	// DefaultKeepRejectedMax is a source's keep_rejected_max.
	DefaultKeepRejectedMax = Size(64 << 20)
	// DefaultMemtableSize, MinMemtableSize and MaxMemtableSize are
	// log.memtable_size's default and bounds. Below 16 MiB, flushes come
	// so often that the tail and the CPU per event grow (measured at 8
	// MiB), and Badger's transaction limit (15% of a memtable) splits even
	// ordinary settlements; above 256 MiB, the memory (see
	// Log.MemtableSize) outgrows the systemd unit's budget.
	DefaultMemtableSize = Size(16 << 20)
	MinMemtableSize     = Size(16 << 20)
	MaxMemtableSize     = Size(256 << 20)
)

// DefaultMaxBodyMemory is server.max_body_memory when it is not set.
const DefaultMaxBodyMemory = Size(256 << 20)

// DecodeCost is how many times its length a body counts against
// server.max_body_memory: ingest.DecodeCost, the most that decoding takes
// (ingest's tests hold the two equal).
const DecodeCost = 80

// Default returns a Config with every default set and no sources, sinks
// or routes.
func Default() *Config {
	return &Config{
		Server: Server{
			Listen:            DefaultListen,
			MaxBody:           DefaultMaxBody,
			ReadHeaderTimeout: Duration{5 * time.Second},
			ReadTimeout:       Duration{30 * time.Second},
			WriteTimeout:      Duration{30 * time.Second},
			IdleTimeout:       Duration{120 * time.Second},
			ShutdownTimeout:   Duration{25 * time.Second},
			MaxHeaderBytes:    64 << 10,
			MaxConcurrent:     1024,
			MaxBodyMemory:     DefaultMaxBodyMemory,
			MaxConnsPerIP:     256,
			LogRequests:       true,
		},
		Admin: Admin{Listen: DefaultAdminListen, UI: true, ReadTimeout: Duration{10 * time.Second}, WriteTimeout: Duration{60 * time.Second}, IdleTimeout: Duration{30 * time.Second}},
		Log:   Log{Dir: DefaultLogDir, Retention: Duration{168 * time.Hour}, Backend: DefaultBackend, MemtableSize: DefaultMemtableSize},

		Telemetry: Telemetry{Protocol: DefaultTelemetryProtocol, ServiceName: DefaultServiceName},
	}
}

// DefaultDelivery returns the delivery settings a sink gets by default.
func DefaultDelivery() Delivery {
	return Delivery{
		BatchMax:        500,
		BatchWait:       Duration{20 * time.Millisecond},
		MaxAttempts:     0,
		BackoffMin:      Duration{time.Second},
		BackoffMax:      Duration{time.Hour},
		MaxAge:          Duration{72 * time.Hour},
		BreakerFailures: 5,
		BreakerProbe:    Duration{30 * time.Second},
		BreakerProbeMax: Duration{5 * time.Minute},
	}
}

// fillDefaults gives zero fields of array elements their defaults.
func (c *Config) fillDefaults() {
	for i := range c.Sources {
		if c.Sources[i].DedupWindow.Duration == 0 {
			c.Sources[i].DedupWindow.Duration = DefaultDedupWindow
		}
		if c.Sources[i].KeepRejectedMax == 0 {
			c.Sources[i].KeepRejectedMax = DefaultKeepRejectedMax
		}
	}
	def := DefaultDelivery()
	for i := range c.Sinks {
		d := &c.Sinks[i].Delivery
		if d.BatchMax == 0 {
			d.BatchMax = def.BatchMax
		}
		if d.BatchWait.Duration == 0 {
			d.BatchWait = def.BatchWait
		}
		if d.BackoffMin.Duration == 0 {
			d.BackoffMin = def.BackoffMin
		}
		if d.BackoffMax.Duration == 0 {
			d.BackoffMax = def.BackoffMax
		}
		if d.MaxAge.Duration == 0 {
			d.MaxAge = def.MaxAge
		}
		if d.BreakerFailures == 0 {
			d.BreakerFailures = def.BreakerFailures
		}
		if d.BreakerProbe.Duration == 0 {
			d.BreakerProbe = def.BreakerProbe
		}
		if d.BreakerProbeMax.Duration == 0 {
			d.BreakerProbeMax = def.BreakerProbeMax
		}
	}
}

// Load reads and parses the file at path.
func Load(path string) (*Config, error) { return LoadWith(path, nil) }

// Parse decodes data strictly over the defaults, then checks and compiles
// it once ([Config.Compile]; [Config.Plan] returns the plan). file
// names the data in messages. The error joins every problem found; a TOML
// syntax error stops decoding, so it comes alone.
func Parse(file string, data []byte) (*Config, error) {
	return ParseFS(file, data, nil)
}

// ParseFS is [Parse] with relative schema_file paths read from files
// instead of the directory of file (nil: that directory). The built-in
// default configuration uses it to find its schema in the binary.
func ParseFS(file string, data []byte, files fs.FS) (*Config, error) {
	return ParseWith(file, data, &ParseOptions{Files: files})
}

// ParseOptions are the ways to parse other than [Parse]'s. The zero value
// (or nil) is [Parse].
type ParseOptions struct {
	// Files, when set, is where relative schema_file paths are read from
	// (see [ParseFS]).
	Files fs.FS
	// SecretsOptional parses for `pipelined test`, in a CI that holds no
	// production secret: the admin token and the server's TLS files are not
	// read, and a source whose secrets are missing is compiled with a
	// verifier that refuses every request (401, saying which secret to set
	// in the test file's env) instead of failing the load.
	SecretsOptional bool
}

// LoadWith is [Load] with options.
func LoadWith(path string, o *ParseOptions) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if !filepath.IsAbs(path) && errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read config: %w (a relative -c is relative to the working directory)", err)
		}
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseWith(path, data, o)
}

// ParseWith is [Parse] with options (nil: none).
func ParseWith(file string, data []byte, o *ParseOptions) (*Config, error) {
	if o == nil {
		o = &ParseOptions{}
	}
	files := o.Files
	c := Default()
	c.File = file
	c.files = files
	c.secretsOptional = o.SecretsOptional
	if files == nil {
		if abs, err := filepath.Abs(file); err == nil {
			c.base = filepath.Dir(abs)
		}
	}
	c.src = data
	md, err := toml.Decode(string(data), c)
	if err != nil {
		return nil, c.decodeError(err)
	}
	c.fillDefaults()
	c.resolvePaths()
	var errs []error
	errs = append(errs, c.unknownKeys(md)...)
	plan, err := c.Compile()
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	c.plan = plan
	return c, nil
}

// SinkConfigJSON returns the config table of the i-th sink as a JSON
// object, "{}" when it has none.
func (c *Config) SinkConfigJSON(i int) ([]byte, error) {
	if i < 0 || i >= len(c.Sinks) {
		return nil, fmt.Errorf("sink index %d out of range", i)
	}
	if len(c.Sinks[i].Config) == 0 {
		return []byte("{}"), nil
	}
	b, err := json.Marshal(c.Sinks[i].Config)
	if err != nil {
		return nil, fmt.Errorf("sink %q: config: %w", c.Sinks[i].Name, err)
	}
	return b, nil
}
