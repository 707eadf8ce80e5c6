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

	db     *sql.DB // nil until the first deliver
	ready  bool    // table created and columns checked
	insert string
}

func newSQLite(cfg settings, log *slog.Logger) *sqliteStore {
	cols := []string{"id", "source", "route", "received_at", "payload"}
	for _, c := range cfg.columns {
		cols = append(cols, quote(c.name))
	}
	marks := strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ")
	return &sqliteStore{
		cfg: cfg,
		log: log,
		insert: fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s) ON CONFLICT (id) DO NOTHING",
			quote(cfg.table), strings.Join(cols, ", "), marks),
	}
}

// dsn builds the modernc.org/sqlite DSN for path.
//
// journal_mode(WAL) with synchronous(FULL): in WAL mode synchronous=NORMAL
// fsyncs the WAL only at checkpoints, so a commit acknowledged just before a
// power cut can be lost. The sink answers Delivered only once the row is
// durable, so every commit must fsync the WAL: FULL. _txlock=immediate takes
// the write lock at BEGIN, so a locked file shows as SQLITE_BUSY (after
// busy_timeout) before any work is done, never as a deadlock mid-batch.
func (s *sqliteStore) dsn() string {
	u := url.URL{Path: s.cfg.path} // escapes ? and # in the path
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", s.cfg.busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
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

// ensureTable creates the table if missing and adds the mapped columns it
// lacks.
func (s *sqliteStore) ensureTable(ctx context.Context) error {
	if s.ready {
		return nil
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

// deliver inserts rows in one transaction. SQLite's default conflict
// resolution (ABORT) undoes only the failing statement and keeps the
// transaction, so each row being its own statement is already the
// row-by-row retry: a rejected row is answered Permanent and the others
// commit with one fsync.
func (s *sqliteStore) deliver(ctx context.Context, rows []row, results []sdk.Result) error {
	if err := s.open(); err != nil {
		return err
	}
	if err := s.ensureTable(ctx); err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin sqlite transaction: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	stmt, err := tx.PrepareContext(ctx, s.insert)
	if err != nil {
		s.checkSchemaError(err)
		return fmt.Errorf("prepare insert: %w", err)
	}
	defer stmt.Close()
	rejected := map[int]error{}
	args := make([]any, 5+len(s.cfg.columns))
	for _, r := range rows {
		args[0], args[1], args[2] = r.id, r.source, r.route
		args[3] = r.receivedAt.Format(sqliteTimeFormat)
		args[4] = string(r.payload)
		for j, v := range r.values {
			if j, ok := v.(jsonText); ok {
				v = string(j)
			}
			args[5+j] = v
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			if isSQLiteDataError(err) {
				rejected[r.idx] = fmt.Errorf("sqlite refused event %s: %w", r.id, err)
				continue
			}
			s.checkSchemaError(err)
			return fmt.Errorf("insert into %s: %w", s.cfg.table, err)
		}
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

// checkSchemaError makes the next deliver check the table again when err
// says it is gone or changed (dropped by hand, say).
func (s *sqliteStore) checkSchemaError(err error) {
	msg := err.Error()
	if strings.Contains(msg, "no such table") || strings.Contains(msg, "has no column") {
		s.ready = false
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
	err := s.db.Close()
	s.db, s.ready = nil, false
	return err
}
