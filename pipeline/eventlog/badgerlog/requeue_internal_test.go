package badgerlog

import (
	"context"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// TestRequeueSkipsAnEntryJustAppended: an event whose Append has
// committed is queued (its record routes it to the sink and it has no
// delivery record), even in the moment before the queue takes it in
// memory: a Requeue then skips it, as it skips any queued entry, so the
// queue never holds two entries for the event.
func TestRequeueSkipsAnEntryJustAppended(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, t.TempDir(), nil)
	defer l.Close()
	var requeued int
	var rerr error
	appendHook = func() {
		appendHook = nil
		requeued, rerr = l.Queue("s").Requeue(ctx, []pipeline.Requeue{{Seq: 1, Route: "again"}})
	}
	t.Cleanup(func() { appendHook = nil })
	if _, err := l.Append(ctx, []pipeline.Entry{{
		Event:   pipeline.Event{ID: "e1", Source: "src", ReceivedAt: time.Now()},
		Targets: []pipeline.Target{{Sink: "s", Route: "r"}},
	}}); err != nil {
		t.Fatal(err)
	}
	if rerr != nil || requeued != 0 {
		t.Errorf("Requeue of the entry just appended = %d, %v; want 0: it is queued", requeued, rerr)
	}
	fctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	ds, err := l.Queue("s").Fetch(fctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].Seq != 1 || ds[0].Route != "r" {
		t.Fatalf("Fetch = %+v; want the one entry of seq 1, route r", ds)
	}
	if err := l.Queue("s").Settle(ctx, []pipeline.Settlement{{Seq: 1, Outcome: pipeline.Ack}}); err != nil {
		t.Fatal(err)
	}
	if st, err := l.Queue("s").Stats(ctx); err != nil || st != (pipeline.QueueStats{}) {
		t.Fatalf("Stats after the ack = %+v, %v; want an empty queue", st, err)
	}
}
