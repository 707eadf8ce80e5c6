package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/pipelined/pipelined/sdk"
)

// sqliteTimeFormat is RFC 3339 in UTC with exactly nine fractional digits:
// unlike time.RFC3339Nano, which drops trailing zeros, every value has the
// same width, so received_at sorts as text.
const sqliteTimeFormat = "2006-01-02T15:04:05.000000000Z"

// sqliteStore writes to an SQLite file with modernc.org/sqlite (pure Go).
type sqliteStore struct {
	cfg settings
	log *slog.Logger

	db    *sql.DB // nil until the first deliver
	ready bool    // table created and columns checked

	// inserts holds the prepared INSERTs of 1, 2, 4, ... maxRows rows,
	// made as a batch needs them and kept until close or a schema change.
	inserts map[int]*sql.Stmt
	maxRows int   // rows in the largest INSERT; 0 until the first deliver
	args    []any // scratch for one INSERT's arguments
}

// maxInsertRows caps the rows of one INSERT: past a few hundred, a longer
// statement saves nothing measurable.
const maxInsertRows = 64

func newSQLite(cfg settings, log *slog.Logger) *sqliteStore {
	return &sqliteStore{cfg: cfg, log: log}
}

// rowColumns is the number of columns each row binds.
func (s *sqliteStore) rowColumns() int { return 5 + len(s.cfg.columns) }

// insertSQL is the INSERT of n rows: one VALUES tuple per row, each of
// rowColumns parameters, and ON CONFLICT (id) DO NOTHING for every row.
func (s *sqliteStore) insertSQL(n int) string {
	cols := []string{"id", "source", "route", "received_at", "payload"}
	for _, c := range s.cfg.columns {
		cols = append(cols, quote(c.name))
	}
	tuple := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ") + ")"
	var b strings.Builder
	fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES %s", quote(s.cfg.table), strings.Join(cols, ", "), tuple)
	for range n - 1 {
		b.WriteString(", ")
		b.WriteString(tuple)
	}
	b.WriteString(" ON CONFLICT (id) DO NOTHING")
	return b.String()
}

// dsn builds the modernc.org/sqlite DSN for path.
//
// _journal_mode=WAL with synchronous(FULL), on every connection: in WAL
// mode synchronous=NORMAL fsyncs the WAL only at checkpoints, so a commit
// acknowledged just before a power cut can be lost. The sink answers
// Delivered only once the row is durable, so every commit must fsync the
// WAL: FULL. _txlock=immediate takes the write lock at BEGIN, so a locked
// file shows as SQLITE_BUSY (after busy_timeout) before any work is done,
// never as a deadlock mid-batch.
func (s *sqliteStore) dsn() string {
	u := url.URL{Path: s.cfg.path} // escapes ? and # in the path
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", s.cfg.busyTimeout.Milliseconds()))
	q.Add("_pragma", fmt.Sprintf("page_size(%d)", sqlitePageSize))
	q.Add("_pragma", "synchronous(FULL)")
	q.Set("_journal_mode", "WAL") // after the _pragma list: see sqlitePageSize
	q.Set("_txlock", "immediate")
	return "file:" + u.EscapedPath() + "?" + q.Encode()
}

func (s *sqliteStore) open() error {
	if s.db != nil {
		return nil
	}
	if dir := filepath.Dir(s.cfg.path); dir != "." {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("create the database directory: %w", err)
		}
	}
	// SQLite creates a database 0644 (less the umask) and its -wal and
	// -shm files with the database's mode: create it 0600 first, so rows
	// (webhook payloads) are not readable by other users even when the
	// directory already exists and the umask is 022.
	f, err := os.OpenFile(s.cfg.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create the database file: %w", err)
	}
	f.Close()
	db, err := sql.Open("sqlite", s.dsn())
	if err != nil {
		return fmt.Errorf("open sqlite %s: %w", s.cfg.path, err)
	}
	// One connection: SQLite has one writer anyway, and every pragma of
	// the DSN then holds for every statement.
	db.SetMaxOpenConns(1)
	s.db = db
	return nil
}

// sqlitePageSize is the page size of a database the sink creates. A
// webhook's row is a kilobyte or more, so SQLite's default of 4 KiB makes
// a batch's commit write many pages, each a write to the file: with 16 KiB
// the sink makes 0.45 writes and 0.06 reads per event instead of 1.09 and
// 0.33, and spends 10–25% less CPU per event in BenchmarkDeliverSQLite
// (docs/performance.md, "Seventh round"). SQLite takes a page size only
// while the database is empty and not yet in WAL mode, and
// modernc.org/sqlite runs a DSN's _pragma values in lexical order
// (journal_mode before page_size), so WAL comes from its _journal_mode
// key, which it applies after them. An existing database keeps its own.
const sqlitePageSize = 16384

// ensureTable checks that the database is in WAL mode, creates the table
// if missing and adds the mapped columns it lacks.
func (s *sqliteStore) ensureTable(ctx context.Context) error {
	if s.ready {
		return nil
	}
	var mode string
	if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("read sqlite journal_mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("sqlite journal_mode is %q, not wal (an in-memory or read-only database?)", mode)
	}
	defs := []string{
		"id TEXT PRIMARY KEY",
		"source TEXT NOT NULL",
		"route TEXT NOT NULL",
		"received_at TEXT NOT NULL",
		"payload TEXT NOT NULL",
		"inserted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
	}
	for _, c := range s.cfg.columns {
		defs = append(defs, quote(c.name)+" "+sqliteType(c.typ))
	}
	create := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (\n\t%s\n)", quote(s.cfg.table), strings.Join(defs, ",\n\t"))
	if _, err := s.db.ExecContext(ctx, create); err != nil {
		return fmt.Errorf("create table %s: %w", s.cfg.table, err)
	}
	have, err := s.columns(ctx)
	if err != nil {
		return err
	}
	for _, b := range baseColumns {
		if !have[b] {
			return fmt.Errorf("table %s exists without column %s: it was not made by this sink; choose another table", s.cfg.table, b)
		}
	}
	for _, c := range s.cfg.columns {
		if have[strings.ToLower(c.name)] {
			continue
		}
		alter := fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", quote(s.cfg.table), quote(c.name), sqliteType(c.typ))
		if _, err := s.db.ExecContext(ctx, alter); err != nil {
			return fmt.Errorf("add column %s to table %s: %w", c.name, s.cfg.table, err)
		}
		s.log.Info("column added to existing table", "table", s.cfg.table, "column", c.name, "type", sqliteType(c.typ))
	}
	s.ready = true
	return nil
}

// columns returns the lower-cased column names of the table.
func (s *sqliteStore) columns(ctx context.Context) (map[string]bool, error) {
	rows, err := s.db.QueryContext(ctx, fmt.Sprintf("SELECT name FROM pragma_table_info('%s')", s.cfg.table))
	if err != nil {
		return nil, fmt.Errorf("list columns of table %s: %w", s.cfg.table, err)
	}
	defer rows.Close()
	have := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("list columns of table %s: %w", s.cfg.table, err)
		}
		have[strings.ToLower(name)] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list columns of table %s: %w", s.cfg.table, err)
	}
	return have, nil
}

func sqliteType(t colType) string {
	switch t {
	case typeInteger, typeBoolean:
		return "INTEGER"
	case typeReal:
		return "REAL"
	}
	return "TEXT"
}

// deliver inserts rows in one transaction, in INSERTs of many rows
// each (1, 2, 4, ... up to maxRows: a few prepared statements serve every
// batch size). SQLite's default conflict resolution (ABORT) undoes only the
// failing statement and keeps the transaction: when the database refuses
// a row of a many-row INSERT, which undoes all of its rows, deliver inserts
// those rows again one per statement, in order, as it always did, so a
// refused row is answered Permanent with the database's message and the
// others are delivered, the same answers and the same rows as inserting
// every row by itself. All commit with one fsync.
func (s *sqliteStore) deliver(ctx context.Context, rows []row, results []sdk.Result) error {
	if err := s.open(); err != nil {
		return err
	}
	if err := s.ensureTable(ctx); err != nil {
		return err
	}
	if err := s.prepare(ctx, len(rows)); err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin sqlite transaction: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	var rejected map[int]error
	for rest := rows; len(rest) > 0; {
		n := s.chunk(len(rest))
		err := s.insert(ctx, tx, rest[:n])
		if err != nil && n > 1 && isSQLiteDataError(err) {
			// Row by row, to find the refused ones.
			for k := range n {
				if err := s.insert(ctx, tx, rest[k:k+1]); err != nil {
					if rejected, err = s.refuse(rejected, rest[k], err); err != nil {
						return err
					}
				}
			}
		} else if err != nil {
			if rejected, err = s.refuse(rejected, rest[0], err); err != nil {
				return err
			}
		}
		rest = rest[n:]
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit sqlite transaction: %w", err)
	}
	for _, r := range rows {
		if err, ok := rejected[r.idx]; ok {
			results[r.idx] = sdk.Permanent(err)
		} else {
			results[r.idx] = sdk.Delivered()
		}
	}
	return nil
}

// refuse handles err, an INSERT's error: a data error, which deliver
// passes only from the INSERT of r alone, it records as r's refusal in
// rejected (made on the first); any other it returns, as the batch's.
func (s *sqliteStore) refuse(rejected map[int]error, r row, err error) (map[int]error, error) {
	if !isSQLiteDataError(err) {
		s.checkSchemaError(err)
		return rejected, fmt.Errorf("insert into %s: %w", s.cfg.table, err)
	}
	if rejected == nil {
		rejected = map[int]error{}
	}
	rejected[r.idx] = fmt.Errorf("sqlite refused event %s: %w", r.id, err)
	return rejected, nil
}

// chunk returns the rows of the next INSERT when n rows are left: the
// largest power of two not above n or maxRows.
func (s *sqliteStore) chunk(n int) int {
	c := 1
	for c*2 <= min(n, s.maxRows) {
		c *= 2
	}
	return c
}

// prepare makes the INSERTs a batch of n rows needs (and the one-row
// INSERT, which a refused row needs), before the transaction takes the
// database's only connection. The first call reads the connection's
// limit on parameters per statement.
func (s *sqliteStore) prepare(ctx context.Context, n int) error {
	if s.maxRows == 0 {
		limit, err := s.variableLimit(ctx)
		if err != nil {
			return err
		}
		s.maxRows = max(1, min(maxInsertRows, limit/s.rowColumns()))
	}
	if s.inserts == nil {
		s.inserts = map[int]*sql.Stmt{}
	}
	need := []int{1}
	for n > 0 {
		c := s.chunk(n)
		need = append(need, c)
		n -= c
	}
	for _, c := range need {
		if s.inserts[c] != nil {
			continue
		}
		stmt, err := s.db.PrepareContext(ctx, s.insertSQL(c))
		if err != nil {
			s.checkSchemaError(err)
			return fmt.Errorf("prepare insert: %w", err)
		}
		s.inserts[c] = stmt
	}
	return nil
}

// variableLimit returns SQLITE_LIMIT_VARIABLE_NUMBER of the connection:
// 32766 in modernc.org/sqlite's build, 999 in SQLite before 3.32.
func (s *sqliteStore) variableLimit(ctx context.Context) (int, error) {
	c, err := s.db.Conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("open sqlite %s: %w", s.cfg.path, err)
	}
	defer c.Close()
	n, err := sqlite.Limit(c, sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, -1)
	if err != nil {
		return 0, fmt.Errorf("read sqlite's parameter limit: %w", err)
	}
	return n, nil
}

// insert runs the prepared INSERT of len(rows) rows in tx.
func (s *sqliteStore) insert(ctx context.Context, tx *sql.Tx, rows []row) error {
	args := s.args[:0]
	for _, r := range rows {
		args = append(args, r.id, r.source, r.route, r.receivedText, r.payload)
		for _, v := range r.values {
			if j, ok := v.(jsonText); ok {
				v = string(j)
			}
			args = append(args, v)
		}
	}
	s.args = args
	_, err := tx.StmtContext(ctx, s.inserts[len(rows)]).ExecContext(ctx, args...)
	clear(args) // keep no payloads alive between batches
	return err
}

// checkSchemaError makes the next deliver check the table again, and
// prepare its INSERTs anew, when err says it is gone or changed (dropped
// by hand, say).
func (s *sqliteStore) checkSchemaError(err error) {
	msg := err.Error()
	if strings.Contains(msg, "no such table") || strings.Contains(msg, "has no column") {
		s.ready = false
		s.closeInserts()
	}
}

// closeInserts closes the prepared INSERTs.
func (s *sqliteStore) closeInserts() {
	for n, stmt := range s.inserts {
		stmt.Close()
		delete(s.inserts, n)
	}
}

// isSQLiteDataError reports whether err is the row's fault: a constraint,
// a datatype mismatch, a value too big. Those do not pass by retrying.
func isSQLiteDataError(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_MISMATCH, sqlite3.SQLITE_TOOBIG:
		return true
	}
	return false
}

func (s *sqliteStore) close() error {
	if s.db == nil {
		return nil
	}
	s.closeInserts()
	err := s.db.Close()
	s.db, s.ready, s.maxRows = nil, false, 0
	return err
}
