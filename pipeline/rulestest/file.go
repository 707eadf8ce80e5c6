package rulestest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// File is one test file: optional environment variables for every case and
// the cases, in file order.
type File struct {
	// Path is the file the cases came from, used in messages and to find
	// body_file.
	Path string
	// Env is set while the configuration is loaded and while every case
	// runs (the top-level env = { NAME = "value" }).
	Env   map[string]string `toml:"env"`
	Cases []Case            `toml:"test"`
}

// Case is one [[test]]: a request in, what the daemon would do with it out.
// An expectation that is left out is not checked.
type Case struct {
	// Name identifies the case in the output and in expect_duplicate_of.
	Name string `toml:"name"`
	// Source is the [[source]] that receives the request; it may be left
	// out when the configuration has exactly one.
	Source string `toml:"source"`
	// Body is the request body as it is sent (JSON text, or anything for a
	// case that expects 400); BodyFile names a file holding it, relative to
	// the test file. Exactly one of them is set.
	Body     *string `toml:"body"`
	BodyFile string  `toml:"body_file"`
	// Headers are sent with the request. Content-Type defaults to
	// application/json.
	Headers map[string]string `toml:"headers"`
	// Query is the raw query string of the request's URL, without the
	// "?" (e.g. "token=test-token" for a url-token source).
	Query string `toml:"query"`
	// Env is set, over the file's env, while this case runs: its secrets
	// are read again for the source's auth check.
	Env map[string]string `toml:"env"`
	// ReceivedAt is the event's received_at and the "now" the auth check
	// uses (signed timestamps are checked against it). Default
	// [DefaultReceivedAt].
	ReceivedAt *time.Time `toml:"received_at"`

	// ExpectStatus is the HTTP status ingest would answer (default 200).
	ExpectStatus int `toml:"expect_status"`
	// ExpectRoutes is the set of routes whose when is true.
	ExpectRoutes *[]string `toml:"expect_routes"`
	// ExpectSinks is the set of sinks the event is delivered to.
	ExpectSinks *[]string `toml:"expect_sinks"`
	// ExpectTransform maps a sink name to the payload it receives: a TOML
	// value compared as JSON, or a string holding JSON text (to write null,
	// which TOML cannot).
	ExpectTransform map[string]any `toml:"expect_transform"`
	// ExpectDedupKey is the event's dedup key ("" for none).
	ExpectDedupKey *string `toml:"expect_dedup_key"`
	// ExpectDuplicateOf names an earlier case that this one duplicates:
	// same source, same dedup key, within the source's dedup window.
	ExpectDuplicateOf string `toml:"expect_duplicate_of"`

	body []byte
}

// DefaultReceivedAt is received_at when a case does not set it: fixed, so
// that transforms using it give the same result on every run.
var DefaultReceivedAt = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// Patterns returns the test files found by default next to the
// configuration file cfgFile: <dir>/*_test.toml and <dir>/tests/*.toml.
func Patterns(cfgFile string) []string {
	dir := filepath.Dir(cfgFile)
	return []string{filepath.Join(dir, "*_test.toml"), filepath.Join(dir, "tests", "*.toml")}
}

// Parse reads the test file at path strictly: unknown keys, a case without
// a name or a body, duplicate names and expectations that contradict each
// other are errors, all reported at once.
func Parse(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read test file: %w", err)
	}
	f := &File{Path: path}
	md, err := toml.Decode(string(data), f)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s:%d: %s", path, pe.Position.Line, pe.Message)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var errs []error
	at := func(key string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s", path, lineOf(data, key), fmt.Sprintf(format, args...)))
	}
	for _, k := range md.Undecoded() {
		switch {
		case len(k) > 2 && k[0] == "test" && k[1] == "expect_transform":
			// Free-form: the expected payload.
		case k[0] == "test":
			at(k[len(k)-1], "unknown key %s (a [[test]] takes %s)", k, caseKeys)
		default:
			at(k[len(k)-1], "unknown key %s (the top level takes env and [[test]])", k)
		}
	}
	for _, k := range md.Keys() {
		// The decoder matches keys whatever their case; keep them strict.
		if len(k) == 1 && k[0] != "env" && k[0] != "test" ||
			len(k) == 2 && k[0] == "test" && !strings.Contains(" "+caseKeys+",", " "+k[1]+",") {
			if !isUndecoded(md, k) {
				at(k[len(k)-1], "key %s: spell it in lower case as documented", k)
			}
		}
	}
	seen := map[string]bool{}
	for i := range f.Cases {
		c := &f.Cases[i]
		what := fmt.Sprintf("test %d (%q)", i+1, c.Name)
		caseAt := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s:%d: %s: %s", path, caseLine(data, i), what, fmt.Sprintf(format, args...)))
		}
		switch {
		case c.Name == "":
			caseAt("name: missing; every case needs a name")
		case seen[c.Name]:
			caseAt("name: another case is named %q; names must be unique", c.Name)
		}
		seen[c.Name] = true
		switch {
		case c.Body != nil && c.BodyFile != "":
			caseAt("set body or body_file, not both")
		case c.Body != nil:
			c.body = []byte(*c.Body)
		case c.BodyFile != "":
			p := c.BodyFile
			if !filepath.IsAbs(p) {
				p = filepath.Join(filepath.Dir(path), p)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				caseAt("body_file: %v", err)
			}
			c.body = b
		default:
			caseAt("missing body or body_file")
		}
		if c.ExpectStatus == 0 {
			c.ExpectStatus = 200
		}
		routed := c.ExpectRoutes != nil || c.ExpectSinks != nil || c.ExpectTransform != nil
		if c.ExpectStatus != 200 && (routed || c.ExpectDuplicateOf != "" || c.ExpectDedupKey != nil) {
			caseAt("expect_status = %d: a rejected request is not routed; remove expect_routes, expect_sinks, expect_transform, expect_dedup_key and expect_duplicate_of", c.ExpectStatus)
		}
		if c.ExpectDuplicateOf != "" {
			if routed {
				caseAt("expect_duplicate_of: a duplicate is not routed again; remove expect_routes, expect_sinks and expect_transform")
			}
			if !seen[c.ExpectDuplicateOf] || c.ExpectDuplicateOf == c.Name {
				caseAt("expect_duplicate_of: no earlier case is named %q", c.ExpectDuplicateOf)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return f, nil
}

const caseKeys = "name, source, body, body_file, headers, query, env, received_at, expect_status, expect_routes, expect_sinks, expect_transform, expect_dedup_key, expect_duplicate_of"

func isUndecoded(md toml.MetaData, k toml.Key) bool {
	for _, u := range md.Undecoded() {
		if u.String() == k.String() {
			return true
		}
	}
	return false
}

// lineOf returns the 1-based line where key is first assigned, 0 if not
// found: the decoder keeps no positions, so this is a best-effort scan.
func lineOf(data []byte, key string) int {
	re := regexp.MustCompile(`(^|[\s{,])"?` + regexp.QuoteMeta(key) + `"?\s*=`)
	for i, l := range strings.Split(string(data), "\n") {
		if re.MatchString(l) {
			return i + 1
		}
	}
	return 0
}

// caseLine returns the 1-based line of the i-th [[test]] header.
func caseLine(data []byte, i int) int {
	re := regexp.MustCompile(`^\s*\[\[\s*test\s*\]\]`)
	n := -1
	for ln, l := range strings.Split(string(data), "\n") {
		if re.MatchString(l) {
			n++
			if n == i {
				return ln + 1
			}
		}
	}
	return 0
}

// loadEnv is the environment the configuration is loaded with: the file's
// env, then, for a variable only cases set, the first case's value, so
// that the configuration's secret_env check passes.
func (f *File) loadEnv() map[string]string {
	env := map[string]string{}
	for _, c := range f.Cases {
		for k, v := range c.Env {
			if _, ok := env[k]; !ok {
				env[k] = v
			}
		}
	}
	for k, v := range f.Env {
		env[k] = v
	}
	return env
}

// withEnv sets env in the process environment while fn runs, then puts
// back what was there. Not safe for concurrent use.
func withEnv(env map[string]string, fn func() error) error {
	type old struct {
		v  string
		ok bool
	}
	saved := map[string]old{}
	for k, v := range env {
		ov, ok := os.LookupEnv(k)
		saved[k] = old{ov, ok}
		os.Setenv(k, v)
	}
	defer func() {
		for k, o := range saved {
			if o.ok {
				os.Setenv(k, o.v)
			} else {
				os.Unsetenv(k)
			}
		}
	}()
	return fn()
}
