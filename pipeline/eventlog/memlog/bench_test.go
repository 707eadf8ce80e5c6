package memlog

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// BenchmarkHastenRetries measures a whole retry-now of n retries waiting
// for an hour (pages of 1,000, as admin.HastenAll takes them, until the
// walk is done), with as many entries already due beside them. ns/op is
// per retry-now; the ns/retry metric should not grow with n. impl=rescan
// is the HastenRetries before walks (each page a pass over every retry
// from the map's start), kept here to measure against in the same run.
func BenchmarkHastenRetries(b *testing.B) {
	for _, impl := range []string{"walk", "rescan"} {
		for _, n := range []int{10000, 40000, 160000} {
			b.Run(fmt.Sprintf("impl=%s/retries=%d", impl, n), func(b *testing.B) {
				hasten := (*Queue).HastenRetries
				if impl == "rescan" {
					hasten = (*Queue).hastenRetriesRescan
				}
				benchmarkHastenRetries(b, n, hasten)
			})
		}
	}
}

// hastenRetriesRescan is HastenRetries as it was before walks: every page
// goes through q.q.retry from the map's start, passing by the entries
// due; the walk is done when a page moves none.
func (q *Queue) hastenRetriesRescan(ctx context.Context, w *pipeline.RetryWalk, max int) (int, error) {
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
	w.Done = n == 0
	return n, nil
}

func benchmarkHastenRetries(b *testing.B, n int, hasten func(*Queue, context.Context, *pipeline.RetryWalk, int) (int, error)) {
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
		if d.Seq%2 == 1 {
			ss[i].RetryAt = time.Now() // due already: a retry-now passes it by
		}
	}
	if err := q.Settle(ctx, ss); err != nil {
		b.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	for b.Loop() {
		total := 0
		for w := (pipeline.RetryWalk{}); !w.Done; {
			m, err := hasten(q, ctx, &w, 1000)
			if err != nil {
				b.Fatal(err)
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
			}
		}
		l.mu.Unlock()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/retry")
}
