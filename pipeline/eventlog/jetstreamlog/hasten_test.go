package jetstreamlog_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// TestHastenDropsTheServersDelayedDelivery: the server holds a retry as a
// nak with a delay; HastenRetries writes the entry again, due now. The nak
// the server held must go with the message it replaced: once the hastened
// entry is delivered and acked, nothing comes back when the old delay
// ends, and the queue counts nothing.
func TestHastenDropsTheServersDelayedDelivery(t *testing.T) {
	l := open(t, runServer(t), fmt.Sprintf("H%d", streams.Add(1)))
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var es []pipeline.Entry
	for i := range 3 {
		es = append(es, pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprintf("hd-%d", i), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "crm", Route: "all"}}})
	}
	if _, err := l.Append(ctx, es); err != nil {
		t.Fatal(err)
	}
	q := l.Queue("crm")
	fetch := func(n int) []pipeline.Delivery {
		t.Helper()
		var got []pipeline.Delivery
		for len(got) < n {
			ds, err := q.Fetch(ctx, n-len(got))
			if err != nil {
				t.Fatalf("Fetch: %v (got %d of %d)", err, len(got), n)
			}
			got = append(got, ds...)
		}
		return got
	}
	settle := func(ds []pipeline.Delivery, s pipeline.Settlement) {
		t.Helper()
		var ss []pipeline.Settlement
		for _, d := range ds {
			s.Seq = d.Seq
			ss = append(ss, s)
		}
		if err := q.Settle(ctx, ss); err != nil {
			t.Fatal(err)
		}
	}
	// Due in 3 s: past hastenMargin, and soon enough to see it not come.
	due := time.Now().Add(3 * time.Second)
	settle(fetch(3), pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: due, Err: "503"})
	n, err := q.(pipeline.RetryHastener).HastenRetries(ctx, 10)
	if err != nil || n != 3 {
		t.Fatalf("HastenRetries = %d, %v; want 3", n, err)
	}
	ds := fetch(3)
	for _, d := range ds {
		if d.Attempt != 2 || d.LastError != "503" {
			t.Errorf("%s after HastenRetries: Attempt %d, LastError %q; want 2, 503", d.Event.ID, d.Attempt, d.LastError)
		}
	}
	settle(ds, pipeline.Settlement{Outcome: pipeline.Ack})
	time.Sleep(time.Until(due) + time.Second) // the old delay ends: a negative, so a sleep
	wctx, wcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer wcancel()
	if ds, err := q.Fetch(wctx, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Fetch after the old nak delay ended = %d deliveries, %v; want none (the server's delayed delivery went with the message)", len(ds), err)
	}
	if st, err := q.Stats(ctx); err != nil || st != (pipeline.QueueStats{}) {
		t.Errorf("Stats after all were delivered = %+v, %v; want empty", st, err)
	}
}
