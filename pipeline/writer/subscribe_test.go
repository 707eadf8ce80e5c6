package writer_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/writer"
)

// TestSubscribe checks the live tail's hook: a subscriber gets each
// appended entry (not the duplicates) with its id; one that does not read
// never holds the writer; a cancelled one gets nothing more.
func TestSubscribe(t *testing.T) {
	w := writer.New(memlog.New(), nil)
	defer w.Close()
	ctx := context.Background()
	fast, cancelFast := w.Subscribe(16)
	_, cancelStuck := w.Subscribe(1) // never read
	defer cancelStuck()

	for i := range 5 {
		if _, err := w.Append(ctx, entry(fmt.Sprint("ev-", i), fmt.Sprint("k", i))); err != nil {
			t.Fatalf("Append(ev-%d) = %v", i, err)
		}
	}
	// A duplicate: absorbed, not seen by subscribers.
	if a, err := w.Append(ctx, entry("ev-dup", "k1")); err != nil || !a.Duplicate {
		t.Fatalf("Append(duplicate) = %+v, %v; want a duplicate", a, err)
	}
	for i := range 5 {
		select {
		case e := <-fast:
			if want := fmt.Sprint("ev-", i); e.Event.ID != want || e.Event.DedupKey != fmt.Sprint("k", i) || len(e.Targets) != 1 {
				t.Errorf("subscriber got %s (dedup key %q, %d targets), want %s", e.Event.ID, e.Event.DedupKey, len(e.Targets), want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("subscriber got %d entries, want 5", i)
		}
	}
	select {
	case e := <-fast:
		t.Errorf("subscriber got %s after the 5 entries: the duplicate must not be sent", e.Event.ID)
	default:
	}
	cancelFast()
	cancelFast() // twice is fine
	if _, err := w.Append(ctx, entry("ev-late", "late")); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-fast:
		t.Errorf("a cancelled subscriber got %s", e.Event.ID)
	case <-time.After(50 * time.Millisecond):
	}
}
