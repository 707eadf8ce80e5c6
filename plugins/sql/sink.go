package sql

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pipelined/pipelined/plugins/internal/jsoncompact"
	"github.com/pipelined/pipelined/sdk"
)

// sink stores events as rows of a SQL table.
//
// # Config
//
//	driver        "sqlite"; or "postgres"
//	path          "data/events.db"; sqlite: the database file
//	dsn_env       postgres: environment variable holding the DSN
//	dsn_file      postgres: file holding the DSN (exactly one of dsn_env, dsn_file; an inline dsn is refused)
//	table         "events"; a plain identifier, used exactly as written (quoted)
//	schema        postgres: the table's schema, created if missing; default the current schema
//	columns       { name = "dot.path" }: extra columns filled from the payload
//	column_types  { name = "integer" }: text (default), integer, real, boolean, json
//	busy_timeout  "5s"; sqlite: wait for another connection's lock this long
//
// # Table
//
//	id          TEXT PRIMARY KEY    the event id: inserts are ON CONFLICT (id) DO NOTHING
//	source      TEXT NOT NULL
//	route       TEXT NOT NULL
//	received_at TIMESTAMPTZ (postgres) / TEXT (sqlite, UTC, fixed-width RFC 3339 with nanoseconds, so it sorts)
//	payload     JSONB (postgres) / TEXT holding compact JSON (sqlite): ev.Payload()
//	inserted_at TIMESTAMPTZ / TEXT, default now: the time of the INSERT, which the rows of one batch may share
//	<mapped>    one column per columns entry: TEXT, BIGINT/INTEGER, DOUBLE PRECISION/REAL, BOOLEAN/INTEGER, JSONB/TEXT
//
// The first Deliver creates the table if missing (and the SQLite file's
// directory), and adds mapped columns an existing table lacks. A SQLite
// file it creates has 16 KiB pages (SQLite's default is 4 KiB; a row is a
// kilobyte or more); one that exists keeps its own, and is put in WAL mode.
//
// # Delivery
//
// One Deliver is one transaction. Delivered is answered only after it
// commits (SQLite: WAL with synchronous=FULL, so a commit is fsynced).
// An event whose payload or mapped value is unfit (not JSON, "abc" for an
// integer column) is answered Permanent without touching the database. When
// the database rejects a row (a constraint, a bad value: SQLSTATE class 22
// or 23 on PostgreSQL, SQLITE_CONSTRAINT/MISMATCH/TOOBIG on SQLite), that
// event is answered Permanent with the database's message and the others
// are delivered. Anything else (connection lost, database restarted, SQLite
// file locked past busy_timeout) fails the whole batch, which the host
// retries; nothing was committed, and the next Deliver reconnects.
type sink struct {
	log *slog.Logger

	// mu serializes Configure, Deliver and Close; the host never overlaps
	// them, this only makes a misbehaving caller safe.
	mu     sync.Mutex
	cfg    settings
	db     store // nil until Configure
	closed bool

	// extract finds the mapped columns' values in a payload; spans is its
	// scratch. Both are made by Configure.
	extract *extractor
	spans   []span
}

// store is one database backend.
type store interface {
	// deliver inserts rows in one transaction and sets results[r.idx] for
	// every row; a non-nil error fails the whole batch (results unused).
	deliver(ctx context.Context, rows []row, results []sdk.Result) error
	close() error
}

var (
	_ sdk.Sink      = (*sink)(nil)
	_ sdk.Closer    = (*sink)(nil)
	_ sdk.Describer = (*sink)(nil)
)

func newSink() *sink { return &sink{log: sdk.Logger()} }

// Configure decodes and validates the config; it opens nothing.
func (s *sink) Configure(_ context.Context, raw json.RawMessage) error {
	cfg, err := parseConfig(raw)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db != nil {
		_ = s.db.close()
	}
	s.cfg = cfg
	paths := make([][]string, len(cfg.columns))
	for j, c := range cfg.columns {
		paths[j] = c.path
	}
	s.extract, s.spans = newExtractor(paths), make([]span, len(paths))
	switch cfg.driver {
	case driverPostgres:
		s.db, err = newPostgres(cfg, s.log)
	default:
		s.db = newSQLite(cfg, s.log)
	}
	s.closed = false
	return err
}

// Deliver inserts the batch in one transaction; see [sink].
func (s *sink) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return nil, errors.New("sql sink is closed")
	case s.db == nil:
		return nil, errors.New("sql sink is not configured")
	}
	if len(batch) == 0 {
		return nil, nil
	}
	results := make([]sdk.Result, len(batch))
	rows := s.makeRows(batch, results)
	if len(rows) > 0 {
		if err := s.db.deliver(ctx, rows, results); err != nil {
			return nil, err
		}
	}
	return results, nil
}

// Close closes the database or pool. Deliver fails after it.
func (s *sink) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.db == nil {
		s.closed = true
		return nil
	}
	s.closed = true
	return s.db.close()
}

// row is one event ready to insert.
type row struct {
	idx          int // index in the batch
	id           string
	source       string
	route        string
	receivedAt   time.Time // UTC
	receivedText string    // sqlite: receivedAt in sqliteTimeFormat
	payload      string    // compact JSON for sqlite, as received for postgres
	values       []any     // one per mapped column, in cfg.columns order; nil is NULL
}

// makeRows returns the rows of batch to insert, and answers Permanent in
// results for each event whose payload or mapped values are unfit: an error
// the event will not pass by retrying.
//
// SQLite stores the payload compacted (PostgreSQL's JSONB normalizes it
// anyway); the received_at texts and the compacted payloads of the batch
// are written one after another into one buffer, made a string once, and
// every row's strings (the mapped columns' too, when they need no
// unescaping) are slices of it: two allocations per batch instead of
// several per row.
func (s *sink) makeRows(batch []sdk.Event, results []sdk.Result) []row {
	compact := s.cfg.driver == driverSQLite
	rows := make([]row, 0, len(batch))
	var buf []byte
	var ends [][2]int // sqlite: per row, where its receivedText and its payload end in buf
	if compact {
		n := 0
		for i := range batch {
			n += len(sqliteTimeFormat) + len(batch[i].Payload())
		}
		buf = make([]byte, 0, n)
		ends = make([][2]int, 0, len(batch))
	}
	for i := range batch {
		ev := &batch[i]
		r := row{idx: i, id: ev.ID, source: ev.Source, route: ev.Route, receivedAt: ev.ReceivedAt.UTC()}
		p := ev.Payload()
		if compact {
			start := len(buf)
			buf = r.receivedAt.AppendFormat(buf, sqliteTimeFormat)
			mid := len(buf)
			b, err := jsoncompact.Append(buf, p)
			if err != nil {
				buf = buf[:start]
				results[i] = sdk.Permanent(fmt.Errorf("payload of event %s is not JSON: %w", ev.ID, err))
				continue
			}
			buf = b
			ends = append(ends, [2]int{mid, len(buf)})
		} else {
			if !json.Valid(p) {
				results[i] = sdk.Permanent(fmt.Errorf("payload of event %s is not JSON", ev.ID))
				continue
			}
			r.payload = string(p)
		}
		rows = append(rows, r)
	}
	text := string(buf)
	cols := len(s.cfg.columns)
	values := make([]any, len(rows)*cols)
	kept := rows[:0]
	start := 0
	for k, r := range rows {
		var p []byte // the payload stored, for the extractor
		if compact {
			mid, end := ends[k][0], ends[k][1]
			r.receivedText, r.payload, p = text[start:mid], text[mid:end], buf[mid:end]
			start = end
		} else {
			p = batch[r.idx].Payload()
		}
		if cols > 0 {
			r.values = values[k*cols : (k+1)*cols : (k+1)*cols]
			if err := s.mapColumns(&r, p); err != nil {
				results[r.idx] = sdk.Permanent(err)
				continue
			}
		}
		kept = append(kept, r)
	}
	return kept
}

// mapColumns sets r.values from p, the text of r.payload. An error is the
// event's fault.
func (s *sink) mapColumns(r *row, p []byte) error {
	s.extract.find(p, s.spans)
	for j, c := range s.cfg.columns {
		var v any
		if sp := s.spans[j]; sp.start < sp.end {
			var err error
			if v, err = decodeValue(r.payload[sp.start:sp.end]); err != nil {
				return fmt.Errorf("payload of event %s is not JSON: %w", r.id, err)
			}
		}
		v, err := convert(v, c.typ)
		if err != nil {
			return fmt.Errorf("column %q (%s) of event %s: %w", c.name, strings.Join(c.path, "."), r.id, err)
		}
		r.values[j] = v
	}
	return nil
}

// jsonText is a JSON value to store as text (SQLite) or JSONB (PostgreSQL).
type jsonText string

// convert turns a decoded JSON value into the Go value stored in a column
// of type t: nil (NULL), string, int64, float64, bool or jsonText.
func convert(v any, t colType) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch t {
	case typeText:
		if s, ok := v.(string); ok {
			return s, nil
		}
		b, err := json.Marshal(v)
		return string(b), err
	case typeJSON:
		b, err := json.Marshal(v)
		return jsonText(b), err
	case typeInteger:
		n, ok := number(v)
		if !ok {
			break
		}
		if i, err := strconv.ParseInt(n, 10, 64); err == nil {
			return i, nil
		}
		f, err := strconv.ParseFloat(n, 64)
		if err == nil && f == math.Trunc(f) && math.Abs(f) < 1<<63 {
			return int64(f), nil
		}
		return nil, fmt.Errorf("want an integer, got %s", n)
	case typeReal:
		n, ok := number(v)
		if !ok {
			break
		}
		f, err := strconv.ParseFloat(n, 64)
		if err != nil {
			return nil, fmt.Errorf("want a number, got %s", n)
		}
		return f, nil
	case typeBoolean:
		switch b := v.(type) {
		case bool:
			return b, nil
		case string:
			if p, err := strconv.ParseBool(b); err == nil {
				return p, nil
			}
		}
	}
	b, _ := json.Marshal(v)
	if len(b) > 64 {
		b = append(b[:61], "..."...)
	}
	return nil, fmt.Errorf("want %s, got %s", t, b)
}

// number returns the text of a JSON number, or of a string holding one.
func number(v any) (string, bool) {
	switch n := v.(type) {
	case json.Number:
		return string(n), true
	case string:
		s := strings.TrimSpace(n)
		if _, err := strconv.ParseFloat(s, 64); err == nil {
			return s, true
		}
	}
	return "", false
}

// quote quotes a validated identifier.
func quote(name string) string { return `"` + name + `"` }

// redactor removes a secret (the DSN and its password) from error
// messages. pgx already redacts passwords in the errors it makes; this is
// the belt to its braces, since a DSN in keyword form or a server message
// could still carry one.
type redactor struct{ secrets []string }

func newRedactor(secrets ...string) redactor {
	var r redactor
	for _, s := range secrets {
		if s != "" {
			r.secrets = append(r.secrets, s)
		}
	}
	return r
}

// redact returns err with every secret replaced by xxxxx; errors.Is and
// errors.As still see the original.
func (r redactor) redact(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := msg
	for _, s := range r.secrets {
		clean = strings.ReplaceAll(clean, s, "xxxxx")
	}
	if clean == msg {
		return err
	}
	return &redactedError{msg: clean, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
