package badgerlog

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// BenchmarkHastenRetries measures a retry-now (one walk, pages of 1,000 as
// admin.HastenAll takes them) of n retries waiting for an hour; ns/op is
// per retry-now, ns/retry per entry made due.
func BenchmarkHastenRetries(b *testing.B) {
	const n = 20000
	ctx := context.Background()
	l, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	es := make([]pipeline.Entry, n)
	for i := range es {
		es[i] = pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprint("e", i), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "a", Route: "r"}}}
	}
	for i := 0; i < n; i += 1000 {
		if _, err := l.Append(ctx, es[i:i+1000]); err != nil {
			b.Fatal(err)
		}
	}
	q := l.Queue("a")
	wait := func() {
		for got := 0; got < n; {
			ds, err := q.Fetch(ctx, 1000)
			if err != nil {
				b.Fatal(err)
			}
			ss := make([]pipeline.Settlement, len(ds))
			for i, d := range ds {
				ss[i] = pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "503"}
			}
			if err := q.Settle(ctx, ss); err != nil {
				b.Fatal(err)
			}
			got += len(ds)
		}
	}
	wait()
	for b.Loop() {
		total := 0
		for w := (pipeline.RetryWalk{}); !w.Done; {
			m, err := q.(pipeline.RetryHastener).HastenRetries(ctx, &w, 1000)
			if err != nil {
				b.Fatal(err)
			}
			total += m
		}
		if total != n {
			b.Fatalf("hastened %d, want %d", total, n)
		}
		b.StopTimer()
		wait()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/retry")
}

// BenchmarkHasten measures a Hasten of 10 retries (a breaker's failed
// run) and of 1,000 (the dispatcher's most: maxParked), due in two hours,
// behind 100,000 other retries of the sink due in one (a day-long
// outage's). Hasten holds q.mu throughout, its commit included, so ns/op
// is how long the sink's Fetch and Settle wait. Between calls the entries
// asked for are fetched and settled two hours ahead again.
func BenchmarkHasten(b *testing.B) {
	for _, asked := range []int{10, 1000} {
		b.Run(fmt.Sprint("asked=", asked), func(b *testing.B) { benchmarkHasten(b, 100_000, asked) })
	}
}

func benchmarkHasten(b *testing.B, others, asked int) {
	ctx := context.Background()
	l, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	q := l.Queue("a")
	appendRetry := func(prefix string, n int, due time.Time) []uint64 {
		return appendThen(b, l, prefix, n, func(n int) []uint64 { return retryFetched(b, q, n, due) })
	}
	appendRetry("other", others, time.Now().Add(time.Hour))
	seqs := appendRetry("late", asked, time.Now().Add(2*time.Hour))
	for b.Loop() {
		n, err := q.(pipeline.Hastener).Hasten(ctx, seqs)
		if err != nil || n != asked {
			b.Fatalf("Hasten = %d, %v; want %d", n, err, asked)
		}
		b.StopTimer()
		retryFetched(b, q, asked, time.Now().Add(2*time.Hour))
		b.StartTimer()
	}
}

// appendThen appends n events to sink "a" of l, with ids prefix0,
// prefix1, ..., 1,000 at a time, calling settle with each batch's size
// after its append (to fetch and settle them), and returns the seqs
// settle returned.
func appendThen(b *testing.B, l *DB, prefix string, n int, settle func(n int) []uint64) []uint64 {
	var seqs []uint64
	for i := 0; i < n; i += 1000 {
		es := make([]pipeline.Entry, min(1000, n-i))
		for j := range es {
			es[j] = pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprint(prefix, i+j), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
				Targets: []pipeline.Target{{Sink: "a", Route: "r"}}}
		}
		if _, err := l.Append(context.Background(), es); err != nil {
			b.Fatal(err)
		}
		seqs = append(seqs, settle(len(es))...)
	}
	return seqs
}

// retryFetched fetches n entries of q, due now, and settles them as
// retries due at due; it returns their seqs.
func retryFetched(b *testing.B, q pipeline.Queue, n int, due time.Time) []uint64 {
	ctx := context.Background()
	ds, err := q.Fetch(ctx, n)
	if err != nil || len(ds) != n {
		b.Fatalf("Fetch = %d, %v; want %d", len(ds), err, n)
	}
	ss := make([]pipeline.Settlement, len(ds))
	seqs := make([]uint64, len(ds))
	for i, d := range ds {
		ss[i] = pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Retry, RetryAt: due, Err: "503"}
		seqs[i] = d.Seq
	}
	if err := q.Settle(ctx, ss); err != nil {
		b.Fatal(err)
	}
	return seqs
}
