package badgerlog

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pipelined/pipelined/pipeline"
)

// BenchmarkCloseFullMemtable measures Close of a healthy log whose
// memtables are as full as they get: one filled and waiting for its flush,
// and the active one filled to 95% of the size that would flush it, at the
// smallest and the largest [log] memtable_size. Close then flushes both to
// level 0, fsyncs Badger's files and writes the write-ahead log's last
// checkpoint. ns/op is one Close, worst-ms the slowest; the daemon's bound
// on Close (logCloseTimeout in package daemon) is chosen from them.
//
//	go test -run '^$' -bench BenchmarkCloseFullMemtable -benchtime 5x ./pipeline/eventlog/badgerlog
func BenchmarkCloseFullMemtable(b *testing.B) {
	for _, mt := range []int64{16 << 20, 256 << 20} {
		b.Run(fmt.Sprintf("memtable=%dMiB", mt>>20), func(b *testing.B) {
			// How many events one memtable holds: appended until the
			// first flush shows a table.
			l, perMemtable := fillLog(b, b.TempDir(), mt, -1)
			if err := l.Close(); err != nil {
				b.Fatal(err)
			}
			var worst time.Duration
			for b.Loop() {
				b.StopTimer()
				l, _ := fillLog(b, b.TempDir(), mt, perMemtable+perMemtable*95/100)
				b.StartTimer()
				start := time.Now()
				if err := l.Close(); err != nil {
					b.Fatal(err)
				}
				worst = max(worst, time.Since(start))
			}
			b.ReportMetric(float64(worst.Milliseconds()), "worst-ms")
			b.ReportMetric(float64(perMemtable), "events/memtable")
		})
	}
}

// fillLog opens a log in dir with memtable size mt and appends n events to
// it in batches of 512, or, with n < 0, until Badger has flushed a
// memtable; it returns the open log and how many events it appended. The
// bodies are small: what fills Badger's memtable is the events' records,
// time index and dedup keys, as the bodies stay in the write-ahead log.
func fillLog(tb testing.TB, dir string, mt int64, n int) (*DB, int) {
	tb.Helper()
	l, err := Open(dir, &Options{MemTableSize: mt})
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	appended := 0
	entries := make([]pipeline.Entry, 512)
	for n < 0 || appended < n {
		k := len(entries)
		if n >= 0 {
			k = min(k, n-appended)
		}
		for i := range entries[:k] {
			id := uuid.Must(uuid.NewV7()).String()
			entries[i] = pipeline.Entry{
				Event:       pipeline.Event{ID: id, Source: "callkaro", ReceivedAt: time.Now(), Body: []byte(`{}`)},
				DedupKey:    id,
				DedupWindow: time.Hour,
				Targets:     []pipeline.Target{{Sink: "archive", Route: "all-calls"}},
			}
		}
		if _, err := l.Append(ctx, entries[:k]); err != nil {
			tb.Fatal(err)
		}
		appended += k
		if n < 0 && len(l.db.Tables()) > 0 {
			break
		}
	}
	return l, appended
}
