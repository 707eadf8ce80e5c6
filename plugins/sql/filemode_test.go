package sql

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// TestSQLiteFileModes: with umask 022 and a directory that already exists
// 0755, the database and its -wal and -shm files are created 0600, so other
// users cannot read the stored payloads.
func TestSQLiteFileModes(t *testing.T) {
	old := syscall.Umask(0o022)
	t.Cleanup(func() { syscall.Umask(old) })
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := newSink()
	sinktest.Configure(t, s, map[string]any{"path": filepath.Join(dir, "events.db")})
	sinktest.DeliverAll(t, s, []sdk.Event{sinktest.NewEvent(1)})
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		seen[e.Name()] = true
		if m := info.Mode().Perm(); m&0o077 != 0 {
			t.Errorf("%s has mode %#o, want 0600", e.Name(), m)
		}
	}
	for _, want := range []string{"events.db", "events.db-wal"} {
		if !seen[want] {
			t.Errorf("%s was not created (have %s); the check would miss it", want, strings.Join(keys(seen), ", "))
		}
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
