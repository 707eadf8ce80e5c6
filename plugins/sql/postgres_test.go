package sql

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// TestPostgresRejectedValue: a value PostgreSQL refuses (a NUL escape in
// JSONB: SQLSTATE 22P05) fails that event permanently, with the server's
// message, and the rest of the batch is delivered.
func TestPostgresRejectedValue(t *testing.T) {
	cfg := pgBackend.config(t)
	s := newTestSink(t, cfg, nil)
	b := batchOf(0, 5)
	b[2].Transformed = json.RawMessage(`{"text": "nul \u0000 here"}`)
	results, err := s.Deliver(context.Background(), b)
	if err != nil {
		t.Fatalf("Deliver = error %v, want per-event results", err)
	}
	for i, r := range results {
		if i == 2 {
			if !r.IsPermanent() || !strings.Contains(r.Err().Error(), "22P05") {
				t.Errorf("result %d = %v, want permanent with the server's SQLSTATE 22P05", i, r)
			}
		} else if !r.IsDelivered() {
			t.Errorf("result %d = %v, want delivered", i, r)
		}
	}
	if n := countRows(t, pgBackend.db(t, cfg), cfg); n != 4 {
		t.Errorf("rows = %d, want 4", n)
	}
}

// TestPostgresSchema: with schema set, the schema and table are created in it.
func TestPostgresSchema(t *testing.T) {
	cfg := pgBackend.config(t)
	cfg["schema"] = uniqueName("s")
	s := newTestSink(t, cfg, nil)
	sinktest.DeliverAll(t, s, batchOf(0, 3))
	db := pgBackend.db(t, cfg)
	if n := countRows(t, db, cfg); n != 3 {
		t.Errorf("rows in %s = %d, want 3", table(cfg), n)
	}
	// A second sink finds the schema there (no CREATE SCHEMA needed).
	sinktest.DeliverAll(t, newTestSink(t, cfg, nil), batchOf(3, 3))
	if n := countRows(t, db, cfg); n != 6 {
		t.Errorf("rows in %s = %d, want 6", table(cfg), n)
	}
}

// TestPostgresRestart restarts the server while batches are delivered:
// deliveries fail as batches (never Permanent), the same sink recovers on
// its own, and in the end every row is there once.
func TestPostgresRestart(t *testing.T) {
	cfg := pgBackend.config(t)
	restart := os.Getenv("PIPELINED_TEST_PG_RESTART")
	if restart == "" {
		t.Skip(`set PIPELINED_TEST_PG_RESTART to a command that restarts the test server (e.g. "testdata/pg-start.sh restart")`)
	}
	s := newTestSink(t, cfg, nil)
	sinktest.DeliverAll(t, s, batchOf(0, 50))

	done := make(chan error, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		out, err := exec.Command("sh", "-c", restart).CombinedOutput()
		if err != nil {
			t.Logf("restart output: %s", out)
		}
		done <- err
	}()
	const batches, size = 40, 50
	failures := 0
	deadline := time.Now().Add(60 * time.Second)
	for i := 1; i <= batches; i++ {
		b := batchOf(i*size, size)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			results, err := s.Deliver(ctx, b)
			cancel()
			if err == nil {
				for j, r := range results {
					if !r.IsDelivered() {
						t.Fatalf("batch %d result %d = %v, want delivered or a batch error", i, j, r)
					}
				}
				break
			}
			failures++
			if time.Now().After(deadline) {
				t.Fatalf("batch %d still failing after the restart: %v", i, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond) // spread the batches over the restart
	}
	if err := <-done; err != nil {
		t.Fatalf("restart the server: %v", err)
	}
	// One more batch after the restart surely finished: the pool recovers.
	sinktest.DeliverAll(t, s, batchOf((batches+1)*size, size))
	t.Logf("%d failed deliveries during the restart", failures)
	db := pgBackend.db(t, cfg)
	want := (batches + 2) * size
	if n := countRows(t, db, cfg); n != want {
		t.Errorf("rows = %d, want %d", n, want)
	}
	if n := count(t, db, "SELECT count(DISTINCT id) FROM "+table(cfg)); n != want {
		t.Errorf("distinct ids = %d, want %d", n, want)
	}
}

// TestSecretNeverLeaks: the DSN's password appears in no error, result or
// log line, whatever fails: a parse error, a refused connection, a server
// error, a database that does not exist.
func TestSecretNeverLeaks(t *testing.T) {
	const pw = "Hunter2-s3cret-PW"
	dsns := map[string]string{
		"refused":    "postgres://pipelined:" + pw + "@127.0.0.1:1/db?sslmode=disable&connect_timeout=2",
		"keyword":    "host=127.0.0.1 port=1 user=pipelined password=" + pw + " dbname=db sslmode=disable connect_timeout=2",
		"bad-port":   "postgres://pipelined:" + pw + "@127.0.0.1:notaport/db",
		"bad-option": "postgres://pipelined:" + pw + "@127.0.0.1/db?sslmode=sometimes",
	}
	if dsn := os.Getenv(pgEnv); dsn != "" {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(u.User.Username(), pw)
		u.Path = "/no_such_db_" + uniqueName("x")
		dsns["no-such-db"] = u.String() // trust auth: the server takes any password
	}
	for name, dsn := range dsns {
		t.Run(name, func(t *testing.T) {
			t.Setenv("SQLTEST_LEAK_DSN", dsn)
			var logs testlog.Buffer
			s := newSink()
			s.log = sdkTestLogger(&logs)
			var seen []string
			cfg := sinktest.Config(t, map[string]any{"driver": "postgres", "dsn_env": "SQLTEST_LEAK_DSN", "table": "t"})
			if err := s.Configure(context.Background(), cfg); err != nil {
				seen = append(seen, err.Error())
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				results, err := s.Deliver(ctx, []sdk.Event{sinktest.NewEvent(0)})
				if err == nil {
					t.Fatalf("Deliver with DSN %s = %v, want an error", name, results)
				}
				seen = append(seen, err.Error())
				for _, r := range results {
					if r.Err() != nil {
						seen = append(seen, r.Err().Error())
					}
				}
				s.Close(context.Background())
			}
			seen = append(seen, logs.String())
			for _, text := range seen {
				if strings.Contains(text, pw) {
					t.Errorf("the password appears in %q", text)
				}
			}
			t.Logf("error: %s", seen[0])
		})
	}
}
