package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// TestConformance runs the sink through the real plugin protocol and
// checks the whole sink contract.
func TestConformance(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) (sdk.Sink, json.RawMessage) {
		return &csvSink{}, json.RawMessage(`{"path": "` + filepath.Join(t.TempDir(), "events.csv") + `"}`)
	})
}

// TestBinary builds the plugin and runs the same checks on the process,
// which also proves it prints nothing to stdout.
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "pipelined-sink-csv")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	sinktest.RunBinary(t, bin, json.RawMessage(`{"path": "`+filepath.Join(t.TempDir(), "events.csv")+`"}`))
}

// TestRows checks what the file holds.
func TestRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.csv")
	s := sinktest.Serve(t, &csvSink{})
	ctx := context.Background()
	if err := s.Configure(ctx, json.RawMessage(`{"path": "`+path+`"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Deliver(ctx, []sdk.Event{sinktest.NewEvent(1), sinktest.NewEvent(2)}); err != nil {
		t.Fatal(err)
	}
	if err := s.(sdk.Closer).Close(ctx); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || rows[0][0] != "id" || rows[1][0] != "sinktest-000001" || rows[2][0] != "sinktest-000002" {
		t.Errorf("rows = %q, want a header and 2 events", rows)
	}
}
