package config_test

import (
	"strings"
	"testing"

	"github.com/pipelined/pipelined/pipeline/config"
)

// TestUnknownKeyPosition: an unknown key is named at file:line:column,
// where the key starts (P7), in a table, an array of tables and as a table
// of its own.
func TestUnknownKeyPosition(t *testing.T) {
	src := "[server]\nlisten = \"127.0.0.1:0\"\n  bogus_key = 1\n[[route]]\nname = \"r\"\nwhen = \"true\"\nto = [\"s\"]\n    foo = 2\n[nope]\n"
	_, err := config.Parse("pipeline.toml", []byte(src))
	if err == nil {
		t.Fatal("Parse = nil, want the unknown keys")
	}
	for _, want := range []string{
		`pipeline.toml:3:3: unknown key "server.bogus_key"`,
		`pipeline.toml:8:5: unknown key "route.foo"`,
		`pipeline.toml:9:2: unknown key "nope"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Parse error lacks %q:\n%v", want, err)
		}
	}
}
