package badgerlog_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
)

// BenchmarkAppend measures one durable append (one group commit of the
// write-ahead log: the fdatasync) of batches of 1, 16 and 256 CallKaro-sized
// events, each with a dedup key and one queue entry, with ids as ingest makes
// them (UUIDv7) and others. ns/op is per batch; the events/s metric is what
// one writer goroutine sustains.
func BenchmarkAppend(b *testing.B) {
	body, err := os.ReadFile("../../ingest/testdata/call_ended.json")
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 16, 256} {
		for _, ids := range []string{"uuidv7", "other"} {
			b.Run(fmt.Sprintf("batch=%d/ids=%s", n, ids), func(b *testing.B) {
				benchmarkAppend(b, body, n, ids == "uuidv7")
			})
		}
	}
}

// benchmarkAppend appends batches of n events with UUIDv7 ids as ingest
// makes them (found through the time index) or others (an index key each).
func benchmarkAppend(b *testing.B, body []byte, n int, v7 bool) {
	db, err := badgerlog.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	seq := 0
	entries := make([]pipeline.Entry, n)
	b.SetBytes(int64(n * len(body)))
	start := time.Now()
	for b.Loop() {
		for i := range entries {
			seq++
			id := fmt.Sprintf("ev-%09d", seq)
			if v7 {
				id = uuid.Must(uuid.NewV7()).String()
			}
			entries[i] = pipeline.Entry{
				Event:       pipeline.Event{ID: id, Source: "callkaro", ReceivedAt: time.Now(), Body: body},
				DedupKey:    id,
				DedupWindow: time.Hour,
				Targets:     []pipeline.Target{{Sink: "archive", Route: "all-calls"}},
			}
		}
		if _, err := db.Append(ctx, entries); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(seq)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkEventByID measures finding an event by its id (pipelined events
// show, the inspector) in a log of 60,000 events appended in batches of 50:
// with UUIDv7 ids through the time index, at 10,000 events a second (a
// bucket of 128 ms holds 1,280) and crowded as after the wall clock stepped
// back (google/uuid then counts 4,096 ids a millisecond: all 60,000 in one
// bucket); with other ids through an index key each.
func BenchmarkEventByID(b *testing.B) {
	for _, ids := range []string{"uuidv7", "uuidv7-crowded", "other"} {
		b.Run("ids="+ids, func(b *testing.B) {
			db, err := badgerlog.Open(b.TempDir(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			ctx := context.Background()
			const n, per = 60_000, 50
			all := make([]string, 0, n)
			ms0 := uint64(time.Now().Add(-time.Hour).UnixMilli())
			for i := 0; i < n; i += per {
				entries := make([]pipeline.Entry, per)
				for j := range entries {
					id := fmt.Sprintf("ev-%09d", i+j)
					if ids != "other" {
						u, err := uuid.NewV7FromReader(rand.Reader)
						if err != nil {
							b.Fatal(err)
						}
						ms := ms0 + uint64(i+j)/10
						if ids == "uuidv7-crowded" {
							ms = ms0 + uint64(i+j)/4096
						}
						u[0], u[1], u[2], u[3], u[4], u[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
						id = u.String()
					}
					all = append(all, id)
					entries[j] = pipeline.Entry{
						Event:   pipeline.Event{ID: id, Source: "callkaro", ReceivedAt: time.Now(), Body: []byte(`{}`)},
						Targets: []pipeline.Target{{Sink: "archive", Route: "all-calls"}},
					}
				}
				if _, err := db.Append(ctx, entries); err != nil {
					b.Fatal(err)
				}
			}
			i := 0
			for b.Loop() {
				i = (i + 7919) % n
				if ev, err := db.Event(ctx, all[i]); err != nil || ev.ID != all[i] {
					b.Fatalf("Event(%s) = %s, %v", all[i], ev.ID, err)
				}
			}
		})
	}
}

// BenchmarkSettle measures the delivery side of the log: Fetch a batch of
// 1 or 128 CallKaro-sized events and Settle it as delivered (one write-ahead
// log record and fsync per Settle). ns/op is per batch; events/s is what one
// dispatcher sustains against the log alone. The delivery record of each
// event rides in the same record.
func BenchmarkSettle(b *testing.B) {
	body, err := os.ReadFile("../../ingest/testdata/call_ended.json")
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 128} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			db, err := badgerlog.Open(b.TempDir(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			ctx := context.Background()
			q := db.Queue("archive")
			seq := 0
			entries := make([]pipeline.Entry, n)
			settled := 0
			var spent time.Duration
			for b.Loop() {
				b.StopTimer()
				for i := range entries {
					seq++
					entries[i] = pipeline.Entry{
						Event:   pipeline.Event{ID: fmt.Sprintf("ev-%09d", seq), Source: "callkaro", ReceivedAt: time.Now(), Body: body},
						Targets: []pipeline.Target{{Sink: "archive", Route: "all-calls"}},
					}
				}
				if _, err := db.Append(ctx, entries); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				ds, err := q.Fetch(ctx, n)
				if err != nil || len(ds) != n {
					b.Fatalf("Fetch(%d) = %d, %v", n, len(ds), err)
				}
				ss := make([]pipeline.Settlement, len(ds))
				for i, d := range ds {
					ss[i] = pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack}
				}
				if err := q.Settle(ctx, ss); err != nil {
					b.Fatal(err)
				}
				spent += time.Since(start)
				settled += n
			}
			b.ReportMetric(float64(settled)/spent.Seconds(), "events/s")
		})
	}
}

// BenchmarkPrune measures retention removing delivered events: each op
// appends 2,000 events routed to two sinks (UUIDv7 ids, a dedup key each)
// to a new log, delivers them at both (acked at the first attempt, as most
// are), and prunes them; only the Prune is timed. µs/event is its time (CPU
// and the commit's fdatasync) per event removed.
func BenchmarkPrune(b *testing.B) {
	ctx := context.Background()
	const n, per = 2000, 50
	var pruned time.Duration
	for b.Loop() {
		b.StopTimer()
		db, err := badgerlog.Open(b.TempDir(), nil)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < n; i += per {
			entries := make([]pipeline.Entry, per)
			for j := range entries {
				id := uuid.Must(uuid.NewV7()).String()
				entries[j] = pipeline.Entry{
					Event:    pipeline.Event{ID: id, Source: "callkaro", ReceivedAt: time.Now().Add(-time.Hour), Body: []byte(`{}`)},
					DedupKey: id, DedupWindow: time.Hour,
					Targets: []pipeline.Target{{Sink: "archive", Route: "r"}, {Sink: "db", Route: "r"}},
				}
			}
			if _, err := db.Append(ctx, entries); err != nil {
				b.Fatal(err)
			}
		}
		for _, sink := range []string{"archive", "db"} {
			q := db.Queue(sink)
			for left := n; left > 0; {
				ds, err := q.Fetch(ctx, 500)
				if err != nil {
					b.Fatal(err)
				}
				ss := make([]pipeline.Settlement, len(ds))
				for i, d := range ds {
					ss[i] = pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack}
				}
				if err := q.Settle(ctx, ss); err != nil {
					b.Fatal(err)
				}
				left -= len(ds)
			}
		}
		b.StartTimer()
		start := time.Now()
		removed, err := db.Prune(time.Now())
		pruned += time.Since(start)
		b.StopTimer()
		if err != nil || removed != n {
			b.Fatalf("Prune = %d, %v; want %d", removed, err, n)
		}
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(pruned.Microseconds())/float64(b.N*n), "µs/event")
}

// BenchmarkNextRetry measures what next_retry_seconds costs GET /v1/sinks
// and the web UI's overview per sink, with 100,000 events waiting for a
// retry (an outage: a Retry-After of an hour, half of them due already and
// held back by an open breaker), against Stats, which those pages pay
// already: NextRetry seeks one key, Stats counts every retry key. Then
// after a retry-now, with 100,000 deleted keys to pass.
func BenchmarkNextRetry(b *testing.B) {
	const n, batch = 100_000, 1000
	db, err := badgerlog.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	q := db.Queue("crm")
	now := time.Now()
	var dues [][]uint64
	for i := 0; i < n; i += batch {
		entries := make([]pipeline.Entry, batch)
		for j := range entries {
			entries[j] = pipeline.Entry{
				Event:   pipeline.Event{ID: fmt.Sprintf("ev-%09d", i+j), Source: "callkaro", ReceivedAt: now, Body: []byte(`{"event":"call_ended"}`)},
				Targets: []pipeline.Target{{Sink: "crm", Route: "all-calls"}},
			}
		}
		if _, err := db.Append(ctx, entries); err != nil {
			b.Fatal(err)
		}
		ds, err := q.Fetch(ctx, batch)
		if err != nil || len(ds) != batch {
			b.Fatalf("Fetch(%d) = %d, %v", batch, len(ds), err)
		}
		ss := make([]pipeline.Settlement, len(ds))
		var due []uint64
		for j, d := range ds {
			ss[j] = pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Retry, RetryAt: now.Add(time.Hour + time.Duration(i+j)*time.Millisecond), Err: "503 Retry-After: 3600"}
			if j%2 == 0 {
				due = append(due, d.Seq)
			}
		}
		if err := q.Settle(ctx, ss); err != nil {
			b.Fatal(err)
		}
		dues = append(dues, due)
	}
	// Half of them due now, waiting for the breaker's probe (made due
	// after the fetches, which would have taken them).
	for _, due := range dues {
		if n, err := q.(pipeline.Hastener).Hasten(ctx, due); err != nil || n != len(due) {
			b.Fatalf("Hasten = %d, %v; want %d", n, err, len(due))
		}
	}
	rc := q.(pipeline.RetryClock)
	b.Run("NextRetry", func(b *testing.B) {
		for b.Loop() {
			if at, err := rc.NextRetry(ctx, time.Now()); err != nil || at.Before(now.Add(time.Hour)) {
				b.Fatalf("NextRetry = %v, %v; want an hour ahead", at, err)
			}
		}
	})
	b.Run("Stats", func(b *testing.B) {
		for b.Loop() {
			if st, err := q.Stats(ctx); err != nil || st.Retrying != n {
				b.Fatalf("Stats = %+v, %v; want %d retrying", st, err, n)
			}
		}
	})
	// Retry-now made every retry due: their old keys, an hour ahead, are
	// deletion marks until compaction removes them, in front of the one
	// event that failed again since. NextRetry gives up past its bound
	// (the answer is not known) instead of walking 100,000 of them.
	for w := (pipeline.RetryWalk{}); !w.Done; {
		if _, err := q.(pipeline.RetryHastener).HastenRetries(ctx, &w, batch); err != nil {
			b.Fatal(err)
		}
	}
	ds, err := q.Fetch(ctx, 1)
	if err != nil {
		b.Fatal(err)
	}
	if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: now.Add(2 * time.Hour), Err: "503"}}); err != nil {
		b.Fatal(err)
	}
	b.Run("NextRetry/after-retry-now", func(b *testing.B) {
		for b.Loop() {
			if at, err := rc.NextRetry(ctx, time.Now()); err == nil {
				b.Fatalf("NextRetry = %v, nil; want an error: too many deleted keys to pass", at)
			}
		}
	})
}
