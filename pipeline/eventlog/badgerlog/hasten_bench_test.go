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
