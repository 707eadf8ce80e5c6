package sql

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

func TestConformance(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			sinktest.Run(t, func(t *testing.T) (sdk.Sink, json.RawMessage) {
				return newSink(), sinktest.Config(t, be.config(t))
			})
		})
	}
}

func TestConfigErrors(t *testing.T) {
	t.Setenv("SQLTEST_DSN", "postgres://u:pw@127.0.0.1:1/db")
	tests := []struct {
		name string
		raw  string
		want []string // phrases the error must contain, all of them
	}{
		{"unknown-key", `{"tabel": "x"}`, []string{`"tabel"`}},
		{"driver", `{"driver": "mysql"}`, []string{`"driver" = "mysql"`, `"sqlite"`, `"postgres"`}},
		{"inline-dsn", `{"driver": "postgres", "dsn": "postgres://u:pw@h/db"}`, []string{`"dsn"`, "dsn_env", "dsn_file", "never"}},
		{"inline-dsn-sqlite", `{"dsn": "x"}`, []string{`"dsn"`, "dsn_env"}},
		{"no-dsn", `{"driver": "postgres"}`, []string{"dsn is required", "dsn_env", "dsn_file"}},
		{"dsn-env-unset", `{"driver": "postgres", "dsn_env": "SQLTEST_NO_SUCH_VAR"}`, []string{"SQLTEST_NO_SUCH_VAR", "not set"}},
		{"dsn-both", `{"driver": "postgres", "dsn_env": "SQLTEST_DSN", "dsn_file": "/x"}`, []string{"only one of dsn_env and dsn_file"}},
		{"dsn-env-sqlite", `{"dsn_env": "SQLTEST_DSN"}`, []string{`"dsn_env"`, `driver = "postgres"`}},
		{"path-postgres", `{"driver": "postgres", "dsn_env": "SQLTEST_DSN", "path": "x.db"}`, []string{`"path"`, `driver = "sqlite"`}},
		{"schema-sqlite", `{"schema": "s"}`, []string{`"schema"`}},
		{"table", `{"table": "events; DROP TABLE x"}`, []string{`"table"`, "plain identifier"}},
		{"table-digit", `{"table": "1events"}`, []string{`"table"`}},
		{"table-long", `{"table": "` + strings.Repeat("a", 64) + `"}`, []string{`"table"`, "63"}},
		{"schema", `{"driver": "postgres", "dsn_env": "SQLTEST_DSN", "schema": "a.b"}`, []string{`"schema"`}},
		{"column-name", `{"columns": {"call-sid": "data.callSid"}}`, []string{`"columns.call-sid"`, "plain identifier"}},
		{"column-base", `{"columns": {"ID": "data.callSid"}}`, []string{`"columns.ID"`, "every table has"}},
		{"column-payload", `{"columns": {"payload": "data"}}`, []string{`"columns.payload"`}},
		{"column-case", `{"columns": {"sid": "data.callSid", "SID": "data.callSid"}}`, []string{"differ only in case"}},
		{"column-path", `{"columns": {"sid": "data..callSid"}}`, []string{`"columns.sid"`, "dot path"}},
		{"column-path-empty", `{"columns": {"sid": ""}}`, []string{`"columns.sid"`}},
		{"column-type", `{"columns": {"d": "data.call_duration"}, "column_types": {"d": "decimal"}}`, []string{`"column_types.d" = "decimal"`, "integer"}},
		{"column-type-orphan", `{"column_types": {"d": "integer"}}`, []string{`"column_types.d"`, "names no column"}},
		{"columns-not-map", `{"columns": ["a"]}`, []string{`"columns"`}},
		{"busy-timeout", `{"busy_timeout": "soon"}`, []string{`"busy_timeout"`}},
		{"every-problem", `{"driver": "oracle", "table": "a b", "columns": {"id": "x"}}`, []string{`"driver"`, `"table"`, `"columns.id"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := newSink().Configure(context.Background(), json.RawMessage(tt.raw))
			if err == nil {
				t.Fatalf("Configure(%s) = nil, want an error containing %q", tt.raw, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Configure(%s) = %q, want it to contain %q", tt.raw, err, w)
				}
			}
			if strings.Contains(err.Error(), "pw@") {
				t.Errorf("Configure(%s) = %q, which contains the DSN's password", tt.raw, err)
			}
		})
	}
}

func TestConfigValues(t *testing.T) {
	got, err := parseConfig(json.RawMessage(`{}`))
	if err != nil || got.driver != "sqlite" || got.path != "data/events.db" || got.table != "events" || got.busyTimeout != 5*time.Second || got.columns != nil {
		t.Errorf("parseConfig({}) = %+v, %v, want the sqlite defaults", got, err)
	}
	got, err = parseConfig(json.RawMessage(`{"table": "calls", "columns": {"sid": "data.callSid", "dur": "data.call_duration", "meta": "data.call_metadata"}, "column_types": {"dur": "BIGINT", "meta": "jsonb"}}`))
	want := []column{
		{name: "dur", path: []string{"data", "call_duration"}, typ: typeInteger},
		{name: "meta", path: []string{"data", "call_metadata"}, typ: typeJSON},
		{name: "sid", path: []string{"data", "callSid"}, typ: typeText},
	}
	if err != nil || got.table != "calls" || !slices.EqualFunc(got.columns, want, func(a, b column) bool {
		return a.name == b.name && a.typ == b.typ && slices.Equal(a.path, b.path)
	}) {
		t.Errorf("parseConfig(columns) = %+v, %v, want columns %+v", got, err, want)
	}
	dsnFile := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(dsnFile, []byte("postgres://u:pw@127.0.0.1/db\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = parseConfig(sinktest.Config(t, map[string]any{"driver": "postgres", "dsn_file": dsnFile, "schema": "hooks"}))
	if err != nil || got.dsn != "postgres://u:pw@127.0.0.1/db" || got.schema != "hooks" {
		t.Errorf("parseConfig(dsn_file) = dsn %q schema %q, %v, want the file's DSN", got.dsn, got.schema, err)
	}
}

func TestDescribe(t *testing.T) {
	d := newSink().Describe()
	var names []string
	for _, f := range d.Fields {
		names = append(names, f.Name)
		if f.Doc == "" || f.Type == "" {
			t.Errorf("Describe field %q = %+v, want a type and a doc", f.Name, f)
		}
		if f.Secret != (f.Name == "dsn") {
			t.Errorf("Describe field %q Secret = %v, want true only for dsn", f.Name, f.Secret)
		}
	}
	// Every key of config must be described: dsn stands for dsn_env/dsn_file.
	for _, k := range []string{"driver", "path", "dsn", "table", "schema", "columns", "column_types", "busy_timeout"} {
		if !slices.Contains(names, k) {
			t.Errorf("Describe fields = %q, want %q", names, k)
		}
	}
	if d.Summary == "" {
		t.Error("Describe summary is empty")
	}
}

func TestConfigureHasNoSideEffects(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nested", "events.db")
	s := newTestSink(t, map[string]any{"path": path}, nil)
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Errorf("after Configure, Stat(dir) = %v, want not exist (the first Deliver creates it)", err)
	}
	sinktest.DeliverAll(t, s, batchOf(0, 1))
	if _, err := os.Stat(path); err != nil {
		t.Errorf("after Deliver, Stat(%s) = %v, want the database file", path, err)
	}
}

func TestIdempotent(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			cfg := be.config(t)
			s := newTestSink(t, cfg, nil)
			b := batchOf(0, 20)
			sinktest.DeliverAll(t, s, b)
			for i := range b {
				b[i].Attempt = 2
			}
			sinktest.DeliverAll(t, s, b)
			sinktest.DeliverAll(t, s, append(batchOf(10, 15), b[3])) // overlapping batch
			// A new process (a restarted plugin) redelivers too.
			sinktest.DeliverAll(t, newTestSink(t, cfg, nil), b)
			db := be.db(t, cfg)
			if n := countRows(t, db, cfg); n != 25 {
				t.Errorf("rows after redeliveries = %d, want 25 (each event once)", n)
			}
			if n := count(t, db, "SELECT count(DISTINCT id) FROM "+table(cfg)+" WHERE id IN ("+ids(0, 25)+")"); n != 25 {
				t.Errorf("distinct ids = %d, want 25", n)
			}
		})
	}
}

func TestRowContent(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			cfg := be.config(t)
			s := newTestSink(t, cfg, nil)
			ev := sinktest.NewEvent(7)
			sinktest.DeliverAll(t, s, []sdk.Event{ev})
			db := be.db(t, cfg)
			var id, source, route, payload string
			var receivedAt, insertedAt any
			err := db.QueryRow("SELECT id, source, route, received_at, payload, inserted_at FROM "+table(cfg)).
				Scan(&id, &source, &route, &receivedAt, &payload, &insertedAt)
			if err != nil {
				t.Fatal(err)
			}
			if id != ev.ID || source != ev.Source || route != ev.Route {
				t.Errorf("row = %q %q %q, want %q %q %q", id, source, route, ev.ID, ev.Source, ev.Route)
			}
			var got, want any
			if err := json.Unmarshal([]byte(payload), &got); err != nil {
				t.Fatalf("payload %q is not JSON: %v", payload, err)
			}
			json.Unmarshal(ev.Body, &want)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("payload = %s, want the body %s", payload, ev.Body)
			}
			switch v := receivedAt.(type) {
			case string: // sqlite
				if want := "2025-12-19T16:01:14.123456789Z"; v != want {
					t.Errorf("received_at = %q, want %q", v, want)
				}
				if ts, err := time.Parse(time.RFC3339Nano, insertedAt.(string)); err != nil || time.Since(ts) > time.Minute {
					t.Errorf("inserted_at = %q (%v), want now, RFC 3339", insertedAt, err)
				}
			case time.Time: // postgres
				if !v.Equal(ev.ReceivedAt.Truncate(time.Microsecond)) {
					t.Errorf("received_at = %v, want %v", v, ev.ReceivedAt)
				}
				if ts, ok := insertedAt.(time.Time); !ok || time.Since(ts) > time.Minute {
					t.Errorf("inserted_at = %v, want now", insertedAt)
				}
			default:
				t.Errorf("received_at = %T %v, want a string or time", receivedAt, receivedAt)
			}
		})
	}
}

// TestReceivedAtSorts checks that SQLite's text timestamps sort as times:
// RFC3339Nano would drop trailing zeros and sort .1Z after .12Z.
func TestReceivedAtSorts(t *testing.T) {
	cfg := sqliteBackend.config(t)
	s := newTestSink(t, cfg, nil)
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var b []sdk.Event
	for i, off := range []time.Duration{120 * time.Millisecond, 100 * time.Millisecond, 0, 1200 * time.Millisecond, 1e9} {
		ev := sinktest.NewEvent(i)
		ev.ReceivedAt = base.Add(off).In(time.FixedZone("IST", 5*3600+1800))
		b = append(b, ev)
	}
	sinktest.DeliverAll(t, s, b)
	rows, err := sqliteBackend.db(t, cfg).Query(`SELECT id FROM events ORDER BY received_at`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var id string
		rows.Scan(&id)
		got = append(got, id)
	}
	want := []string{b[2].ID, b[1].ID, b[0].ID, b[4].ID, b[3].ID}
	if !slices.Equal(got, want) {
		t.Errorf("ids by received_at = %q, want %q", got, want)
	}
}

func TestColumns(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			cfg := be.config(t)
			cfg["columns"] = map[string]any{
				"call_sid": "data.callSid", "duration": "data.call_duration", "age": "data.call_metadata.age",
				"converted": "data.conversion_status", "meta": "data.call_metadata", "fn0": "data.functions_called.0.name",
				"missing": "data.no_such_key", "dur_text": "data.call_duration", "order": "data.post_call.lead_status",
			}
			cfg["column_types"] = map[string]any{"duration": "integer", "age": "real", "converted": "boolean", "meta": "json"}
			s := newTestSink(t, cfg, nil)
			ev := sinktest.NewEvent(3)
			sinktest.DeliverAll(t, s, []sdk.Event{ev})
			db := be.db(t, cfg)
			var sid, fn0, durText, order string
			var duration int64
			var age float64
			var converted bool
			var meta string
			var missing *string
			err := db.QueryRow(`SELECT call_sid, duration, age, converted, meta, fn0, missing, dur_text, "order" FROM `+table(cfg)).
				Scan(&sid, &duration, &age, &converted, &meta, &fn0, &missing, &durText, &order)
			if err != nil {
				t.Fatal(err)
			}
			var body struct {
				Data struct {
					CallSid string `json:"callSid"`
				} `json:"data"`
			}
			json.Unmarshal(ev.Body, &body)
			if sid != body.Data.CallSid || duration != 120 || age != 25 || !converted || fn0 != "update_crm" || missing != nil || durText != "120" || order != "interested" {
				t.Errorf("columns = %q %d %v %v %q %v %q %q, want %q 120 25 true update_crm NULL \"120\" interested",
					sid, duration, age, converted, fn0, missing, durText, order, body.Data.CallSid)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(meta), &m); err != nil || m["name"] != "Jatin" {
				t.Errorf("meta = %q, want the call_metadata object", meta)
			}
			// The declared types are the columns' types.
			wantTypes := map[string]string{"duration": "integer", "age": "real", "converted": "integer", "meta": "text", "call_sid": "text", "missing": "null"}
			query := "SELECT typeof(%s) FROM " + table(cfg)
			if be.name == "postgres" {
				wantTypes = map[string]string{"duration": "bigint", "age": "double precision", "converted": "boolean", "meta": "jsonb", "call_sid": "text", "missing": "text"}
				query = "SELECT pg_typeof(%s)::text FROM " + table(cfg)
			}
			for col, want := range wantTypes {
				var got string
				if err := db.QueryRow(fmt.Sprintf(query, col)).Scan(&got); err != nil || got != want {
					t.Errorf("type of column %s = %q, %v, want %q", col, got, err, want)
				}
			}
		})
	}
}

func TestTransformedPayload(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			cfg := be.config(t)
			cfg["columns"] = map[string]any{"call_sid": "data.callSid", "text": "text"}
			s := newTestSink(t, cfg, nil)
			b := batchOf(0, 2)
			b[1].Transformed = json.RawMessage(`{"text": "Interested lead from 919876543210", "data": {"callSid": "from-transform"}}`)
			sinktest.DeliverAll(t, s, b)
			db := be.db(t, cfg)
			var payload string
			var sid, text *string
			if err := db.QueryRow("SELECT payload, call_sid, text FROM "+table(cfg)+" WHERE id = '"+b[1].ID+"'").Scan(&payload, &sid, &text); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(payload, "Interested lead from 919876543210") || strings.Contains(payload, "call_ended") {
				t.Errorf("payload = %s, want the transform's output, not the body", payload)
			}
			if sid == nil || *sid != "from-transform" || text == nil || *text != "Interested lead from 919876543210" {
				t.Errorf("call_sid, text = %v, %v, want the transform's values", sid, text)
			}
			if err := db.QueryRow("SELECT text FROM " + table(cfg) + " WHERE id = '" + b[0].ID + "'").Scan(&text); err != nil || text != nil {
				t.Errorf("text of the untransformed event = %v, %v, want NULL", text, err)
			}
		})
	}
}

// TestRejectedRow: a row the database refuses (here a unique index the
// operator added on a mapped column) is answered Permanent with the
// database's message; the rest of the batch is delivered.
func TestRejectedRow(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			cfg := be.config(t)
			cfg["columns"] = map[string]any{"call_sid": "data.callSid"}
			s := newTestSink(t, cfg, nil)
			sinktest.DeliverAll(t, s, batchOf(0, 1)) // creates the table
			db := be.db(t, cfg)
			tbl, _ := cfg["table"].(string)
			if tbl == "" {
				tbl = "events"
			}
			execSQL(t, db, "CREATE UNIQUE INDEX "+quote(tbl+"_sid")+" ON "+table(cfg)+" (call_sid)")

			b := batchOf(1, 6)
			b[3].Body = sinktest.NewEvent(1).Body // same callSid as b[0], another id
			results, err := s.Deliver(context.Background(), b)
			if err != nil {
				t.Fatalf("Deliver = error %v, want per-event results", err)
			}
			for i, r := range results {
				switch {
				case i == 3 && !r.IsPermanent():
					t.Errorf("result %d = %v, want permanent (duplicate call_sid)", i, r)
				case i == 3 && !strings.Contains(strings.ToLower(r.Err().Error()), "unique"):
					t.Errorf("result %d = %v, want the database's message (unique)", i, r)
				case i != 3 && !r.IsDelivered():
					t.Errorf("result %d = %v, want delivered", i, r)
				}
			}
			if n := countRows(t, db, cfg); n != 6 {
				t.Errorf("rows = %d, want 6 (all but the rejected one)", n)
			}
			if n := count(t, db, "SELECT count(*) FROM "+table(cfg)+" WHERE id = '"+b[3].ID+"'"); n != 0 {
				t.Errorf("rejected row present %d times, want 0", n)
			}
			// The sink is still usable, and redelivering the batch answers the
			// same way without duplicating anything.
			results, err = s.Deliver(context.Background(), b)
			if err != nil || !results[3].IsPermanent() || !results[0].IsDelivered() {
				t.Errorf("redelivery = %v, %v, want the same answers", results, err)
			}
			if n := countRows(t, db, cfg); n != 6 {
				t.Errorf("rows after redelivery = %d, want 6", n)
			}
		})
	}
}

// TestUnfitValue: a mapped value that does not fit its declared type, or a
// payload that is not JSON, fails that event permanently and only it.
func TestUnfitValue(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			cfg := be.config(t)
			cfg["columns"] = map[string]any{"duration": "data.call_duration"}
			cfg["column_types"] = map[string]any{"duration": "integer"}
			s := newTestSink(t, cfg, nil)
			b := batchOf(0, 4)
			b[1].Body = json.RawMessage(strings.Replace(string(b[1].Body), `"call_duration": 120`, `"call_duration": "two minutes"`, 1))
			b[2].Transformed = json.RawMessage(`{not json`)
			results, err := s.Deliver(context.Background(), b)
			if err != nil {
				t.Fatalf("Deliver = error %v", err)
			}
			if !results[1].IsPermanent() || !strings.Contains(results[1].Err().Error(), `column "duration"`) || !strings.Contains(results[1].Err().Error(), "two minutes") {
				t.Errorf("result for a non-integer duration = %v, want permanent naming the column and value", results[1])
			}
			if !results[2].IsPermanent() || !strings.Contains(results[2].Err().Error(), "not JSON") {
				t.Errorf("result for a non-JSON payload = %v, want permanent", results[2])
			}
			if !results[0].IsDelivered() || !results[3].IsDelivered() {
				t.Errorf("results = %v, want the others delivered", results)
			}
			if n := countRows(t, be.db(t, cfg), cfg); n != 2 {
				t.Errorf("rows = %d, want 2", n)
			}
		})
	}
}

// TestAddColumn: a table made before a column was mapped gets the column,
// and the log says so.
func TestAddColumn(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			cfg := be.config(t)
			sinktest.DeliverAll(t, newTestSink(t, cfg, nil), batchOf(0, 2))
			cfg["columns"] = map[string]any{"call_sid": "data.callSid", "duration": "data.call_duration"}
			cfg["column_types"] = map[string]any{"duration": "integer"}
			var logs testlog.Buffer
			sinktest.DeliverAll(t, newTestSink(t, cfg, &logs), batchOf(2, 2))
			db := be.db(t, cfg)
			if n := count(t, db, "SELECT count(*) FROM "+table(cfg)+" WHERE duration = 120 AND call_sid IS NOT NULL"); n != 2 {
				t.Errorf("rows with the new columns filled = %d, want 2", n)
			}
			if n := count(t, db, "SELECT count(*) FROM "+table(cfg)+" WHERE duration IS NULL"); n != 2 {
				t.Errorf("older rows with NULL in the new column = %d, want 2", n)
			}
			for _, col := range []string{"call_sid", "duration"} {
				if !strings.Contains(logs.String(), `"msg":"column added to existing table"`) || !strings.Contains(logs.String(), `"column":"`+col+`"`) {
					t.Errorf("log = %s, want a line saying column %s was added", logs.String(), col)
				}
			}
		})
	}
}

// TestSQLiteLocked: while another connection holds the write lock, a
// delivery fails as a batch (retried by the host) after busy_timeout, and
// nothing is lost; once the lock is released the redelivery succeeds.
func TestSQLiteLocked(t *testing.T) {
	cfg := sqliteBackend.config(t)
	cfg["busy_timeout"] = "200ms"
	s := newTestSink(t, cfg, nil)
	sinktest.DeliverAll(t, s, batchOf(0, 1))

	db := sqliteBackend.db(t, cfg)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	b := batchOf(1, 10)
	start := time.Now()
	results, err := s.Deliver(ctx, b)
	if err == nil {
		t.Fatalf("Deliver while the file is locked = %v, nil; want a batch error", results)
	}
	if !strings.Contains(err.Error(), "locked") && !strings.Contains(err.Error(), "busy") {
		t.Errorf("Deliver while locked = %v, want it to say the database is locked/busy", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 5*time.Second {
		t.Errorf("Deliver while locked took %v, want about busy_timeout (200ms)", d)
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	sinktest.DeliverAll(t, s, b)
	if n := countRows(t, db, cfg); n != 11 {
		t.Errorf("rows = %d, want 11", n)
	}
}

// TestSQLiteDurabilityPragmas checks the pragmas each connection runs with.
func TestSQLiteDurabilityPragmas(t *testing.T) {
	cfg := sqliteBackend.config(t)
	s := newTestSink(t, cfg, nil)
	sinktest.DeliverAll(t, s, batchOf(0, 1))
	st := s.db.(*sqliteStore)
	var mode string
	var sync, busy int
	if err := st.db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v, want wal", mode, err)
	}
	if err := st.db.QueryRow("PRAGMA synchronous").Scan(&sync); err != nil || sync != 2 {
		t.Errorf("synchronous = %d, %v, want 2 (FULL)", sync, err)
	}
	if err := st.db.QueryRow("PRAGMA busy_timeout").Scan(&busy); err != nil || busy != 5000 {
		t.Errorf("busy_timeout = %d, %v, want 5000", busy, err)
	}
	var page int
	if err := st.db.QueryRow("PRAGMA page_size").Scan(&page); err != nil || page != sqlitePageSize {
		t.Errorf("page_size of a new database = %d, %v, want %d", page, err, sqlitePageSize)
	}
	if n := st.db.Stats().MaxOpenConnections; n != 1 {
		t.Errorf("MaxOpenConnections = %d, want 1", n)
	}
}

// TestSQLiteKeepsAnExistingDatabase points the sink at a database made
// before the sink chose its page size, with 4 KiB pages and a row of its
// own: in rollback-journal mode, and in WAL mode as an older sink left it.
// The sink puts it in WAL mode (a setting the file keeps) and writes into
// it; the page size and the row stay.
func TestSQLiteKeepsAnExistingDatabase(t *testing.T) {
	for _, mode := range []string{"DELETE", "WAL"} {
		t.Run(mode, func(t *testing.T) {
			cfg := sqliteBackend.config(t)
			path := cfg["path"].(string)
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			old, err := sql.Open("sqlite", "file:"+path+"?_pragma=page_size(4096)&_journal_mode="+mode)
			if err != nil {
				t.Fatal(err)
			}
			var was string
			var wasPage int
			if _, err := old.Exec("CREATE TABLE notes (n INTEGER); INSERT INTO notes VALUES (7)"); err != nil {
				t.Fatal(err)
			}
			if err := old.QueryRow("PRAGMA journal_mode").Scan(&was); err != nil || !strings.EqualFold(was, mode) {
				t.Fatalf("the database made for the test is in %q mode, %v; want %s", was, err, mode)
			}
			if err := old.QueryRow("PRAGMA page_size").Scan(&wasPage); err != nil || wasPage != 4096 {
				t.Fatalf("the database made for the test has pages of %d, %v; want 4096", wasPage, err)
			}
			old.Close()

			s := newTestSink(t, cfg, nil)
			sinktest.DeliverAll(t, s, batchOf(0, 3))
			db := sqliteBackend.db(t, cfg)
			var got string
			var page, n int
			if err := db.QueryRow("PRAGMA journal_mode").Scan(&got); err != nil || got != "wal" {
				t.Errorf("journal_mode = %q, %v, want wal", got, err)
			}
			if err := db.QueryRow("PRAGMA page_size").Scan(&page); err != nil || page != 4096 {
				t.Errorf("page_size = %d, %v, want the database's own 4096", page, err)
			}
			if err := db.QueryRow("SELECT n FROM notes").Scan(&n); err != nil || n != 7 {
				t.Errorf("the database's own row: %d, %v, want 7", n, err)
			}
			if got := countRows(t, db, cfg); got != 3 {
				t.Errorf("rows delivered = %d, want 3", got)
			}
		})
	}
}

func TestDeliverAfterClose(t *testing.T) {
	s := newTestSink(t, sqliteBackend.config(t), nil)
	sinktest.DeliverAll(t, s, batchOf(0, 1))
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Deliver(context.Background(), batchOf(1, 1)); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Deliver after Close = %v, want an error saying the sink is closed", err)
	}
}

func TestDeliverUnusablePath(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := newTestSink(t, map[string]any{"path": filepath.Join(file, "sub", "events.db")}, nil)
	if _, err := s.Deliver(context.Background(), batchOf(0, 1)); err == nil {
		t.Error("Deliver into a path under a regular file = nil error, want a batch error")
	}
}

func TestLookupAndConvert(t *testing.T) {
	doc := []byte(`{"a": {"b": [1, "x"]}, "n": 2.5, "s": "42"}`)
	tests := []struct {
		path string
		typ  colType
		want any
		err  bool
	}{
		{"a.b.0", typeInteger, int64(1), false},
		{"a.b.1", typeText, "x", false},
		{"a.b.2", typeText, nil, false},
		{"a.b.x", typeText, nil, false},
		{"a.b", typeText, `[1,"x"]`, false},
		{"a.b", typeJSON, jsonText(`[1,"x"]`), false},
		{"n", typeReal, 2.5, false},
		{"n", typeInteger, nil, true},
		{"n", typeText, "2.5", false},
		{"s", typeInteger, int64(42), false},
		{"a.b.1", typeBoolean, nil, true},
		{"nope.deeper", typeInteger, nil, false},
	}
	for _, tt := range tests {
		v, err := valueAt(doc, strings.Split(tt.path, "."))
		if err != nil {
			t.Fatalf("valueAt(%q) error = %v", tt.path, err)
		}
		got, err := convert(v, tt.typ)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("convert(lookup(%q), %s) = %#v, %v, want %#v (error %v)", tt.path, tt.typ, got, err, tt.want, tt.err)
		}
	}
}
