package badgerlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/internal/stacks"
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
			if _, err := q.Fetch(ctx, 10); !errors.Is(err, pipeline.ErrHalted) {
				t.Errorf("Fetch after the halt = %v, want ErrHalted: what it hands out could not be settled", err)
			}
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
	if !errors.Is(err, pipeline.ErrHalted) || !errors.Is(err, wal.ErrBroken) {
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
	// Its pages were in the page cache, where the Open (on the same boot)
	// would have read them: the group is cut off the segment.
	if _, err := l.Event(ctx, testID("during", 0)); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("Event(during), whose sync failed, after the Open = %v; want ErrNotFound (its sender was answered 503, and its retry must not be called a duplicate)", err)
	}
	if _, err := l.Event(ctx, testID("after", 0)); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("Event(after), refused by the halted log, after the Open = %v; want ErrNotFound", err)
	}
	if _, err := l.Append(ctx, entries("again", 1)); err != nil {
		t.Fatalf("Append after the Open: %v", err)
	}
}

// errIO is a disk's error.
var errIO = errors.New("input/output error")

// keyTxn commits a write of key, through the committer.
func keyTxn(l *DB, key string) error {
	t := l.newTxn()
	if err := t.Set([]byte(key), []byte("v-"+key)); err != nil {
		return err
	}
	return l.commit(t)
}

// haltTestWriter is keyTxn in a function of its own, which the stacks of
// its goroutines name.
func haltTestWriter(l *DB, key string, done chan<- error) { done <- keyTxn(l, key) }

// hasKey says whether Badger holds key.
func hasKey(t *testing.T, l *DB, key string) bool {
	t.Helper()
	err := l.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get([]byte(key))
		return err
	})
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// blockCommitter makes the committer, applying key's record, wait until
// the returned function is called; apply then fails it with fail when not
// nil. It returns once the committer waits.
func blockCommitter(t *testing.T, l *DB, key string, fail error) (release func(), done <-chan error) {
	t.Helper()
	waiting, resume := make(chan struct{}), make(chan struct{})
	prev := applyFault
	applyFault = func(rec []byte) error {
		if bytes.Contains(rec, []byte("v-"+key)) {
			close(waiting)
			<-resume
			return fail
		}
		if prev != nil {
			return prev(rec)
		}
		return nil
	}
	t.Cleanup(func() { applyFault = nil })
	d := make(chan error, 1)
	go haltTestWriter(l, key, d)
	<-waiting
	return func() { close(resume) }, d
}

// TestAHaltAnswersTheRestOfItsGroup: the committer applies a group of five
// records; when one fails to apply or a commit of those before it fails,
// the records before the failure are applied and answered, and it and
// every record after it in the group are answered ErrHalted, once each,
// and none is applied until the next Open, which applies all of them.
func TestAHaltAnswersTheRestOfItsGroup(t *testing.T) {
	cases := []struct {
		name       string
		failApply  int   // the record (of the five, in the group's order) whose apply fails; -1: none
		applyErr   error // and how
		failCommit int   // the group's commit that fails (1: its first); 0: none
		seen       int   // records of the five that reach the transaction
		applied    int   // records of the five applied before the Open
	}{
		{"first record refused", 0, errIO, 0, 1, 0},
		{"third record refused", 2, errIO, 0, 3, 2},
		{"last record refused", 4, errIO, 0, 5, 4},
		{"third refused, and the commit of the two before", 2, errIO, 1, 3, 0},
		{"the group's commit failed", -1, nil, 1, 5, 0},
		// The records before the third go in a commit of their own, the
		// third in a new transaction with the rest, whose commit fails.
		{"third too big beside the two before, the rest's commit failed", 2, badger.ErrTxnTooBig, 2, 5, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			l := mustOpen(t, dir, nil)
			defer func() { l.Close() }()
			var order []string // the group's records, as applied
			applyFault = func(rec []byte) error {
				for i := range 5 {
					if k := fmt.Sprint("k/", i); bytes.Contains(rec, []byte("v-"+k)) {
						order = append(order, k)
						if len(order)-1 == c.failApply {
							return c.applyErr
						}
					}
				}
				return nil
			}
			// The group's five writers queue while the committer waits on
			// the record before them.
			release, firstDone := blockCommitter(t, l, "k/first", nil)
			done := map[string]chan error{}
			for i := range 5 {
				k := fmt.Sprint("k/", i)
				done[k] = make(chan error, 2) // a second answer would show
				go haltTestWriter(l, k, done[k])
			}
			stacks.WaitBlocked(t, "badgerlog.haltTestWriter", 6)
			commits := 0
			commitFault = func() error {
				if len(order) == 0 { // the first record's commit
					return nil
				}
				if commits++; commits == c.failCommit {
					return errIO
				}
				return nil
			}
			t.Cleanup(func() { commitFault = nil })
			release()
			if err := <-firstDone; err != nil {
				t.Fatalf("the record before the group: %v", err)
			}
			errs := map[string]error{}
			for k, d := range done {
				select {
				case errs[k] = <-d:
				case <-time.After(10 * time.Second):
					t.Fatalf("%s was never answered", k)
				}
			}
			if len(order) != c.seen {
				t.Fatalf("the group's transaction saw %v, want %d of them", order, c.seen)
			}
			for i, k := range order {
				if i < c.applied {
					if errs[k] != nil || !hasKey(t, l, k) {
						t.Errorf("%s, before the failure: answered %v, applied %v; want nil, applied", k, errs[k], hasKey(t, l, k))
					}
				} else if !errors.Is(errs[k], pipeline.ErrHalted) || hasKey(t, l, k) {
					t.Errorf("%s, at or after the failure: answered %v, applied %v; want ErrHalted, not applied", k, errs[k], hasKey(t, l, k))
				}
			}
			for k, d := range done {
				select {
				case err := <-d:
					t.Errorf("%s answered twice (then %v)", k, err)
				default:
				}
			}
			applyFault, commitFault = nil, nil
			l.Close()
			l = mustOpen(t, dir, nil)
			for i := range 5 {
				if k := fmt.Sprint("k/", i); !hasKey(t, l, k) {
					t.Errorf("%s not applied by the Open after the halt", k)
				}
			}
		})
	}
}

// TestAWriteSentBeforeTheHaltIsNotWritten: a writer that passed commit's
// check before the halt, and waits to hand its record to the committer
// while the failing group is applied, is refused by the committer: the
// reviewer's Ack, racing the Retry that failed.
func TestAWriteSentBeforeTheHaltIsNotWritten(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, nil)
	defer func() { l.Close() }()
	release, firstDone := blockCommitter(t, l, "k/first", errors.New("input/output error"))
	late := make(chan error, 1)
	go haltTestWriter(l, "k/late", late)
	stacks.WaitBlocked(t, "badgerlog.haltTestWriter", 2) // k/late waits on the committer, past the check
	release()
	if err := <-firstDone; !errors.Is(err, pipeline.ErrHalted) {
		t.Fatalf("the failed record: %v, want ErrHalted", err)
	}
	if err := <-late; !errors.Is(err, pipeline.ErrHalted) || hasKey(t, l, "k/late") {
		t.Errorf("the write sent before the halt: answered %v, applied %v; want ErrHalted, not applied", err, hasKey(t, l, "k/late"))
	}
	applyFault = nil
	l.Close()
	l = mustOpen(t, dir, nil)
	if !hasKey(t, l, "k/first") || hasKey(t, l, "k/late") {
		t.Errorf("after the Open: the failed record applied %v (want true), the refused one %v (want false: never written)", hasKey(t, l, "k/first"), hasKey(t, l, "k/late"))
	}
}
