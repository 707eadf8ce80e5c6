package badgerlog

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// BenchmarkRequeue measures a replay's page (64 events) behind 100,000
// retries of the sink due in an hour (a day-long outage's): of 64
// delivered events, all queued again (queued=64), and of 64 entries
// waiting for a retry two hours ahead, none (queued=0). Requeue holds q.mu
// throughout, its commit included, so ns/op is how long the sink's Fetch
// and Settle wait. Between calls the entries queued are fetched and acked.
func BenchmarkRequeue(b *testing.B) {
	for _, queued := range []bool{true, false} {
		n := 0
		if queued {
			n = 64
		}
		b.Run(fmt.Sprint("queued=", n), func(b *testing.B) { benchmarkRequeue(b, 100_000, 64, queued) })
	}
}

func benchmarkRequeue(b *testing.B, others, page int, delivered bool) {
	ctx := context.Background()
	l, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	q := l.Queue("a")
	appendFetch := func(prefix string, n int, settle func(n int) []uint64) []uint64 {
		return appendThen(b, l, prefix, n, settle)
	}
	ack := func(n int) []uint64 {
		ds, err := q.Fetch(ctx, n)
		if err != nil || len(ds) != n {
			b.Fatalf("Fetch = %d, %v; want %d", len(ds), err, n)
		}
		ss := make([]pipeline.Settlement, n)
		seqs := make([]uint64, n)
		for i, d := range ds {
			ss[i], seqs[i] = pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack}, d.Seq
		}
		if err := q.Settle(ctx, ss); err != nil {
			b.Fatal(err)
		}
		return seqs
	}
	appendFetch("other", others, func(n int) []uint64 { return retryFetched(b, q, n, time.Now().Add(time.Hour)) })
	var seqs []uint64
	if delivered {
		seqs = appendFetch("page", page, ack)
	} else {
		seqs = appendFetch("page", page, func(n int) []uint64 { return retryFetched(b, q, n, time.Now().Add(2*time.Hour)) })
	}
	want := 0
	if delivered {
		want = page
	}
	rs := make([]pipeline.Requeue, len(seqs))
	for b.Loop() {
		for i, seq := range seqs {
			rs[i] = pipeline.Requeue{Seq: seq, Route: "r"}
		}
		n, err := q.Requeue(ctx, rs)
		if err != nil || n != want {
			b.Fatalf("Requeue = %d, %v; want %d", n, err, want)
		}
		if n > 0 {
			b.StopTimer()
			ack(n)
			b.StartTimer()
		}
	}
}
