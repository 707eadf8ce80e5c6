package config

import (
	"strings"
	"testing"
)

// sinkPosConfig writes a sink's config table each way TOML allows: inline,
// inline over several lines (TOML 1.1), dotted keys, a [sink.config]
// subtable, and none at all.
const sinkPosConfig = `[[source]]
name = "s"
path = "/hooks/s"
auth = { type = "none" }

[[sink]]
name = "inline"
plugin = "archive"
config = { columns = { dir = "x" }, "quoted" = 1, dir = "a,{b}", rotate = "1h" }  # dir again: dir

[[sink]]
name = "lines"
plugin = "archive"
config = {
  dir = "data",
  max_size = "1MiB",
}

[[sink]]
name = "dotted"
plugin = "archive"
config.dir = "data"
  config.rotate = "1h"

[[sink]]
name = "subtable"
plugin = "sql"
[sink.config]
driver = "sqlite"
  path = "x.db"
[sink.config.columns]
call_sid = "data.callSid"
[sink.delivery]
batch_max = 10

[[sink]]
name = "bare"
plugin = "archive"

[[route]]
name = "all"
when = "true"
to = ["inline", "lines", "dotted", "subtable", "bare"]
`

func TestSinkConfigPos(t *testing.T) {
	c, err := Parse("pipeline.toml", []byte(sinkPosConfig))
	if err != nil {
		t.Fatal(err)
	}
	checkSinkConfigPos(t, c, []sinkPos{
		{0, "", "pipeline.toml:9:1"},
		{0, "dir", "pipeline.toml:9:51"}, // not the nested columns.dir, nor in a string or comment
		{0, "rotate", "pipeline.toml:9:66"},
		{0, "quoted", "pipeline.toml:9:37"},
		{0, "columns", "pipeline.toml:9:12"},
		{0, "missing", "pipeline.toml:9:1"}, // a required key the file lacks: the table
		{1, "", "pipeline.toml:14:1"},
		{1, "dir", "pipeline.toml:15:3"},
		{1, "max_size", "pipeline.toml:16:3"},
		{2, "", "pipeline.toml:22:1"},
		{2, "rotate", "pipeline.toml:23:3"},
		{3, "", "pipeline.toml:28:1"},
		{3, "path", "pipeline.toml:30:3"},
		{3, "columns", "pipeline.toml:31:1"},
		{3, "batch_max", "pipeline.toml:28:1"}, // a [sink.delivery] key is not the config's
		{4, "dir", "pipeline.toml:36:1"},       // no config table: the [[sink]] header
	})
}

// sinkPos is a case of [Config.SinkConfigPos]: the sink's index, the key,
// and the position wanted.
type sinkPos struct {
	sink int
	key  string
	want string
}

func checkSinkConfigPos(t *testing.T, c *Config, tests []sinkPos) {
	t.Helper()
	for _, tt := range tests {
		if got := c.SinkConfigPos(tt.sink, tt.key); got != tt.want {
			t.Errorf("SinkConfigPos(%d, %q) = %q, want %q", tt.sink, tt.key, got, tt.want)
		}
	}
}

// TestSinkConfigPosStrings: quotes in comments, multi-line strings and
// values that span lines move no key elsewhere, nor any [[sink]] header.
func TestSinkConfigPosStrings(t *testing.T) {
	const src = `[[source]]
name = "s"
path = "/hooks/s"
auth = { type = "none" }

[[sink]]
name = "a"
plugin = "archive"
# a note: ''' strings are fine
config = { prefix = '''it's''', dir = "x", "rotate.x" = 1, rotate = "1h" }
# don't, rotate = "never"

[[sink]]
name = "b"
plugin = "sql"
# end of the note '''
[sink.config]
columns = {
  table = "data.x",
}
table = "t"
"quoted" = 1
'single' = 2

[[sink]]
name = "c"
plugin = "archive"
config = {
  config = { dir = "q" },
  rotate = """a "b" ""c"""",
  dir = "x",
}
notes = """
[[sink]]
config = { dir = "y" }
"""

[[route]]
name = "all"
when = "true"
to = ["a", "b", "c"]
`
	// The premise: the source is valid TOML, and its one problem is the
	// key notes, unknown on purpose (its string holds a [[sink]] header).
	// Parse returns no Config on that error, so the positions are read
	// from a Config that holds only the source, as SinkConfigPos needs.
	_, err := Parse("pipeline.toml", []byte(src))
	if err == nil || !strings.Contains(err.Error(), `unknown key "sink.notes"`) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Parse = %v, want only the unknown key sink.notes", err)
	}
	c := &Config{File: "pipeline.toml", src: []byte(src)}
	checkSinkConfigPos(t, c, []sinkPos{
		{0, "", "pipeline.toml:10:1"},
		{0, "rotate", "pipeline.toml:10:60"}, // not in the comment after it
		{0, "rotate.x", "pipeline.toml:10:44"},
		{0, "missing", "pipeline.toml:10:1"},
		{1, "", "pipeline.toml:17:1"},
		{1, "table", "pipeline.toml:21:1"}, // not columns.table
		{1, "quoted", "pipeline.toml:22:1"},
		{1, "single", "pipeline.toml:23:1"},
		{2, "dir", "pipeline.toml:31:3"}, // not config.config.dir
		{2, "rotate", "pipeline.toml:30:3"},
		{3, "", ""}, // the [[sink]] in a string is none
	})
}
