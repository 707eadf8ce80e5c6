package jetstreamlog_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/jetstreamlog"
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
	n, err := q.(pipeline.RetryHastener).HastenRetries(ctx, &pipeline.RetryWalk{}, 10)
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

// TestHastenPageReadsAreBounded: a page of HastenRetries reads at most
// hastenReads retry state records, hastened or passed by, so that a
// queue of retries all due (a second retry-now while the breaker waits
// to probe) costs a bounded page all the same; the walk goes on at the
// next call, to the one retry due later behind them.
func TestHastenPageReadsAreBounded(t *testing.T) {
	defer jetstreamlog.SetHastenReads(2)()
	l := open(t, runServer(t), fmt.Sprintf("H%d", streams.Add(1)))
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var es []pipeline.Entry
	for i := range 6 {
		es = append(es, pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprintf("hb-%d", i), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "crm", Route: "all"}}})
	}
	if _, err := l.Append(ctx, es); err != nil {
		t.Fatal(err)
	}
	q := l.Queue("crm")
	var ds []pipeline.Delivery
	for len(ds) < 6 {
		got, err := q.Fetch(ctx, 6-len(ds))
		if err != nil {
			t.Fatalf("Fetch: %v (got %d of 6)", err, len(ds))
		}
		ds = append(ds, got...)
	}
	// Five retries due now, then one due in an hour, in stream order.
	for i, d := range ds {
		s := pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(-time.Minute), Err: "503"}
		if i == len(ds)-1 {
			s.RetryAt = time.Now().Add(time.Hour)
		}
		if err := q.Settle(ctx, []pipeline.Settlement{s}); err != nil {
			t.Fatal(err)
		}
	}
	var w pipeline.RetryWalk
	var pages []int
	total := 0
	for !w.Done && len(pages) < 20 {
		n, err := q.(pipeline.RetryHastener).HastenRetries(ctx, &w, 10)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, n)
		total += n
	}
	if len(pages) < 3 || pages[0] != 0 || total != 1 || !w.Done {
		t.Errorf("HastenRetries pages of five due retries and one an hour away, two records a page = %v (done %v); want 0 on the first two pages (two due ones each), 1 in all", pages, w.Done)
	}
}
