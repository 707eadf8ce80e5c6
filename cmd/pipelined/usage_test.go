package main

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/pipeline/admin"
)

// TestCommandHelp: every command's -h prints that command's usage on
// stdout and exits 0, not the shared list of commands.
func TestCommandHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in stdout
	}{
		{[]string{"serve", "-h"}, "usage: pipelined serve"},
		{[]string{"check", "-h"}, "usage: pipelined check"},
		{[]string{"check", "--help"}, "-no-plugins"},
		{[]string{"test", "-h"}, "usage: pipelined test"},
		{[]string{"version", "-h"}, "usage: pipelined version [--json]"},
		{[]string{"plugins", "list", "-h"}, "pipelined plugins list"},
		{[]string{"plugins", "describe", "-h"}, "pipelined plugins describe NAME"},
		{[]string{"sinks", "-h"}, "  pipelined sinks"},
		{[]string{"events", "-h"}, "  pipelined events show ID"},
		{[]string{"events", "list", "-h"}, "-when expression"},
		{[]string{"events", "show", "-h"}, "  pipelined events show ID"},
		{[]string{"dlq", "retry", "-h"}, "  pipelined dlq retry SINK"},
		{[]string{"replay", "-h"}, "  pipelined replay --sink S"},
		{[]string{"reload", "-h"}, "  pipelined reload"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := runPipelined(t, tc.args...)
			if code != 0 || !strings.Contains(stdout, tc.want) {
				t.Fatalf("pipelined %s = exit %d, stdout %q, stderr %q; want 0 and %q", strings.Join(tc.args, " "), code, stdout, stderr, tc.want)
			}
			if strings.Contains(stdout, "commands:") || strings.Count(stdout, "  pipelined ") > 4 {
				t.Errorf("pipelined %s printed more than its own usage:\n%s", strings.Join(tc.args, " "), stdout)
			}
		})
	}
}

// TestHelpSaysHowToWriteTimes only where a command takes a time.
func TestHelpSaysHowToWriteTimes(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		times bool
	}{
		{[]string{"events", "list", "-h"}, true},
		{[]string{"replay", "-h"}, true},
		{[]string{"dlq", "-h"}, false},
		{[]string{"sinks", "-h"}, false},
	} {
		_, stdout, _ := runPipelined(t, tc.args...)
		if got := strings.Contains(stdout, "Times are RFC 3339"); got != tc.times || !strings.Contains(stdout, "Exit status:") {
			t.Errorf("pipelined %s: says how to write times = %v, want %v:\n%s", strings.Join(tc.args, " "), got, tc.times, stdout)
		}
	}
}

// TestVersionJSON: version --json is an object with the version.
func TestVersionJSON(t *testing.T) {
	code, stdout, stderr := runPipelined(t, "version", "--json")
	var v map[string]string
	if code != 0 || json.Unmarshal([]byte(stdout), &v) != nil || v["version"] == "" || v["go"] == "" {
		t.Fatalf("version --json = exit %d, %q (stderr %q); want 0 and {\"version\": …, \"go\": …}", code, stdout, stderr)
	}
}

// TestTableHeadingsAreJSONKeys: each table's headings, lower-cased, are
// keys of the JSON that --json prints, so an operator can go from one to
// the other.
func TestTableHeadingsAreJSONKeys(t *testing.T) {
	srv, _, _ := adminServer(t)
	for _, tc := range []struct {
		args []string
		typ  any
	}{
		{[]string{"sinks"}, admin.SinkStatus{}},
		{[]string{"events", "list"}, admin.Event{}},
		{[]string{"events", "list", "--rejected"}, admin.Rejection{}},
		{[]string{"dlq", "list", "slack"}, admin.DeadLetter{}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Setenv("PIPELINED_TEST_ADMIN_TOKEN", cliToken)
			code, stdout, stderr := runPipelined(t, append(tc.args, "--admin", srv.URL, "--token-env", "PIPELINED_TEST_ADMIN_TOKEN")...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			keys := map[string]bool{}
			rt := reflect.TypeOf(tc.typ)
			for i := range rt.NumField() {
				name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
				keys[name] = true
			}
			header, _, _ := strings.Cut(stdout, "\n")
			for _, h := range strings.Fields(header) {
				if !keys[strings.ToLower(h)] {
					t.Errorf("heading %s is not a JSON key of %s (keys %v)", h, rt.Name(), keys)
				}
			}
		})
	}
}
