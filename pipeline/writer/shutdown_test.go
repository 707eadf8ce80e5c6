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
