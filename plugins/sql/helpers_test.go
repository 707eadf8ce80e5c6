package sql

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for the tests' own queries

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// backend is one database the contract tests run against.
type backend struct {
	name string
	// config returns a working config for a fresh table.
	config func(t testing.TB) map[string]any
	// db opens the database the config points at, for the test's queries.
	db func(t testing.TB, cfg map[string]any) *sql.DB
}

// table returns the (quoted, qualified) table of cfg.
func table(cfg map[string]any) string {
	t, _ := cfg["table"].(string)
	if t == "" {
		t = defaultTable
	}
	if s, _ := cfg["schema"].(string); s != "" {
		return quote(s) + "." + quote(t)
	}
	return quote(t)
}

var sqliteBackend = backend{
	name: "sqlite",
	config: func(t testing.TB) map[string]any {
		return map[string]any{"path": filepath.Join(t.TempDir(), "db", "events.db")}
	},
	db: func(t testing.TB, cfg map[string]any) *sql.DB {
		t.Helper()
		db, err := sql.Open("sqlite", "file:"+cfg["path"].(string)+"?_pragma=busy_timeout(5000)")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	},
}

const pgEnv = "PIPELINED_TEST_PG_DSN"

// pgDSN returns the test server's DSN, or skips the test.
func pgDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(pgEnv)
	if dsn == "" && os.Getenv("CI") == "true" {
		t.Fatal("CI runs the PostgreSQL tests: `make test` sets PIPELINED_TEST_PG_DSN from testdata/pg-start.sh, which failed")
	}
	if dsn == "" {
		t.Skip("set PIPELINED_TEST_PG_DSN (e.g. postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable; testdata/pg-start.sh starts one) to run the PostgreSQL tests")
	}
	return dsn
}

var pgBackend = backend{
	name: "postgres",
	config: func(t testing.TB) map[string]any {
		pgDSN(t)
		return map[string]any{"driver": "postgres", "dsn_env": pgEnv, "table": uniqueName("t")}
	},
	db: func(t testing.TB, _ map[string]any) *sql.DB {
		t.Helper()
		db, err := sql.Open("pgx", pgDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	},
}

var backends = []backend{sqliteBackend, pgBackend}

// uniqueName returns a fresh identifier, so tests can rerun against the
// same PostgreSQL server and never see each other's tables.
func uniqueName(prefix string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return prefix + "_" + hex.EncodeToString(b)
}

// newTestSink returns a sink configured with cfg whose logs go to logs
// (when not nil), closed when the test ends.
func newTestSink(t testing.TB, cfg map[string]any, logs *testlog.Buffer) *sink {
	t.Helper()
	s := newSink()
	if logs != nil {
		s.log = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if err := s.Configure(context.Background(), sinktest.Config(t, cfg)); err != nil {
		t.Fatalf("Configure(%v) = %v", cfg, err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func batchOf(first, n int) []sdk.Event {
	b := make([]sdk.Event, n)
	for i := range b {
		b[i] = sinktest.NewEvent(first + i)
	}
	return b
}

func count(t testing.TB, db *sql.DB, query string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func execSQL(t testing.TB, db *sql.DB, query string) {
	t.Helper()
	if _, err := db.Exec(query); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func countRows(t testing.TB, db *sql.DB, cfg map[string]any) int {
	t.Helper()
	return count(t, db, "SELECT count(*) FROM "+table(cfg))
}

func ids(first, n int) string {
	var b bytes.Buffer
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "'%s'", sinktest.NewEvent(first+i).ID)
	}
	return b.String()
}

func sdkTestLogger(w *testlog.Buffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
