package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
)

// TestDropAllNamesTheFirstIDs: dlq drop --all of a dead-letter queue longer
// than an answer names lists the first admin.MaxListedIDs ids and says how
// many more it dropped.
func TestDropAllNamesTheFirstIDs(t *testing.T) {
	srv, l, _ := adminServer(t)
	t.Setenv("PIPELINED_TEST_ADMIN_TOKEN", cliToken)
	const more = admin.MaxListedIDs + 1 // beside adminServer's 2 dead letters of slack
	var es []pipeline.Entry
	for i := range more {
		es = append(es, pipeline.Entry{
			Event:   pipeline.Event{ID: fmt.Sprintf("many-%04d", i), Source: "callkaro", ReceivedAt: time.Now(), Body: []byte(`{}`), Auth: "none"},
			Targets: []pipeline.Target{{Sink: "slack", Route: "leads", Err: "transform failed"}},
		})
	}
	if _, err := l.Append(context.Background(), es); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runPipelined(t, "dlq", "drop", "slack", "--all", "--admin", srv.URL, "--token-env", "PIPELINED_TEST_ADMIN_TOKEN")
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if code != 0 || len(lines) != admin.MaxListedIDs+2 || lines[0] != fmt.Sprintf("dropped %d dead letter(s) of slack", more+2) ||
		lines[len(lines)-1] != "… and 3 more" {
		t.Fatalf("dlq drop slack --all = %d, %d lines: %q … %q\nstderr: %s", code, len(lines), lines[0], lines[len(lines)-1], stderr)
	}
}
