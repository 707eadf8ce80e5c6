package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/pipelined/pipelined/sdk"
)

// sink archives events to JSON Lines files.
//
// # Config
//
//	dir      required; directory of the files, relative to the daemon's working directory
//	rotate   "1h"; rotate the current file when it is this old (Go duration)
//	max_size "64MiB"; rotate the current file when it is this big ("512KiB", "1GB", bytes)
//	compress "gzip"; gzip rotated files, or "none"
//	prefix   "events"; file name prefix
//
// # Files
//
// The current file is <dir>/<prefix>-<UTC start, 20060102T150405.000000000Z>.jsonl.
// Each line is one event: {"id", "source", "route", "received_at" (RFC 3339,
// nanoseconds, UTC), "attempt", "headers", "body"} with body the webhook's
// JSON as an object, plus "payload" when the route has a transform. Events
// are redelivered after failures (at least once): readers dedupe by id.
//
// Deliver writes the whole batch, fsyncs the file (and the directory when
// the file is new), and only then answers Delivered; a failed write or fsync
// answers Retry for the batch. A rotated file is gzipped in the background
// to <name>.jsonl.gz.tmp, fsynced, renamed to <name>.jsonl.gz, the
// directory fsynced, then <name>.jsonl removed, so a crash at any step
// leaves either the .jsonl or a complete .jsonl.gz. Close fsyncs and closes
// the current file without compressing it; the first Deliver after a start
// finishes what a crash or a Close left: it drops stale .tmp files, cuts a
// torn last line from every leftover .jsonl and compresses it.
//
// One directory and prefix belong to one sink: two sinks sharing them would
// take each other's current file for a leftover.
type sink struct {
	log *slog.Logger
	cfg settings

	// mu guards everything below; compressions run outside it, on files
	// that no longer change. It is the only mutex of the sink.
	mu       sync.Mutex
	started  bool // dir created, leftovers recovered, ticker running
	closed   bool
	cur      *os.File // nil until the first event after a start or rotation
	curPath  string
	curSize  int64
	curStart time.Time
	stop     chan struct{}  // closed by Close to stop the ticker
	wg       sync.WaitGroup // the ticker and compressions

	// spare is the buffer of the last batch's lines, kept for the next
	// one (when not too big); keys is appendRecord's scratch.
	spare []byte
	keys  []string
}

// maxSpare is the largest batch buffer kept between deliveries.
const maxSpare = 4 << 20

// lines returns an empty buffer for the lines of batch: the last batch's,
// or a new one of about the size they need. s.mu is held.
func (s *sink) lines(batch []sdk.Event) []byte {
	need := 0
	for i := range batch {
		e := &batch[i]
		need += 256 + len(e.ID) + len(e.Body) + len(e.Transformed)
		for k, v := range e.Headers {
			need += len(k) + len(v) + 6
		}
	}
	if cap(s.spare) >= need {
		buf := s.spare[:0]
		s.spare = nil
		return buf
	}
	return make([]byte, 0, need)
}

// keepLines keeps buf for the next batch when it is not too big. s.mu is
// held.
func (s *sink) keepLines(buf []byte) {
	if cap(buf) <= maxSpare {
		s.spare = buf[:0]
	}
}

var (
	_ sdk.Sink   = (*sink)(nil)
	_ sdk.Closer = (*sink)(nil)
)

func newSink() *sink {
	return &sink{log: sdk.Logger()}
}

// Configure decodes and validates the config; it touches no file.
func (s *sink) Configure(_ context.Context, raw json.RawMessage) error {
	cfg, err := parseConfig(raw)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = cfg
	return nil
}

// Deliver appends the batch to the current file and fsyncs it before it
// answers Delivered.
func (s *sink) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("archive sink is closed")
	}
	if s.cfg.dir == "" {
		return nil, errors.New("archive sink is not configured")
	}
	results := make([]sdk.Result, len(batch))
	buf := s.lines(batch)
	for i := range batch {
		var err error
		if buf, s.keys, err = appendRecord(buf, s.keys, &batch[i]); err != nil {
			results[i] = sdk.Permanent(fmt.Errorf("encode event %s: %w", batch[i].ID, err))
			continue
		}
		results[i] = sdk.Delivered()
	}
	defer s.keepLines(buf)

	if err := s.start(); err != nil {
		return nil, err
	}
	s.rotateIfDue(time.Now())
	if len(buf) == 0 {
		return results, nil
	}
	if s.cur == nil {
		if err := s.open(); err != nil {
			return nil, err
		}
	}
	if err := s.write(buf); err != nil {
		s.log.Error("archive write failed; the batch will be retried", "file", s.curPath, "events", len(batch), "error", err)
		for i, r := range results {
			if r.IsDelivered() {
				results[i] = sdk.Retry(0, err)
			}
		}
		return results, nil
	}
	s.rotateIfDue(time.Now())
	return results, nil
}

// write appends p to the current file and fsyncs it. On failure it cuts the
// file back to its last durable size and retires it, so that the next batch
// starts a clean file rather than following a torn line.
func (s *sink) write(p []byte) error {
	_, err := s.cur.Write(p)
	if err == nil {
		err = s.cur.Sync()
	}
	if err == nil {
		s.curSize += int64(len(p))
		return nil
	}
	err = fmt.Errorf("append to %s: %w", s.curPath, err)
	if terr := s.cur.Truncate(s.curSize); terr != nil {
		s.log.Warn("cannot cut a failed write; the torn line is dropped when the file is compressed", "file", s.curPath, "error", terr)
	}
	s.retire()
	return err
}

// start creates the directory, recovers leftovers of an earlier run and
// starts the rotation ticker, once. s.mu is held.
func (s *sink) start() error {
	if s.started {
		return nil
	}
	if err := os.MkdirAll(s.cfg.dir, 0o750); err != nil {
		return fmt.Errorf("create archive dir: %w", err)
	}
	leftovers, err := s.recoverLeftovers()
	if err != nil {
		return err
	}
	for _, p := range leftovers {
		s.compressLater(p)
	}
	s.started = true
	s.stop = make(chan struct{})
	tick := min(s.cfg.rotate/4, time.Minute)
	tick = max(tick, time.Millisecond)
	s.wg.Add(1)
	go s.tick(tick)
	return nil
}

// tick rotates the current file when it is too old, until Close.
func (s *sink) tick(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.mu.Lock()
			if !s.closed {
				s.rotateIfDue(now)
			}
			s.mu.Unlock()
		}
	}
}

// open starts a new current file. s.mu is held.
func (s *sink) open() error {
	start := time.Now().UTC()
	for range 100 {
		p := filepath.Join(s.cfg.dir, fileName(s.cfg.prefix, start))
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
		if errors.Is(err, os.ErrExist) {
			start = start.Add(time.Microsecond)
			continue
		}
		if err != nil {
			return fmt.Errorf("create archive file: %w", err)
		}
		// The new name must be durable before any event in it is acknowledged.
		if err := syncDir(s.cfg.dir); err != nil {
			f.Close()
			os.Remove(p)
			return err
		}
		s.cur, s.curPath, s.curSize, s.curStart = f, p, 0, start
		s.log.Debug("archive file started", "file", p)
		return nil
	}
	return fmt.Errorf("create archive file in %s: names keep colliding", s.cfg.dir)
}

// rotateIfDue rotates the current file when it is too big or too old.
// s.mu is held.
func (s *sink) rotateIfDue(now time.Time) {
	if s.cur == nil {
		return
	}
	age := now.Sub(s.curStart)
	if s.curSize < s.cfg.maxSize && age < s.cfg.rotate {
		return
	}
	s.log.Info("archive file rotated", "file", s.curPath, "size", s.curSize, "age", age.Round(time.Millisecond).String())
	s.retire()
}

// retire closes the current file and hands it to compression. s.mu is held.
func (s *sink) retire() {
	p := s.curPath
	if err := s.cur.Close(); err != nil {
		s.log.Error("close archive file", "file", p, "error", err)
	}
	s.cur, s.curPath, s.curSize = nil, "", 0
	s.compressLater(p)
}

// compressLater compresses p in the background when compress is "gzip".
// s.mu is held (or the sink is not yet shared).
func (s *sink) compressLater(p string) {
	if !s.cfg.gzip {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := compress(p); err != nil {
			s.log.Error("archive compression failed; retried at the next start", "file", p, "error", err)
			return
		}
		s.log.Debug("archive file compressed", "file", p+".gz")
	}()
}

// Close fsyncs and closes the current file, stops the ticker and waits for
// compressions, or for ctx. The current file is compressed at the next start.
func (s *sink) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var err error
	if s.cur != nil {
		if serr := s.cur.Sync(); serr != nil {
			err = fmt.Errorf("sync %s: %w", s.curPath, serr)
		}
		if cerr := s.cur.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close %s: %w", s.curPath, cerr)
		}
		s.cur = nil
	}
	if s.stop != nil {
		close(s.stop)
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return err
	case <-ctx.Done():
		return errors.Join(err, fmt.Errorf("close archive sink: compressions still running: %w", context.Cause(ctx)))
	}
}
