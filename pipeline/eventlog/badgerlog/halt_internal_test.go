package badgerlog

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/wal"
)

// failNextApply makes the next record the committer applies fail as a
// disk error would, once, until the test ends.
func failNextApply(t *testing.T) {
	t.Helper()
	failed := false
	applyFault = func([]byte) error {
		if failed {
			return nil
		}
		failed = true
		return fmt.Errorf("value log: %w", errors.New("input/output error"))
	}
	t.Cleanup(func() { applyFault = nil })
}

// haltedState checks that l refuses writes after a halt, and says so.
func haltedState(t *testing.T, l *DB) {
	t.Helper()
	select {
	case <-l.Halted():
	default:
		t.Fatal("Halted() is not closed after the failed write")
	}
	if err := l.CheckWrite(); !errors.Is(err, pipeline.ErrHalted) {
		t.Errorf("CheckWrite() = %v, want ErrHalted (readiness must fail)", err)
	}
	if err := l.HaltErr(); !errors.Is(err, pipeline.ErrHalted) {
		t.Errorf("HaltErr() = %v, want ErrHalted", err)
	}
}

// TestAFailedApplyHaltsTheLog: a settlement whose record reached the
// write-ahead log and that Badger refused (its writer told so) is applied
// by the next Open; a write after it must not be applied before it. The
// reviewer's case: a Retry settlement (a retry key, due in an hour) fails
// to apply, then the dispatcher acks the same entry (a later attempt, as
// after a restart of the plugin): applied at once, its record says
// delivered, and the Open after a crash put the Retry's key under it: the
// event delivered again, and a replay of it queued a third time. Now the
// log halts: the Ack, and every write after the failure, is refused and
// never written; the next Open, from a copy taken as a power loss leaves
// it and after a Close, applies the Retry, and the log writes again.
func TestAFailedApplyHaltsTheLog(t *testing.T) {
	for _, end := range []string{"crash", "close"} {
		t.Run(end, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			l := mustOpen(t, dir, nil)
			defer func() { l.Close() }()
			if _, err := l.Append(ctx, []pipeline.Entry{{Event: pipeline.Event{ID: "e1", Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)},
				Targets: []pipeline.Target{{Sink: "s", Route: "r"}}}}); err != nil {
				t.Fatal(err)
			}
			q := l.queue("s")
			fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ds, err := q.Fetch(fctx, 10)
			cancel()
			if err != nil || len(ds) != 1 {
				t.Fatalf("Fetch = %v, %v; want e1", ds, err)
			}
			seq := ds[0].Seq

			failNextApply(t)
			err = q.Settle(ctx, []pipeline.Settlement{{Seq: seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "503"}})
			if !errors.Is(err, pipeline.ErrHalted) {
				t.Fatalf("Settle(Retry) whose apply failed = %v, want ErrHalted", err)
			}
			haltedState(t, l)
			if err := q.Settle(ctx, []pipeline.Settlement{{Seq: seq, Outcome: pipeline.Ack}}); !errors.Is(err, pipeline.ErrHalted) {
				t.Fatalf("Settle(Ack) after the halt = %v, want ErrHalted", err)
			}
			if _, err := l.Append(ctx, []pipeline.Entry{{Event: pipeline.Event{ID: "e2", Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)},
				Targets: []pipeline.Target{{Sink: "s", Route: "r"}}}}); !errors.Is(err, pipeline.ErrHalted) {
				t.Fatalf("Append after the halt = %v, want ErrHalted", err)
			}
			// A checkpoint now must not pass the record not applied.
			if err := l.checkpoint(); err != nil {
				t.Fatalf("checkpoint after the halt: %v", err)
			}

			reopen := dir
			if end == "crash" {
				reopen = snapshot(t, dir)
			}
			if err := l.Close(); err != nil {
				t.Fatalf("Close after the halt: %v", err)
			}
			l = mustOpen(t, reopen, nil)
			if err := l.CheckWrite(); err != nil {
				t.Fatalf("CheckWrite after the Open = %v, want nil: the log writes again", err)
			}
			recs, err := l.Deliveries(ctx, "e1")
			if err != nil || len(recs) != 1 {
				t.Fatalf("Deliveries(e1) = %+v, %v; want one record", recs, err)
			}
			if recs[0].State != pipeline.StateRetrying || recs[0].LastError != "503" {
				t.Errorf("e1's record after the Open: %+v; want retrying after 503 (the Retry applied, the Ack never written)", recs[0])
			}
			if keys := retryKeysOf(t, l, "s", seq); len(keys) != 1 {
				t.Errorf("e1's retry keys after the Open: %v, want one", keys)
			}
			if _, err := l.Event(ctx, "e2"); !errors.Is(err, pipeline.ErrNotFound) {
				t.Errorf("Event(e2), refused by the halted log, after the Open = %v; want ErrNotFound", err)
			}
			// A replay finds it waiting at its retry key: no second entry.
			if n, err := l.queue("s").Requeue(ctx, []pipeline.Requeue{{Seq: seq, Route: "r"}}); err != nil || n != 0 {
				t.Errorf("Requeue(e1) after the Open = %d, %v; want 0: it waits for its retry", n, err)
			}
			if _, err := l.Append(ctx, []pipeline.Entry{{Event: pipeline.Event{ID: "e3", Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)},
				Targets: []pipeline.Target{{Sink: "s", Route: "r"}}}}); err != nil {
				t.Fatalf("Append after the Open: %v", err)
			}
		})
	}
}

// TestAFailedSyncHaltsTheLog: after the write-ahead log's fdatasync
// failed, what the disk holds is unknown and the log never writes again:
// it halts, so that readiness fails and the daemon restarts, where it
// stayed up answering 503 to every webhook with /readyz saying ready.
func TestAFailedSyncHaltsTheLog(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := mustOpen(t, dir, nil)
	defer func() { l.Close() }()
	appendN(t, l, "before", 3, 3)
	wal.SyncFault = func() error { return errors.New("input/output error") }
	t.Cleanup(func() { wal.SyncFault = nil })
	_, err := l.Append(ctx, entries("during", 1))
	if !errors.Is(err, pipeline.ErrHalted) || !errors.Is(err, wal.ErrSyncFailed) {
		t.Fatalf("Append whose sync failed = %v, want ErrHalted wrapping the failed sync", err)
	}
	haltedState(t, l)
	wal.SyncFault = nil
	if _, err := l.Append(ctx, entries("after", 1)); !errors.Is(err, pipeline.ErrHalted) {
		t.Fatalf("Append after the halt = %v, want ErrHalted", err)
	}
	if err := l.Close(); err != nil {
		t.Logf("Close after the halt: %v", err)
	}
	l = mustOpen(t, dir, nil)
	if _, err := l.Event(ctx, testID("before", 2)); err != nil {
		t.Errorf("Event(before) after the Open: %v", err)
	}
	if _, err := l.Event(ctx, testID("after", 0)); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("Event(after), refused by the halted log, after the Open = %v; want ErrNotFound", err)
	}
	if _, err := l.Append(ctx, entries("again", 1)); err != nil {
		t.Fatalf("Append after the Open: %v", err)
	}
}
