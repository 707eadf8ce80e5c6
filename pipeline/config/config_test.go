package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestErrors parses every file in testdata/. Each file starts with one or
// more comment lines "# want: TEXT"; Parse must fail with an error that
// contains every TEXT (so a file with several problems checks that all are
// reported at once). Files are parsed under the name "pipeline.toml", so
// TEXT may include "pipeline.toml:LINE:COL:".
func TestErrors(t *testing.T) {
	files, err := filepath.Glob("testdata/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".toml"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var wants []string
			for _, l := range strings.Split(string(data), "\n") {
				if w, ok := strings.CutPrefix(l, "# want: "); ok {
					wants = append(wants, w)
				}
			}
			if len(wants) == 0 {
				t.Fatalf("%s has no # want: line", f)
			}
			_, err = Parse("pipeline.toml", data)
			if err == nil {
				t.Fatalf("Parse(%s) = nil error, want %q", f, wants)
			}
			for _, w := range wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse(%s) = %v\nwant it to contain %q", f, err, w)
				}
			}
		})
	}
}

func TestThreeErrorsAtOnce(t *testing.T) {
	data, err := os.ReadFile("testdata/three-errors.toml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse("pipeline.toml", data)
	if err == nil {
		t.Fatal("Parse(three-errors.toml) = nil error, want 3 problems")
	}
	if got := len(strings.Split(err.Error(), "\n")); got != 3 {
		t.Fatalf("Parse(three-errors.toml) = %d problems:\n%v\nwant 3", got, err)
	}
}

const valid = `
[server]
listen = "0.0.0.0:9000"
max_body = "512KiB"

[log]
retention = "7d"
memtable_size = "32MiB"

[[source]]
name = "callkaro"
path = "/hooks/callkaro"
dedup_key = "body.data.callSid"
auth = { type = "none" }

[[source]]
name = "other"
path = "/hooks/other"
dedup_window = "1h"
auth = { type = "none" }

[[sink]]
name = "archive"
plugin = "archive"
config = { dir = "data/archive", nested = { Any_Case = 1, list = [1, "a"] } }

[[sink]]
name = "custom"
command = "/usr/local/bin/my-sink"
sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
[sink.delivery]
batch_max = 10
backoff_max = "1h"

[[route]]
name = "all"
when = 'body.event == "call_ended"'
to = ["archive", "custom"]
transform = '{"from": body.data.from}'
`

func TestParseValid(t *testing.T) {
	c, err := Parse("pipeline.toml", []byte(valid))
	if err != nil {
		t.Fatalf("Parse(valid) = %v, want no error", err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"server.listen", c.Server.Listen, "0.0.0.0:9000"},
		{"server.max_body", c.Server.MaxBody, Size(512 << 10)},
		{"server.read_timeout default", c.Server.ReadTimeout.Duration, 30 * time.Second},
		{"admin.listen default", c.Admin.Listen, DefaultAdminListen},
		{"log.retention", c.Log.Retention.Duration, 7 * 24 * time.Hour},
		{"log.memtable_size", c.Log.MemtableSize, Size(32 << 20)},
		{"log.dir default, next to the file", c.Log.Dir, filepath.Join(wd, "data")},
		{"source[0].dedup_window default", c.Sources[0].DedupWindow.Duration, 24 * time.Hour},
		{"source[1].dedup_window", c.Sources[1].DedupWindow.Duration, time.Hour},
		{"source[0].keep_rejected_max default", c.Sources[0].KeepRejectedMax, Size(64 << 20)},
		{"server.max_conns_per_ip default", c.Server.MaxConnsPerIP, 256},
		{"sink[0].delivery default", c.Sinks[0].Delivery, DefaultDelivery()},
		{"sink[1].batch_max", c.Sinks[1].Delivery.BatchMax, 10},
		{"sink[1].max_attempts default (no limit)", c.Sinks[1].Delivery.MaxAttempts, 0},
		{"sink[1].max_age default", c.Sinks[1].Delivery.MaxAge.Duration, 72 * time.Hour},
		{"sink[1].breaker_failures default", c.Sinks[1].Delivery.BreakerFailures, 5},
		{"sink[1].breaker_probe default", c.Sinks[1].Delivery.BreakerProbe.Duration, 30 * time.Second},
		{"sink[1].rate default (none)", c.Sinks[1].Delivery.Rate.PerSecond, 0.0},
		{"sink[1].backoff_max", c.Sinks[1].Delivery.BackoffMax.Duration, time.Hour},
		{"route.to", strings.Join(c.Routes[0].To, ","), "archive,custom"},
		{"file", c.File, "pipeline.toml"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("Parse(valid) %s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	b, err := c.SinkConfigJSON(0)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil || m["dir"] != "data/archive" {
		t.Errorf("SinkConfigJSON(0) = %s, %v; want dir data/archive", b, err)
	}
	if b, err := c.SinkConfigJSON(1); err != nil || string(b) != "{}" {
		t.Errorf("SinkConfigJSON(1) = %s, %v; want {}", b, err)
	}
}

func TestEmptyIsValid(t *testing.T) {
	c, err := Parse("empty.toml", nil)
	if err != nil {
		t.Fatalf("Parse(empty) = %v, want no error", err)
	}
	if c.Server.Listen != DefaultListen || c.Server.MaxBody != DefaultMaxBody || c.Log.Backend != "badger" {
		t.Errorf("Parse(empty) = %+v, want defaults", c)
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"250ms", 250 * time.Millisecond, true},
		{"24h", 24 * time.Hour, true},
		{"7d", 7 * 24 * time.Hour, true},
		{"1d12h", 36 * time.Hour, true},
		{"", 0, false},
		{"5", 0, false},
		{"-1s", 0, false},
		{"xd", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			err := d.UnmarshalText([]byte(tt.in))
			if (err == nil) != tt.ok || d.Duration != tt.want {
				t.Fatalf("UnmarshalText(%q) = %v, %v; want %v, ok %v", tt.in, d.Duration, err, tt.want, tt.ok)
			}
		})
	}
}

func TestSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		ok   bool
	}{
		{"1000", 1000, true},
		{"1MiB", 1 << 20, true},
		{"512KiB", 512 << 10, true},
		{"1GB", 1e9, true},
		{"1.5KiB", 1536, true},
		{"10B", 10, true},
		{"", 0, false},
		{"MiB", 0, false},
		{"-1MiB", 0, false},
		{"1XB", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var s Size
			err := s.UnmarshalText([]byte(tt.in))
			if (err == nil) != tt.ok || s != tt.want {
				t.Fatalf("UnmarshalText(%q) = %v, %v; want %v, ok %v", tt.in, s, err, tt.want, tt.ok)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile("../../pipeline.toml"); err == nil {
		f.Add(data)
	}
	files, _ := filepath.Glob("testdata/*.toml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(valid))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("pipeline.toml", data)
		if err == nil && c == nil {
			t.Fatal("Parse = nil, nil")
		}
		if err != nil {
			return
		}
		// Where each sink's config keys are, for the plugins' messages:
		// any text, no panic, and always somewhere in the file.
		for i := range c.Sinks {
			for key := range c.Sinks[i].Config {
				if pos := c.SinkConfigPos(i, key); !strings.HasPrefix(pos, "pipeline.toml:") {
					t.Fatalf("SinkConfigPos(%d, %q) = %q, want a position in pipeline.toml", i, key, pos)
				}
			}
		}
		if len(c.Sinks) > 0 && c.SinkConfigPos(0, "") == "" {
			t.Fatal("SinkConfigPos(0, \"\") = \"\", want the table or the [[sink]] header")
		}
	})
}

// TestDeliveryWritten checks that delivery keys written in a file keep
// their meaning under the new defaults: max_attempts = 12 still gives up
// after 12 attempts, and every new key is read as written.
func TestDeliveryWritten(t *testing.T) {
	const file = `
[[source]]
name = "s"
path = "/hooks/s"
auth = { type = "none" }

[[sink]]
name = "crm"
plugin = "archive"
delivery = { max_attempts = 12, backoff_max = "10m", max_age = "36h", breaker_failures = 3, breaker_probe = "5s", rate = "50/s" }
`
	c, err := Parse("pipeline.toml", []byte(file))
	if err != nil {
		t.Fatalf("Parse() = %v, want no error", err)
	}
	d := c.Sinks[0].Delivery
	tests := []struct {
		key       string
		got, want any
	}{
		{"max_attempts", d.MaxAttempts, 12},
		{"backoff_max", d.BackoffMax.Duration, 10 * time.Minute},
		{"max_age", d.MaxAge.Duration, 36 * time.Hour},
		{"breaker_failures", d.BreakerFailures, 3},
		{"breaker_probe", d.BreakerProbe.Duration, 5 * time.Second},
		{"rate", d.Rate.PerSecond, 50.0},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("Parse() delivery.%s = %v, want %v", tt.key, tt.got, tt.want)
			}
		})
	}
}
