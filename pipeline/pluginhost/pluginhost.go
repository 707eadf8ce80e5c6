// Package pluginhost runs sink plugins: it finds a sink's binary
// (pipelined-sink-<name>), checks its checksum, starts it with go-plugin over
// gRPC with a minimal environment, hands it its config, delivers batches to
// it, and keeps it running with a [Supervisor] that restarts it with backoff
// when it exits.
package pluginhost

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pipelined/pipelined/pipeline/metrics"
)

// Spec says how to find, check, start and configure one sink's plugin.
type Spec struct {
	// Sink is the [[sink]] name, for logs and errors.
	Sink string
	// Plugin finds the binary "pipelined-sink-<Plugin>" (see [Find]).
	Plugin string
	// Command is an explicit path to the binary, used instead of Plugin.
	Command string
	// Dirs are extra directories searched after the daemon's own
	// executable directory.
	Dirs []string
	// SHA256 is the optional hex checksum of the binary; a binary that
	// does not match is not started.
	SHA256 string
	// Config is the sink's config table as a JSON object, handed to the
	// plugin's Configure. Keys ending in "_env" name the environment
	// variables the plugin may see (see [EnvNames]).
	Config []byte
	// Dir is the plugin's working directory, where relative paths in its
	// config resolve: the configuration file's directory. Empty: the
	// daemon's working directory.
	Dir string
	// Where, if set, says where the configuration file sets a key of
	// Config ("" for the table itself, "name.sub" for a nested key) as
	// "file:line:col", or "": the config's problems that the plugin
	// reports are prefixed with it, so that they point into the file as
	// the daemon's own do.
	Where func(key string) string
}

// DefaultStartTimeout is Options.StartTimeout when it is not set. It bounds
// each step of a plugin's start (the handshake, Describe, Configure).
const DefaultStartTimeout = 10 * time.Second

// Options tune how plugins are started and supervised. A nil *Options and
// zero fields take the defaults.
type Options struct {
	// Logger receives the host's messages and the plugin's own log lines,
	// with sink=<name>. Default: a logger that discards everything.
	Logger *slog.Logger
	// StartTimeout bounds each step of a plugin's start: the handshake,
	// Describe and Configure. Default DefaultStartTimeout.
	StartTimeout time.Duration
	// CallTimeout bounds each Deliver call on top of its ctx. Default 0:
	// only the ctx limits it.
	CallTimeout time.Duration
	// CloseTimeout bounds the Close call when stopping a plugin whose ctx
	// has no deadline. Default 10s.
	CloseTimeout time.Duration
	// BackoffMin and BackoffMax bound the delay before a [Supervisor]
	// restarts a plugin: it starts at BackoffMin and doubles per failure in
	// a row up to BackoffMax. Defaults 100ms and 30s.
	BackoffMin, BackoffMax time.Duration
	// HealthyAfter is how long a plugin must run before its failure count
	// is reset. Default 1m.
	HealthyAfter time.Duration
	// Metrics, if set, counts a [Supervisor]'s restarts.
	Metrics *metrics.Metrics
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	if r.StartTimeout <= 0 {
		r.StartTimeout = DefaultStartTimeout
	}
	if r.CloseTimeout <= 0 {
		r.CloseTimeout = 10 * time.Second
	}
	if r.BackoffMin <= 0 {
		r.BackoffMin = 100 * time.Millisecond
	}
	if r.BackoffMax <= 0 {
		r.BackoffMax = 30 * time.Second
	}
	if r.BackoffMax < r.BackoffMin {
		r.BackoffMax = r.BackoffMin
	}
	if r.HealthyAfter <= 0 {
		r.HealthyAfter = time.Minute
	}
	return r
}

// BinaryPrefix is how the name of every sink plugin binary starts.
const BinaryPrefix = "pipelined-sink-"

// Find returns the path of spec's plugin binary. spec.Command is used as is
// (it must exist). Otherwise it looks for pipelined-sink-<Plugin> in the
// directories of [SearchDirs], and returns the first regular executable file. When there is
// none, the error wraps [ErrNotFound] and lists every directory searched.
func Find(spec Spec) (string, error) {
	if spec.Command != "" {
		fi, err := os.Stat(spec.Command)
		if err != nil {
			return "", fmt.Errorf("sink %q: plugin command %s: %w", spec.Sink, spec.Command, err)
		}
		if err := checkExecutable(fi); err != nil {
			return "", fmt.Errorf("sink %q: plugin command %s %v", spec.Sink, spec.Command, err)
		}
		return spec.Command, nil
	}
	if spec.Plugin == "" {
		return "", fmt.Errorf("sink %q: neither plugin nor command is set: set plugin = \"<name>\" to run %s<name>, or command = \"/path/to/binary\"", spec.Sink, BinaryPrefix)
	}
	if strings.ContainsAny(spec.Plugin, `/\`) || spec.Plugin == "." || spec.Plugin == ".." {
		return "", fmt.Errorf("sink %q: plugin %q is a name, not a path: use command = %q for a path", spec.Sink, spec.Plugin, spec.Plugin)
	}
	name := BinaryPrefix + spec.Plugin
	dirs := SearchDirs(spec.Dirs)
	var notes []string
	for _, d := range dirs {
		p := filepath.Join(d, name)
		fi, err := os.Stat(p)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				notes = append(notes, fmt.Sprintf("%s: %v", p, err))
			}
			continue
		}
		if err := checkExecutable(fi); err != nil {
			notes = append(notes, fmt.Sprintf("%s %v", p, err))
			continue
		}
		return p, nil
	}
	var extra string
	if len(notes) > 0 {
		extra = "; skipped " + strings.Join(notes, ", ")
	}
	return "", &notFoundError{fmt.Sprintf("sink %q: plugin %q not found: looked for %s in %s%s (make build builds this repository's plugins; put one of your own in one of those directories, or set [plugins] dirs or the sink's command)",
		spec.Sink, spec.Plugin, name, strings.Join(dirs, ", "), extra)}
}

// SearchDirs returns where plugin binaries are looked for, in order: the
// directory of the running executable (symlinks resolved), the libexec
// directory beside it (../libexec/pipelined: /usr/libexec/pipelined for
// /usr/bin/pipelined, as the packages install them), then each of extra
// (a config's [plugins] dirs), without repeats.
func SearchDirs(extra []string) []string {
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		bin := filepath.Dir(exe)
		dirs = append(dirs, bin, filepath.Join(filepath.Dir(bin), "libexec", "pipelined"))
	}
	for _, d := range extra {
		if d != "" && !contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// List returns the plugin binaries in dirs, by plugin name: for each name,
// the path of the first regular executable file pipelined-sink-<name>, the
// one [Find] picks. Directories that cannot be read are skipped.
func List(dirs []string) map[string]string {
	found := map[string]string{}
	for _, d := range dirs {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			name, ok := strings.CutPrefix(e.Name(), BinaryPrefix)
			if !ok || name == "" || found[name] != "" {
				continue
			}
			p := filepath.Join(d, e.Name())
			if fi, err := os.Stat(p); err != nil || checkExecutable(fi) != nil {
				continue
			}
			found[name] = p
		}
	}
	return found
}

// notFoundError is Find's error: its own message, matching [ErrNotFound].
type notFoundError struct{ msg string }

func (e *notFoundError) Error() string { return e.msg }
func (e *notFoundError) Unwrap() error { return ErrNotFound }

func checkExecutable(fi fs.FileInfo) error {
	switch {
	case fi.IsDir():
		return errors.New("is a directory")
	case !fi.Mode().IsRegular():
		return errors.New("is not a regular file")
	case fi.Mode().Perm()&0o111 == 0:
		return errors.New("is not executable (chmod +x it)")
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// baseEnv are the variables of the daemon's environment every plugin gets.
// CREDENTIALS_DIRECTORY is not among them: see [namesCredential].
var baseEnv = []string{
	"PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR",
	"STATE_DIRECTORY", "GOTRACEBACK",
}

// credentialsDir is systemd's variable naming the directory of the unit's
// credentials (LoadCredential=), every sink's secrets side by side.
const credentialsDir = "CREDENTIALS_DIRECTORY"

// namesCredential reports whether a string of config (at any depth) names a
// file in the credentials directory dir: it mentions $CREDENTIALS_DIRECTORY
// or ${CREDENTIALS_DIRECTORY}, or is a path under dir. Only such a plugin
// is told where the directory is; the others have no use for it.
func namesCredential(config []byte, dir string) bool {
	var v any
	if json.Unmarshal(config, &v) != nil {
		return false
	}
	dir = strings.TrimRight(dir, "/")
	var walk func(v any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case string:
			return strings.Contains(v, "${"+credentialsDir+"}") || strings.Contains(v, "$"+credentialsDir) ||
				(dir != "" && strings.HasPrefix(v, dir+"/"))
		case map[string]any:
			for _, e := range v {
				if walk(e) {
					return true
				}
			}
		case []any:
			for _, e := range v {
				if walk(e) {
					return true
				}
			}
		}
		return false
	}
	return walk(v)
}

// deniedEnv are never passed to a plugin, even when its config names them:
// they belong to the daemon's own dealings with systemd.
var deniedEnv = map[string]bool{
	"NOTIFY_SOCKET":  true,
	"LISTEN_FDS":     true,
	"LISTEN_PID":     true,
	"LISTEN_FDNAMES": true,
	"WATCHDOG_USEC":  true,
	"WATCHDOG_PID":   true,
}

// EnvNames returns, sorted and without repeats, the environment variables
// named by the sink's config: every string, or list of strings, under a key
// ending in "_env" at any depth of the JSON object (config {
// webhook_url_env = "SLACK_URL" } names SLACK_URL). Those, and a few basics
// (PATH, HOME, LANG, TZ, ...), are all the environment a plugin gets, so each
// plugin sees only the secrets its own config names. An empty config names
// nothing; config that is not a JSON object is an error.
func EnvNames(config []byte) ([]string, error) {
	if len(strings.TrimSpace(string(config))) == 0 {
		return nil, nil
	}
	var v any
	if err := json.Unmarshal(config, &v); err != nil {
		return nil, fmt.Errorf("decode sink config: %w", err)
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, errors.New("sink config is not a JSON object")
	}
	seen := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, val := range v {
				if strings.HasSuffix(strings.ToLower(k), "_env") {
					switch val := val.(type) {
					case string:
						seen[val] = true
					case []any:
						for _, e := range val {
							if s, ok := e.(string); ok {
								seen[s] = true
							}
						}
					case map[string]any: // header_env = { Authorization = "CRM_TOKEN" }
						for _, e := range val {
							if s, ok := e.(string); ok {
								seen[s] = true
							}
						}
					}
				}
				walk(val)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(v)
	names := make([]string, 0, len(seen))
	for n := range seen {
		if validEnvName(n) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names, nil
}

func validEnvName(n string) bool {
	return n != "" && !strings.ContainsAny(n, "=\x00")
}

// pluginEnv builds the environment of spec's plugin from lookup (the
// daemon's environment): the basics plus what the config names, never
// deniedEnv; CREDENTIALS_DIRECTORY only when the config names a file there. It also returns the named variables that were refused.
func pluginEnv(config []byte, lookup func(string) (string, bool)) (env, refused []string, err error) {
	named, err := EnvNames(config)
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	add := func(n string) {
		if seen[n] {
			return
		}
		seen[n] = true
		if v, ok := lookup(n); ok {
			env = append(env, n+"="+v)
		}
	}
	for _, n := range baseEnv {
		add(n)
	}
	if dir, ok := lookup(credentialsDir); ok && namesCredential(config, dir) {
		add(credentialsDir)
	}
	for _, n := range named {
		if deniedEnv[n] || strings.HasPrefix(n, "PLUGIN_") {
			refused = append(refused, n)
			continue
		}
		add(n)
	}
	return env, refused, nil
}
