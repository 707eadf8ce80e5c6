package memlog

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// BenchmarkHastenRetries measures a whole retry-now of n retries waiting
// for an hour (pages of 1,000, as admin.HastenAll takes them, until a page
// moves none), with as many entries already due beside them. ns/op is per
// retry-now; the ns/retry metric should not grow with n. impl=walk is the
// HastenRetries before q.later (a walk of every retry per page), kept
// here to measure against in the same run.
func BenchmarkHastenRetries(b *testing.B) {
	for _, impl := range []string{"later", "walk"} {
		for _, n := range []int{10000, 40000, 160000} {
			b.Run(fmt.Sprintf("impl=%s/retries=%d", impl, n), func(b *testing.B) {
				hasten := (*Queue).HastenRetries
				if impl == "walk" {
					hasten = (*Queue).hastenRetriesWalk
				}
				benchmarkHastenRetries(b, n, hasten)
			})
		}
	}
}

// hastenRetriesWalk is HastenRetries as it was before q.later: every page
// walks q.q.retry from the map's start, passing by the entries due.
func (q *Queue) hastenRetriesWalk(ctx context.Context, max int) (int, error) {
	if err := q.lock(ctx, "hasten retries of"); err != nil {
		return 0, err
	}
	defer q.l.mu.Unlock()
	now := time.Now()
	n := 0
	for _, e := range q.q.retry {
		if n >= max {
			break
		}
		if q.makeDue(e, now) {
			n++
		}
	}
	if n > 0 {
		q.q.notify()
	}
	return n, nil
}

func benchmarkHastenRetries(b *testing.B, n int, hasten func(*Queue, context.Context, int) (int, error)) {
	ctx := context.Background()
	l := New()
	defer l.Close()
	es := make([]pipeline.Entry, 2*n)
	for i := range es {
		es[i] = pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprintf("b-%d", i), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "crm", Route: "all"}}}
	}
	if _, err := l.Append(ctx, es); err != nil {
		b.Fatal(err)
	}
	q := l.Queue("crm").(*Queue)
	ds, err := q.Fetch(ctx, 2*n)
	if err != nil || len(ds) != 2*n {
		b.Fatalf("Fetch = %d, %v; want %d", len(ds), err, 2*n)
	}
	ss := make([]pipeline.Settlement, len(ds))
	for i, d := range ds {
		ss[i] = pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "503"}
		if i%2 == 0 {
			ss[i].RetryAt = time.Now() // due already: a retry-now passes it by
		}
	}
	if err := q.Settle(ctx, ss); err != nil {
		b.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	for b.Loop() {
		total := 0
		for {
			m, err := hasten(q, ctx, 1000)
			if err != nil {
				b.Fatal(err)
			}
			if m == 0 {
				break
			}
			total += m
		}
		if total != n {
			b.Fatalf("hastened %d, want %d", total, n)
		}
		b.StopTimer()
		l.mu.Lock()
		for _, e := range q.q.retry { // wait for an hour again (every other one)
			if e.seq%2 == 0 {
				e.retryAt = later
				q.waitLater(e)
			}
		}
		l.mu.Unlock()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/retry")
}

// TestHastenIndexStaysSmall: an entry that fails again and again is noted
// in q.later each time, and HastenRetries, never called, does not take
// them away; q.later is made again before it holds more than twice what
// waits (and 64), and a retry-now then hastens the entry once.
func TestHastenIndexStaysSmall(t *testing.T) {
	ctx := context.Background()
	l := New()
	defer l.Close()
	if _, err := l.Append(ctx, []pipeline.Entry{{Event: pipeline.Event{ID: "again", Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
		Targets: []pipeline.Target{{Sink: "crm", Route: "all"}}}}); err != nil {
		t.Fatal(err)
	}
	q := l.Queue("crm").(*Queue)
	for i := range 1000 {
		ds, err := q.Fetch(ctx, 1)
		if err != nil || len(ds) != 1 {
			t.Fatalf("Fetch %d = %d, %v; want 1", i, len(ds), err)
		}
		s := pipeline.Settlement{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "503"}
		if err := q.Settle(ctx, []pipeline.Settlement{s}); err != nil {
			t.Fatal(err)
		}
		l.mu.Lock()
		later := len(q.q.later)
		q.q.retry[ds[0].Seq].retryAt = time.Now() // due again, for the next Fetch
		l.mu.Unlock()
		if later > 2*1+64 {
			t.Fatalf("after %d failures, q.later holds %d, want at most 66", i+1, later)
		}
	}
	l.mu.Lock()
	for _, e := range q.q.retry {
		e.retryAt = time.Now().Add(time.Hour)
	}
	l.mu.Unlock()
	if n, err := q.HastenRetries(ctx, 1000); err != nil || n != 1 {
		t.Errorf("HastenRetries = %d, %v; want 1 (the entry once)", n, err)
	}
}
