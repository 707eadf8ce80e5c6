package sql

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pipelined/pipelined/sdk"
)

// pgStore writes to PostgreSQL through a pgxpool.
type pgStore struct {
	cfg    settings
	log    *slog.Logger
	poolCf *pgxpool.Config
	red    redactor

	pool   *pgxpool.Pool // nil until the first deliver
	ready  bool          // schema and table created, columns checked
	insert string
}

func newPostgres(cfg settings, log *slog.Logger) (*pgStore, error) {
	pc, err := pgxpool.ParseConfig(cfg.dsn)
	red := newRedactor(cfg.dsn)
	if err != nil {
		return nil, fmt.Errorf("config key dsn: %w", red.redact(err))
	}
	red = newRedactor(cfg.dsn, pc.ConnConfig.Password)
	if pc.ConnConfig.ConnectTimeout == 0 {
		pc.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	// One Deliver uses one connection at a time; keep a spare for a
	// reconnect while an old one is being torn down.
	pc.MaxConns = 2
	cols := []string{"id", "source", "route", "received_at", "payload"}
	marks := []string{"$1", "$2", "$3", "$4", "$5"}
	for i, c := range cfg.columns {
		cols = append(cols, quote(c.name))
		marks = append(marks, fmt.Sprintf("$%d", 6+i))
	}
	return &pgStore{
		cfg:    cfg,
		log:    log,
		poolCf: pc,
		red:    red,
		insert: fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s) ON CONFLICT (id) DO NOTHING",
			pgTable(cfg), strings.Join(cols, ", "), strings.Join(marks, ", ")),
	}, nil
}

func pgTable(cfg settings) string {
	if cfg.schema != "" {
		return quote(cfg.schema) + "." + quote(cfg.table)
	}
	return quote(cfg.table)
}

func pgType(t colType) string {
	switch t {
	case typeInteger:
		return "BIGINT"
	case typeReal:
		return "DOUBLE PRECISION"
	case typeBoolean:
		return "BOOLEAN"
	case typeJSON:
		return "JSONB"
	}
	return "TEXT"
}

// deliver sends the batch as one pgx.Batch that begins a transaction, then
// commits. When the database rejects a row for its data, the batch is
// rolled back and retried row by row, each under a savepoint, in one
// transaction: rejected rows are answered Permanent, the others commit.
// Other errors fail the batch; the pool's connections are then reset so
// the next deliver starts on fresh ones (a restarted server leaves every
// idle connection dead).
func (s *pgStore) deliver(ctx context.Context, rows []row, results []sdk.Result) error {
	err := s.deliverErr(ctx, rows, results)
	if err == nil {
		return nil
	}
	if isConnError(err) && s.pool != nil {
		s.pool.Reset()
	}
	if isSchemaError(err) {
		s.ready = false
	}
	return s.red.redact(err)
}

func (s *pgStore) deliverErr(ctx context.Context, rows []row, results []sdk.Result) error {
	if s.pool == nil {
		// NewWithConfig does not connect; the first Acquire does.
		pool, err := pgxpool.NewWithConfig(context.WithoutCancel(ctx), s.poolCf)
		if err != nil {
			return fmt.Errorf("postgres pool: %w", err)
		}
		s.pool = pool
	}
	if err := s.ensureTable(ctx); err != nil {
		return err
	}
	err := s.insertBatch(ctx, rows)
	if err == nil {
		for _, r := range rows {
			results[r.idx] = sdk.Delivered()
		}
		return nil
	}
	if !isPGDataError(err) {
		return fmt.Errorf("insert into %s: %w", s.cfg.table, err)
	}
	return s.insertRows(ctx, rows, results)
}

func (s *pgStore) args(r row) []any {
	args := make([]any, 0, 5+len(r.values))
	args = append(args, r.id, r.source, r.route, r.receivedAt, r.payload)
	for _, v := range r.values {
		if j, ok := v.(jsonText); ok {
			v = string(j)
		}
		args = append(args, v)
	}
	return args
}

// insertBatch is the fast path: BEGIN and every INSERT in one round trip,
// then COMMIT.
func (s *pgStore) insertBatch(ctx context.Context, rows []row) error {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	b := &pgx.Batch{}
	b.BeginTx(pgx.TxOptions{})
	for _, r := range rows {
		b.Queue(s.insert, s.args(r)...)
	}
	br := c.Conn().SendBatch(ctx, b)
	tx := br.Tx()
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	if err := br.Close(); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// insertRows is the slow path after a data error: one transaction, each
// row under its own savepoint.
func (s *pgStore) insertRows(ctx context.Context, rows []row, results []sdk.Result) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin postgres transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	rejected := map[int]error{}
	for _, r := range rows {
		sp, err := tx.Begin(ctx)
		if err != nil {
			return fmt.Errorf("savepoint: %w", err)
		}
		if _, err := sp.Exec(ctx, s.insert, s.args(r)...); err != nil {
			if !isPGDataError(err) {
				return fmt.Errorf("insert into %s: %w", s.cfg.table, err)
			}
			if err := sp.Rollback(ctx); err != nil {
				return fmt.Errorf("rollback to savepoint: %w", err)
			}
			rejected[r.idx] = s.red.redact(fmt.Errorf("postgres refused event %s: %w", r.id, err))
			continue
		}
		if err := sp.Commit(ctx); err != nil {
			return fmt.Errorf("release savepoint: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit postgres transaction: %w", err)
	}
	for _, r := range rows {
		if err, ok := rejected[r.idx]; ok {
			results[r.idx] = sdk.Permanent(err)
		} else {
			results[r.idx] = sdk.Delivered()
		}
	}
	if len(rejected) > 0 {
		s.log.Info("batch retried row by row after a data error", "table", s.cfg.table, "rows", len(rows), "rejected", len(rejected))
	}
	return nil
}

// ensureTable creates the schema and table if missing and adds the mapped
// columns the table lacks.
func (s *pgStore) ensureTable(ctx context.Context) error {
	if s.ready {
		return nil
	}
	if s.cfg.schema != "" {
		// Look first: CREATE SCHEMA IF NOT EXISTS needs the CREATE
		// privilege on the database even when the schema exists.
		var exists bool
		if err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", s.cfg.schema).Scan(&exists); err != nil {
			return fmt.Errorf("look up schema %s: %w", s.cfg.schema, err)
		}
		if !exists {
			if _, err := s.pool.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+quote(s.cfg.schema)); err != nil {
				return fmt.Errorf("create schema %s: %w", s.cfg.schema, err)
			}
			s.log.Info("schema created", "schema", s.cfg.schema)
		}
	}
	defs := []string{
		"id TEXT PRIMARY KEY",
		"source TEXT NOT NULL",
		"route TEXT NOT NULL",
		"received_at TIMESTAMPTZ NOT NULL",
		"payload JSONB NOT NULL",
		"inserted_at TIMESTAMPTZ NOT NULL DEFAULT now()",
	}
	for _, c := range s.cfg.columns {
		defs = append(defs, quote(c.name)+" "+pgType(c.typ))
	}
	create := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (\n\t%s\n)", pgTable(s.cfg), strings.Join(defs, ",\n\t"))
	if _, err := s.pool.Exec(ctx, create); err != nil {
		return fmt.Errorf("create table %s: %w", s.cfg.table, err)
	}
	schemaExpr := "current_schema()"
	args := []any{s.cfg.table}
	if s.cfg.schema != "" {
		schemaExpr = "$2"
		args = append(args, s.cfg.schema)
	}
	rows, err := s.pool.Query(ctx, "SELECT column_name FROM information_schema.columns WHERE table_name = $1 AND table_schema = "+schemaExpr, args...)
	if err != nil {
		return fmt.Errorf("list columns of table %s: %w", s.cfg.table, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list columns of table %s: %w", s.cfg.table, err)
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
	}
	for _, b := range baseColumns {
		if !have[b] {
			return fmt.Errorf("table %s exists without column %s: it was not made by this sink; choose another table", s.cfg.table, b)
		}
	}
	for _, c := range s.cfg.columns {
		if have[c.name] {
			continue
		}
		alter := fmt.Sprintf("ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s %s", pgTable(s.cfg), quote(c.name), pgType(c.typ))
		if _, err := s.pool.Exec(ctx, alter); err != nil {
			return fmt.Errorf("add column %s to table %s: %w", c.name, s.cfg.table, err)
		}
		s.log.Info("column added to existing table", "table", s.cfg.table, "column", c.name, "type", pgType(c.typ))
	}
	s.ready = true
	return nil
}

// isPGDataError reports whether err is the row's fault: SQLSTATE class 22
// (data exception: bad value, bad JSON) or 23 (integrity constraint).
func isPGDataError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23"))
}

// isSchemaError reports whether the table or a column is gone (dropped by
// hand, say): the next deliver checks the table again.
func isSchemaError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "42703" || pe.Code == "3F000")
}

// isConnError reports whether err may have left pooled connections dead:
// anything that is not an error the server reported for a statement, plus
// the server's connection (08) and shutdown (57P01-57P03) classes.
func isConnError(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return !errors.Is(err, context.Canceled)
	}
	return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P")
}

func (s *pgStore) close() error {
	if s.pool != nil {
		s.pool.Close()
		s.pool, s.ready = nil, false
	}
	return nil
}
