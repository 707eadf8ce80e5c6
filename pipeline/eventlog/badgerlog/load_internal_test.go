package badgerlog

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline"
)

// holdLoad makes Open's rebuild of the queues stop at the at-th event
// record it reads (from 1), until release is called; started is closed
// when it gets there.
func holdLoad(t *testing.T, at int) (started chan struct{}, release func()) {
	t.Helper()
	started, held := make(chan struct{}), make(chan struct{})
	var free sync.Once
	n := 0 // only the rebuild's goroutine calls the hook
	loadHook = func(uint64) {
		if n++; n < at {
			return
		}
		if n == at {
			close(started)
		}
		<-held
	}
	t.Cleanup(func() { loadHook = nil })
	return started, func() { free.Do(func() { close(held) }) }
}

// openHeld opens dir while holdLoad holds the rebuild and fails the test
// if Open waits for it. The log is released and closed when the test ends.
func openHeld(t *testing.T, dir string, started chan struct{}, release func()) *DB {
	t.Helper()
	type opened struct {
		l   *DB
		err error
	}
	c := make(chan opened, 1)
	go func() {
		l, err := Open(dir, nil)
		c <- opened{l, err}
	}()
	select {
	case o := <-c:
		if o.err != nil {
			t.Fatalf("Open = %v", o.err)
		}
		t.Cleanup(func() { release(); o.l.Close() })
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("the queues' rebuild never read an event record: the test's premise is wrong")
		}
		return o.l
	case <-time.After(10 * time.Second):
		release()
		t.Fatal("Open did not return while the queues were being rebuilt: it waits for a backlog to be read")
	}
	return nil
}

// TestQueuesRebuildWhileWebhooksAreTaken: Open returns before the queues
// of a backlog are rebuilt, and appends are taken meanwhile; what needs
// the queues whole waits for them (a fetch, the statistics, retention,
// the pending mark), so nothing is handed out out of order or removed.
// Once rebuilt, each sink gets the backlog first, then what was appended
// during the rebuild, in log order (P5), and nothing is lost (P2, P6).
func TestQueuesRebuildWhileWebhooksAreTaken(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := mustOpen(t, dir, nil)
	appendN(t, l, "old", 30, 10) // seqs 1..30, queued for s and t
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	started, release := holdLoad(t, 11)
	r := openHeld(t, dir, started, release)
	appendN(t, r, "new", 5, 5) // taken while the backlog is read: seqs 31..35

	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		t.Cleanup(cancel)
		return c
	}
	if ds, err := r.Queue("s").Fetch(short(), 100); !errors.Is(err, context.DeadlineExceeded) || len(ds) != 0 {
		t.Fatalf("Fetch during the rebuild = %d deliveries, %v; want none, and that the queues are being rebuilt", len(ds), err)
	}
	if st, err := r.Queue("s").Stats(short()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stats during the rebuild = %+v, %v; want it to wait for the rebuild", st, err)
	}
	if got := r.pendingMark(); got != r.openMark {
		t.Fatalf("pending mark during the rebuild = %d, want %d, the mark Open read", got, r.openMark)
	}
	if p, ok := r.QueuesRebuilding(); !ok || p != (pipeline.QueueRebuild{Read: 10, Total: 30}) {
		t.Fatalf("QueuesRebuilding held at the 11th record = %+v, %v; want 10 of 30 read, true", p, ok)
	}
	type pruned struct {
		n   int
		err error
	}
	prune := make(chan pruned, 1)
	go func() { // every event is past this cutoff: only the queues keep them
		n, err := r.Prune(time.Now().Add(time.Hour))
		prune <- pruned{n, err}
	}()

	release()
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	want := make([]uint64, 35)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	if p := <-prune; p.err != nil || p.n != 0 {
		t.Fatalf("Prune over a log whose queues were being rebuilt = %d removed, %v; want none removed (P6)", p.n, p.err)
	}
	for _, sink := range []string{"s", "t"} {
		ds, err := r.Queue(sink).Fetch(fctx, 100)
		if err != nil {
			t.Fatalf("Fetch %s after the rebuild: %v", sink, err)
		}
		var got []uint64
		for _, d := range ds {
			got = append(got, d.Seq)
		}
		if !slices.Equal(got, want) {
			t.Errorf("Fetch %s after the rebuild = seqs %v, want 1..35: the backlog, then what came during the rebuild", sink, got)
		}
	}
	if st, err := r.Queue("t").Stats(ctx); err != nil || st.Ready != 35 {
		t.Errorf("Stats of t after the rebuild = %+v, %v; want 35 ready (leased)", st, err)
	}
	if p, ok := r.QueuesRebuilding(); ok {
		t.Errorf("QueuesRebuilding after the rebuild = %+v, true; want false", p)
	}
}

// TestCloseDuringTheQueuesRebuild: a log closed while it rebuilds its
// queues stops the rebuild, keeps its pending mark, and opens again with
// every entry queued.
func TestCloseDuringTheQueuesRebuild(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, nil)
	appendN(t, l, "old", 30, 10)
	want := queuedSeqs(l, "s", "t")
	if len(want["s"]) != 30 || len(want["t"]) != 30 {
		t.Fatalf("queued before the restart %v: the test's premise is wrong", want)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	started, release := holdLoad(t, 1)
	r := openHeld(t, dir, started, release)
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	for r.checkOpen() == nil { // Close has begun: it waits for the rebuild
		time.Sleep(time.Millisecond)
	}
	release()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close during the rebuild = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return: the rebuild did not stop")
	}
	if _, err := r.Queue("s").Fetch(context.Background(), 10); !errors.Is(err, pipeline.ErrClosed) {
		t.Errorf("Fetch after Close = %v, want ErrClosed", err)
	}
	if p, ok := r.QueuesRebuilding(); ok {
		t.Errorf("QueuesRebuilding after Close = %+v, true; want false", p)
	}

	loadHook = nil
	again := mustOpen(t, dir, nil)
	defer again.Close()
	if got := queuedSeqs(again, "s", "t"); !slices.Equal(got["s"], want["s"]) || !slices.Equal(got["t"], want["t"]) {
		t.Errorf("after a Close during the rebuild, the queues hold %s, want %s", seqsSummary(got), seqsSummary(want))
	}
}

// TestQueuesRebuildIsTriedAgain: a rebuild that meets a record it cannot
// read is tried again until it can, and delivery then starts with every
// entry, in log order; until then fetches wait.
func TestQueuesRebuildIsTriedAgain(t *testing.T) {
	ctx := context.Background()
	was := loadRetry
	loadRetry = 5 * time.Millisecond
	t.Cleanup(func() { loadRetry = was })
	dir := t.TempDir()
	l := mustOpen(t, dir, nil)
	appendN(t, l, "old", 10, 5) // seqs 1..10, queued for s and t
	var good []byte
	if err := l.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(eventKey(5))
		if err == nil {
			good, err = item.ValueCopy(nil)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	setRecord(t, l, 5, []byte{0xff}) // a truncated varint: not an event record
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	r := mustOpen(t, dir, nil)
	defer r.Close()
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond) // ~5 failed rebuilds
	defer cancel()
	if ds, err := r.Queue("s").Fetch(short, 100); !errors.Is(err, context.DeadlineExceeded) || len(ds) != 0 {
		t.Fatalf("Fetch while the rebuild fails = %d deliveries, %v; want none, waiting", len(ds), err)
	}
	// The first attempt runs in the background: on a loaded machine it
	// may not have failed yet when the fetch above gave up.
	p, ok := r.QueuesRebuilding()
	for deadline := time.Now().Add(10 * time.Second); ok && p.Err == "" && time.Now().Before(deadline); p, ok = r.QueuesRebuilding() {
		time.Sleep(time.Millisecond)
	}
	if !ok || !strings.Contains(p.Err, "decode event 5") {
		t.Errorf("QueuesRebuilding while the rebuild fails = %+v, %v; want true, with why the last attempt failed", p, ok)
	}
	setRecord(t, r, 5, good) // the record reads again
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ds, err := r.Queue("s").Fetch(fctx, 100)
	if err != nil || len(ds) != 10 || ds[0].Seq != 1 || ds[9].Seq != 10 {
		t.Fatalf("Fetch once the record reads again = %d deliveries, %v; want seqs 1..10", len(ds), err)
	}
}

// setRecord writes v as the record of the event at seq, behind the log's
// back (straight into Badger).
func setRecord(t *testing.T, l *DB, seq uint64, v []byte) {
	t.Helper()
	if err := l.db.Update(func(txn *badger.Txn) error { return txn.Set(eventKey(seq), v) }); err != nil {
		t.Fatal(err)
	}
}
