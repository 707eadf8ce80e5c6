package sql

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// sqliteStoreOf returns the SQLite store of s.
func sqliteStoreOf(t *testing.T, s *sink) *sqliteStore {
	t.Helper()
	st, ok := s.db.(*sqliteStore)
	if !ok {
		t.Fatalf("store = %T, want *sqliteStore", s.db)
	}
	return st
}

// answer is what a test compares of a result: the outcome and the message.
func answer(r sdk.Result) string {
	switch {
	case r.IsDelivered():
		return "delivered"
	case r.IsPermanent():
		return "permanent: " + r.Err().Error()
	}
	return fmt.Sprintf("other: %v", r)
}

// tableRows returns every row of the table in rowid order, inserted_at
// left out (it is the time of the insert).
func tableRows(t *testing.T, db *sql.DB, cols ...string) [][]any {
	t.Helper()
	q := "SELECT rowid, id, source, route, received_at, payload"
	for _, c := range cols {
		q += ", " + quote(c)
	}
	rows, err := db.Query(q + " FROM events ORDER BY rowid")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var all [][]any
	for rows.Next() {
		vals := make([]any, 6+len(cols))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		all = append(all, vals)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return all
}

// TestSQLiteBatchesAnswerAsRowByRow holds the many-row INSERTs to what one
// INSERT per row (the sink before them, and the path a refused row takes)
// answers and stores: a batch spanning several INSERTs, with rows the
// database refuses at an INSERT's first, middle and last row, duplicate ids
// inside the batch and inside one INSERT, and events refused before the
// database (not JSON, an unfit value), delivered twice. Every result (outcome
// and message) and every row, rowids included, must be the same.
func TestSQLiteBatchesAnswerAsRowByRow(t *testing.T) {
	cols := map[string]any{"call_sid": "data.callSid", "duration": "data.call_duration", "lead": "data.post_call.lead_status"}
	b := batchOf(0, 300)
	sameSid := func(i, as int) { b[i].Body = sinktest.NewEvent(as).Body } // refused: unique call_sid
	for _, i := range []int{5, 64, 95, 127, 128, 191, 250, 299} {
		sameSid(i, i-3)
	}
	sameSid(200, 201)             // 201 is refused: 200 took its call_sid first
	b[130].ID = b[10].ID          // a duplicate id in another INSERT: delivered, not stored again
	b[41].ID = b[40].ID           // in the same INSERT
	b[42].ID, b[43].ID = "x", "x" // a duplicate of a row that is itself refused, below
	sameSid(42, 1)
	b[7].Transformed = json.RawMessage(`{not json`)
	b[8].Body = json.RawMessage(strings.Replace(string(b[8].Body), `"call_duration": 120`, `"call_duration": "long"`, 1))

	run := func(t *testing.T, rowByRow bool) ([][]string, [][]any) {
		cfg := sqliteBackend.config(t)
		cfg["columns"] = cols
		cfg["column_types"] = map[string]any{"duration": "integer"}
		s := newTestSink(t, cfg, nil)
		sinktest.DeliverAll(t, s, []sdk.Event{sinktest.NewEvent(1000)}) // creates the table
		db := sqliteBackend.db(t, cfg)
		execSQL(t, db, `CREATE UNIQUE INDEX events_sid ON events (call_sid)`)
		st := sqliteStoreOf(t, s)
		if rowByRow {
			st.maxRows = 1
		} else if st.maxRows < 64 {
			t.Fatalf("maxRows = %d, want at least 64: the batch must span INSERTs of many rows", st.maxRows)
		}
		var answers [][]string
		for range 2 {
			results, err := s.Deliver(context.Background(), b)
			if err != nil {
				t.Fatalf("Deliver = %v", err)
			}
			a := make([]string, len(results))
			for i, r := range results {
				a[i] = answer(r)
			}
			answers = append(answers, a)
		}
		return answers, tableRows(t, db, "call_sid", "duration", "lead")
	}
	wantAnswers, wantRows := run(t, true)
	gotAnswers, gotRows := run(t, false)

	// The premises: the batch has rows refused both ways, and duplicates
	// that were delivered without a row.
	all := strings.Join(wantAnswers[0], "\n")
	if n := strings.Count(all, "sqlite refused"); n != 10 {
		t.Errorf("row by row: %d rows refused by sqlite, want 10", n)
	}
	if n := strings.Count(all, "permanent"); n != 12 {
		t.Errorf("row by row: %d permanent answers, want 12 (10 refused, 2 unfit)", n)
	}
	if want := 1 + 300 - 12 - 2; len(wantRows) != want {
		t.Errorf("row by row: %d rows, want %d", len(wantRows), want)
	}
	// Each payload is stored as json.Compact writes it, received_at in
	// sqliteTimeFormat.
	byID := map[string]sdk.Event{}
	for i := len(b) - 1; i >= 0; i-- {
		if !strings.HasPrefix(wantAnswers[0][i], "permanent") {
			byID[b[i].ID] = b[i] // the first delivered event of an id
		}
	}
	for _, r := range gotRows[1:] {
		ev := byID[r[1].(string)]
		var want bytes.Buffer
		if err := json.Compact(&want, ev.Payload()); err != nil || r[5] != want.String() {
			t.Errorf("payload of %s = %s, want %s (%v)", r[1], r[5], want.Bytes(), err)
		}
		if want := ev.ReceivedAt.UTC().Format(sqliteTimeFormat); r[4] != want {
			t.Errorf("received_at of %s = %s, want %s", r[1], r[4], want)
		}
	}
	for round := range wantAnswers {
		for i := range wantAnswers[round] {
			if gotAnswers[round][i] != wantAnswers[round][i] {
				t.Errorf("delivery %d, event %d: %s; one INSERT per row answers %s", round+1, i, gotAnswers[round][i], wantAnswers[round][i])
			}
		}
	}
	if !reflect.DeepEqual(gotRows, wantRows) {
		t.Errorf("the table holds %d rows; with one INSERT per row %d, or the same number of other rows", len(gotRows), len(wantRows))
		for i := range min(len(gotRows), len(wantRows)) {
			if !reflect.DeepEqual(gotRows[i], wantRows[i]) {
				t.Fatalf("first difference, row %d: %v; one INSERT per row: %v", i, gotRows[i], wantRows[i])
			}
		}
	}
}

// TestSQLiteOneRowInsert: the one-row INSERT is the statement the sink
// always ran.
func TestSQLiteOneRowInsert(t *testing.T) {
	cfg, err := parseConfig(sinktest.Config(t, map[string]any{"columns": map[string]any{"b": "x.b", "a": "x.a"}}))
	if err != nil {
		t.Fatal(err)
	}
	want := `INSERT INTO "events" (id, source, route, received_at, payload, "a", "b") VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	if got := newSQLite(cfg, nil).insertSQL(1); got != want {
		t.Errorf("insertSQL(1) = %s\nwant %s", got, want)
	}
	want = `INSERT INTO "events" (id, source, route, received_at, payload, "a", "b") VALUES (?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	if got := newSQLite(cfg, nil).insertSQL(2); got != want {
		t.Errorf("insertSQL(2) = %s\nwant %s", got, want)
	}
}

// TestSQLiteVariableLimit: the rows of one INSERT follow the connection's
// limit on parameters, and a batch past it is split.
func TestSQLiteVariableLimit(t *testing.T) {
	t.Run("lowered", func(t *testing.T) {
		cfg := referenceColumns(sqliteBackend.config(t)) // 10 parameters per row
		s := newTestSink(t, cfg, nil)
		sinktest.DeliverAll(t, s, batchOf(0, 1))
		st := sqliteStoreOf(t, s)
		c, err := st.db.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		old, err := sqlite.Limit(c, sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 35)
		c.Close()
		if err != nil || old < 999 {
			t.Fatalf("sqlite.Limit = %d, %v, want the old limit, at least 999", old, err)
		}
		st.closeInserts()
		st.maxRows = 0
		sinktest.DeliverAll(t, s, batchOf(1, 99))
		if st.maxRows != 3 {
			t.Errorf("maxRows = %d, want 3 (35 parameters / 10 per row)", st.maxRows)
		}
		if n := countRows(t, sqliteBackend.db(t, cfg), cfg); n != 100 {
			t.Errorf("rows = %d, want 100", n)
		}
	})
	t.Run("real", func(t *testing.T) {
		cfg := referenceColumns(sqliteBackend.config(t))
		s := newTestSink(t, cfg, nil)
		const n = 4000 // 40,000 parameters: past the limit of 32,766
		sinktest.DeliverAll(t, s, batchOf(0, n))
		if n := countRows(t, sqliteBackend.db(t, cfg), cfg); n != 4000 {
			t.Errorf("rows = %d, want 4000", n)
		}
	})
}

// TestDuplicateIDInBatch: an id twice in one batch stores the first
// event's row and answers both delivered, as a redelivery is.
func TestDuplicateIDInBatch(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			cfg := be.config(t)
			cfg["columns"] = map[string]any{"call_sid": "data.callSid"}
			s := newTestSink(t, cfg, nil)
			b := batchOf(0, 4)
			b[2].ID = b[0].ID // another callSid, the same id
			sinktest.DeliverAll(t, s, b)
			db := be.db(t, cfg)
			if n := countRows(t, db, cfg); n != 3 {
				t.Errorf("rows = %d, want 3", n)
			}
			var sid string
			if err := db.QueryRow("SELECT call_sid FROM " + table(cfg) + " WHERE id = '" + b[0].ID + "'").Scan(&sid); err != nil {
				t.Fatal(err)
			}
			want, err := valueAt(b[0].Body, []string{"data", "callSid"})
			if err != nil {
				t.Fatal(err)
			}
			if sid != want {
				t.Errorf("call_sid of the duplicated id = %q, want the first event's %v", sid, want)
			}
		})
	}
}

// TestSQLiteTableDroppedByHand: the prepared INSERTs outlive a batch, so a
// table dropped (or remade) by hand under them must not wedge the sink: the
// next batch fails (the host retries it), and the one after recreates the
// table, prepares anew and stores it.
func TestSQLiteTableDroppedByHand(t *testing.T) {
	cfg := referenceColumns(sqliteBackend.config(t))
	s := newTestSink(t, cfg, nil)
	sinktest.DeliverAll(t, s, batchOf(0, 100))
	db := sqliteBackend.db(t, cfg)
	execSQL(t, db, "DROP TABLE events")
	b := batchOf(100, 100)
	if _, err := s.Deliver(context.Background(), b); err == nil || !strings.Contains(err.Error(), "no such table") {
		t.Fatalf("Deliver after DROP TABLE = %v, want the batch to fail with no such table", err)
	}
	sinktest.DeliverAll(t, s, b)
	if n := countRows(t, db, cfg); n != 100 {
		t.Errorf("rows = %d, want the 100 of the batch delivered after the table was made again", n)
	}
}
