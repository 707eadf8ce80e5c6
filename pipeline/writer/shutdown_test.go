package writer_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/writer"
)

// stalledLog is a memlog whose first Append blocks until release, ignoring
// its ctx, as an fsync on a stalled disk does; it says whether that ctx
// was cancelled meanwhile.
type stalledLog struct {
	pipeline.Log
	entered, release chan struct{}
	once             sync.Once
	cancelled        chan struct{} // closed when the held Append's ctx ends
}

func (l *stalledLog) Append(ctx context.Context, es []pipeline.Entry) ([]pipeline.Appended, error) {
	first := false
	l.once.Do(func() { first = true })
	if first {
		close(l.entered)
		go func() {
			select {
			case <-ctx.Done():
				close(l.cancelled)
			case <-l.release:
			}
		}()
		<-l.release
	}
	return l.Log.Append(ctx, es)
}

// TestShutdownGivesUpOnAStalledLog: while the log holds an append, with
// more entries queued behind it, Shutdown returns once its ctx ends,
// answering every one of them with ErrAbandoned (never nil: they are not
// committed) and cancelling the append's ctx; Append is refused from then
// on, and the log's late answer changes nothing.
func TestShutdownGivesUpOnAStalledLog(t *testing.T) {
	const queued = 5
	l := &stalledLog{Log: memlog.New(), entered: make(chan struct{}), release: make(chan struct{}), cancelled: make(chan struct{})}
	w := writer.New(l, nil)
	release := sync.OnceFunc(func() { close(l.release) })
	t.Cleanup(release)

	errs := make(chan error, queued+1)
	appendAsync := func(id string) {
		go func() {
			_, err := w.Append(context.Background(), entry(id, ""))
			errs <- err
		}()
	}
	appendAsync("held")
	select {
	case <-l.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the first append did not reach the log")
	}
	for i := range queued {
		appendAsync(fmt.Sprintf("q%d", i))
	}
	waitPending(t, w, queued)

	const bound = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	t0 := time.Now()
	done := make(chan error, 1)
	go func() { done <- w.Shutdown(ctx) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return 10s after its ctx ended, while the log held an append")
	}
	if took := time.Since(t0); took < bound {
		t.Errorf("Shutdown returned after %v, before its ctx ended (%v)", took, bound)
	}
	var ae *writer.AbandonError
	if !errors.As(err, &ae) || ae.Entries != queued+1 || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want an AbandonError of %d entries caused by the deadline", err, queued+1)
	}
	for range queued + 1 {
		select {
		case err := <-errs:
			if !errors.Is(err, writer.ErrAbandoned) {
				t.Errorf("Append of an entry the log did not commit = %v, want ErrAbandoned", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("an Append still waits after Shutdown gave up")
		}
	}
	select {
	case <-l.cancelled:
	case <-time.After(5 * time.Second):
		t.Error("the held append's ctx was not cancelled when Shutdown gave up")
	}
	if _, err := w.Append(context.Background(), entry("late", "")); !errors.Is(err, pipeline.ErrClosed) {
		t.Errorf("Append after Shutdown = %v, want ErrClosed", err)
	}
	// The log lets go at last: its answer reaches nobody, and the
	// writer stops.
	release()
	if err := w.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown again once the log let go = %v, want nil (the writer has stopped)", err)
	}
}

// TestShutdownOfAHealthyWriterAppendsAll: a Shutdown whose ctx has already
// ended still returns nil, with every entry appended, when the writer
// holds nothing: it gives up only on what is left.
func TestShutdownOfAHealthyWriterAppendsAll(t *testing.T) {
	w := writer.New(memlog.New(), nil)
	if _, err := w.Append(context.Background(), entry("a", "")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown of an idle writer with an ended ctx = %v, want nil", err)
	}
	if n := len(w.Subscribe(1, "").C); n != 0 { // a use of w after Shutdown must not panic
		t.Errorf("a subscription after Shutdown holds %d notices", n)
	}
}

// splitLog is a memlog that refuses an append of more than one entry as
// too big for one atomic write, and holds the first single one until
// release, ignoring its ctx; its first Append of all waits for gate.
type splitLog struct {
	pipeline.Log
	atGate, gate, entered, release chan struct{}
	calls                          int // Appends so far; the writer's goroutine alone calls Append
}

func (l *splitLog) Append(ctx context.Context, es []pipeline.Entry) ([]pipeline.Appended, error) {
	l.calls++
	switch {
	case l.calls == 1:
		close(l.atGate)
		<-l.gate
	case len(es) > 1:
		return nil, fmt.Errorf("append %d entries: %w", len(es), pipeline.ErrTooBig)
	case l.entered != nil:
		close(l.entered)
		l.entered = nil
		<-l.release
	}
	return l.Log.Append(ctx, es)
}

// TestShutdownGivesUpOnBothHalves: a batch too big for one atomic write is
// appended in halves; when the log holds the first half, Shutdown answers
// the second half too, at once, and counts it: before, only the half in
// the log was answered, and the other waited for the log to let go.
func TestShutdownGivesUpOnBothHalves(t *testing.T) {
	l := &splitLog{Log: memlog.New(), atGate: make(chan struct{}), gate: make(chan struct{}), entered: make(chan struct{}), release: make(chan struct{})}
	entered := l.entered
	w := writer.New(l, nil)
	release := sync.OnceFunc(func() { close(l.release) })
	t.Cleanup(release)
	errs := make(chan error, 3)
	appendAsync := func(id string) {
		go func() {
			_, err := w.Append(context.Background(), entry(id, ""))
			errs <- err
		}()
	}
	appendAsync("first") // held at the gate, while the two queue behind it
	<-l.atGate
	appendAsync("a")
	appendAsync("b")
	waitPending(t, w, 2)
	close(l.gate)
	if err := <-errs; err != nil {
		t.Fatalf("Append(first) = %v", err)
	}
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the batch of two was not split into halves")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := w.Shutdown(ctx)
	var ae *writer.AbandonError
	if !errors.As(err, &ae) || ae.Entries != 2 {
		t.Errorf("Shutdown = %v, want an AbandonError of 2 entries (both halves)", err)
	}
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, writer.ErrAbandoned) {
				t.Errorf("Append of a half not committed = %v, want ErrAbandoned", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("an Append of the second half still waits after Shutdown gave up")
		}
	}
	release()
	if err := w.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown again once the log let go = %v, want nil", err)
	}
	if got := l.calls; got != 3 {
		t.Errorf("the log got %d appends, want 3: the second half is not appended once Shutdown gave up", got)
	}
}
