package badgerlog

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// Retention removes whole segments of the write-ahead log, but never one
// that holds an event still queued (P6), nor one Open would replay.
func TestRetentionRemovesOnlyUnneededSegments(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, t.TempDir(), &Options{SegmentSize: 8 << 10})
	defer l.Close()
	old := time.Now().Add(-48 * time.Hour)
	body := []byte(fmt.Sprintf(`{"pad":%q}`, make([]byte, 1000)))
	for i := range 60 {
		_, err := l.Append(ctx, []pipeline.Entry{{
			Event:   pipeline.Event{ID: fmt.Sprintf("ev-%02d", i), Source: "s", ReceivedAt: old, Body: body},
			Targets: []pipeline.Target{{Sink: "a", Route: "r"}},
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	q := l.Queue("a")
	ds, err := q.Fetch(ctx, 60)
	if err != nil || len(ds) != 60 {
		t.Fatalf("Fetch = %d, %v, want 60", len(ds), err)
	}
	var acks []pipeline.Settlement
	for _, d := range ds {
		if d.Event.ID != "ev-30" { // ev-30 stays queued: it pins its segment
			acks = append(acks, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack})
		}
	}
	if err := q.Settle(ctx, acks); err != nil {
		t.Fatal(err)
	}
	if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[30].Seq, Outcome: pipeline.Retry, RetryAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if n, err := l.Prune(time.Now()); err != nil || n != 59 {
		t.Fatalf("Prune = %d, %v, want 59", n, err)
	}
	if err := l.checkpoint(); err != nil {
		t.Fatal(err)
	}
	before := l.wal.Segments()
	n, err := l.removeSegments()
	if err != nil || n == 0 {
		t.Fatalf("removeSegments = %d, %v, want some removed of %v", n, err, before)
	}
	kept, err := l.Event(ctx, "ev-30")
	if err != nil || string(kept.Body) != string(body) {
		t.Fatalf("the queued event after retention: %v (body intact %v)", err, string(kept.Body) == string(body))
	}
	if got, _ := q.Fetch(ctx, 1); len(got) != 1 || got[0].Event.ID != "ev-30" || string(got[0].Event.Body) != string(body) {
		t.Fatalf("Fetch after retention = %+v, want ev-30 with its body", got)
	}
	ckpt, _ := l.wal.Checkpoint()
	if segs := l.wal.Segments(); segs[0] > ckpt || len(segs) != len(before)-n {
		t.Fatalf("segments after retention %v (before %v, checkpoint %d)", segs, before, ckpt)
	}

	// Delivered at last: every segment below the checkpoint can go.
	if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[30].Seq, Outcome: pipeline.Ack}}); err != nil {
		t.Fatal(err)
	}
	if n, err := l.Prune(time.Now()); err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v, want 1", n, err)
	}
	if err := l.checkpoint(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.removeSegments(); err != nil {
		t.Fatal(err)
	}
	ckpt, _ = l.wal.Checkpoint()
	if segs := l.wal.Segments(); slices.Min(segs) < ckpt {
		t.Fatalf("segments %v remain below the checkpoint %d with no event kept", segs, ckpt)
	}
}
