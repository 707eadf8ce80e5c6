package inspector_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
	"github.com/pipelined/pipelined/pipeline/inspector"
)

var (
	benchEvents = flag.Int("inspector.events", 20000, "events in the log of BenchmarkPages (make ui-bench: 1000000)")
	benchDir    = flag.String("inspector.dir", "", "keep the filled log of BenchmarkPages in this directory and reuse it (empty: a temporary one)")
)

// fillLog appends n events through the log's own API, the way the writer
// does (batches of 1000): 90% from source callkaro, 10% from shop; every
// event to archive, every tenth also to crm. archive's queue is then
// drained as delivered, and crm's settled too except its last 500: one in
// a hundred of crm's events is dead. It returns the id of an event in the
// middle.
func fillLog(tb testing.TB, db *badgerlog.DB, n int) string {
	ctx := context.Background()
	start := time.Now()
	base := time.Now().Add(-time.Duration(n) * time.Millisecond)
	const batch = 1000
	for i := 0; i < n; i += batch {
		var es []pipeline.Entry
		for j := i; j < min(i+batch, n); j++ {
			src, sid := "callkaro", fmt.Sprintf("CA%010d", j)
			if j%10 == 9 {
				src = "shop"
			}
			body := fmt.Sprintf(`{"event":"call_ended","data":{"callSid":%q,"from":"+9198%08d","duration":%d,"post_call":{"lead_status":%q,"summary":"The caller asked about pricing for the annual plan and wants a call back on Monday morning."}}}`,
				sid, j, j%600, map[bool]string{true: "interested", false: "not_interested"}[j%7 == 0])
			ts := []pipeline.Target{{Sink: "archive", Route: "all-calls"}}
			if j%10 == 0 {
				ts = append(ts, pipeline.Target{Sink: "crm", Route: "interested"})
			}
			es = append(es, pipeline.Entry{
				Event:    pipeline.Event{ID: fmt.Sprintf("ev-%09d", j), Source: src, ReceivedAt: base.Add(time.Duration(j) * time.Millisecond).UTC(), Body: []byte(body), Auth: "none", Headers: map[string]string{"content-type": "application/json", "user-agent": "CallKaro-Webhooks/2.1"}},
				DedupKey: sid, DedupWindow: time.Hour, Targets: ts,
			})
		}
		if _, err := db.Append(ctx, es); err != nil {
			tb.Fatal(err)
		}
	}
	drain := func(sink string, leave int, dead func(i int) bool) {
		q := db.Queue(sink)
		st, _ := q.Stats(ctx)
		left, i := st.Ready, 0
		for left > leave {
			fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ds, err := q.Fetch(fctx, min(batch, left-leave))
			cancel()
			if err != nil {
				tb.Fatal(err)
			}
			ss := make([]pipeline.Settlement, len(ds))
			for k, d := range ds {
				ss[k] = pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack}
				if dead(i) {
					ss[k] = pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Dead, Err: `POST https://crm.example.com/hooks answered 503 Service Unavailable: "<html>upstream down</html>"`}
				}
				i++
			}
			if err := q.Settle(ctx, ss); err != nil {
				tb.Fatal(err)
			}
			left -= len(ds)
		}
	}
	drain("archive", 0, func(int) bool { return false })
	drain("crm", 500, func(i int) bool { return i%100 == 0 })
	tb.Logf("filled the log with %d events in %v", n, time.Since(start).Round(time.Second))
	return fmt.Sprintf("ev-%09d", n/2)
}

// BenchmarkPages times each page of the UI against a real Badger log of
// -inspector.events events (default 20000; `make ui-bench` runs it with
// 1,000,000): ns/op is one page, drawn whole, through the HTTP handler.
func BenchmarkPages(b *testing.B) {
	dir := *benchDir
	if dir == "" {
		dir = b.TempDir()
	}
	marker := filepath.Join(dir, fmt.Sprintf("filled-%d", *benchEvents))
	_, err := os.Stat(marker)
	filled := err == nil
	db, err := badgerlog.Open(filepath.Join(dir, "log"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	mid := fmt.Sprintf("ev-%09d", *benchEvents/2)
	if !filled {
		mid = fillLog(b, db, *benchEvents)
		os.WriteFile(marker, nil, 0o644)
	}
	// A running daemon's dispatchers have fetched from their queues by the
	// time anyone opens a page, which moves each queue's cursor past the
	// delivered entries (see badgerlog's Stats): fetch once, as they do.
	for _, name := range []string{"archive", "crm"} {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		db.Queue(name).Fetch(ctx, 1)
		cancel()
	}
	sinks := func(ctx context.Context) ([]admin.SinkStatus, error) {
		var out []admin.SinkStatus
		for _, name := range []string{"archive", "crm"} {
			st, err := db.Queue(name).Stats(ctx)
			if err != nil {
				return nil, err
			}
			out = append(out, admin.SinkStatus{Name: name, Plugin: "running", Breaker: "closed", Ready: st.Ready, Retrying: st.Retrying, Dead: st.Dead})
		}
		return out, nil
	}
	ui := inspector.New(inspector.Options{Admin: admin.Options{Log: db, Sinks: sinks, AllowUnauthenticated: true},
		SinkNames: func() []string { return []string{"archive", "crm"} }})
	srv := httptest.NewServer(ui)
	defer srv.Close()
	jar := &http.Client{}
	pages := []struct{ name, path string }{
		{"overview", "/ui/"},
		{"events", "/ui/events"},
		{"events-older", "/ui/events?after=" + fmt.Sprint(*benchEvents/2)},
		{"events-source", "/ui/events?source=shop"},
		{"events-dedup-key", "/ui/events?dedup_key=CA0000000042"},
		{"events-sink-dead", "/ui/events?sink=crm&state=dead"},
		{"events-when", "/ui/events?when=" + url.QueryEscape(`body.data.post_call.lead_status == "interested" && body.data.duration > 590`)},
		{"events-since", "/ui/events?since=" + url.QueryEscape(time.Now().Add(-time.Duration(*benchEvents/4)*time.Millisecond).UTC().Format(time.RFC3339))},
		{"event", "/ui/events/" + mid},
		{"dlq", "/ui/dlq/crm"},
		{"refused", "/ui/refused"},
		{"replay", "/ui/replay"},
		{"tail", "/ui/tail"},
	}
	b.Run("queue-stats", func(b *testing.B) { // what the overview and the DLQ page pay for the sinks' counts
		for b.Loop() {
			if _, err := sinks(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, p := range pages {
		b.Run(p.name, func(b *testing.B) {
			var worst time.Duration
			for b.Loop() {
				start := time.Now()
				resp, err := jar.Get(srv.URL + p.path)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("GET %s = %d", p.path, resp.StatusCode)
				}
				worst = max(worst, time.Since(start))
			}
			b.ReportMetric(float64(worst.Microseconds())/1000, "worst-ms")
		})
	}
}
