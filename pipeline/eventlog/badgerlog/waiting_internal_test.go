package badgerlog

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// TestWaitingSeesOneMoment: Waiting reports the queue as it was at one
// moment, though a Settle runs while it walks: an entry that leaves the
// ready entries for a retry key meanwhile is reported (as it was then),
// not lost between the two.
func TestWaitingSeesOneMoment(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, t.TempDir(), nil)
	defer l.Close()
	appendN(t, l, "w", 3, 3) // seqs 1..3
	q := l.queue("s")
	ds, err := q.Fetch(ctx, 3)
	if err != nil || len(ds) != 3 {
		t.Fatalf("Fetch = %d, %v; want 3", len(ds), err)
	}
	later := time.Now().Add(time.Hour)
	if err := q.Settle(ctx, []pipeline.Settlement{{Seq: 3, Outcome: pipeline.Retry, RetryAt: later, Err: "x"}}); err != nil {
		t.Fatal(err)
	}
	var seen []uint64
	settled := false
	err = q.Waiting(ctx, false, func(w pipeline.Waiting) error {
		seen = append(seen, w.Seq)
		if !settled { // seq 2 goes from ready to retrying while Waiting walks
			settled = true
			if err := q.Settle(ctx, []pipeline.Settlement{{Seq: 2, Outcome: pipeline.Retry, RetryAt: later, Err: "x"}}); err != nil {
				t.Error(err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(seen)
	if !slices.Equal(seen, []uint64{1, 2, 3}) {
		t.Fatalf("Waiting reported seqs %v, want [1 2 3]: retrying 3, and 1 and 2 below it", seen)
	}
}
