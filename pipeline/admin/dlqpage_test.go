package admin_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
)

// bodyCounter is a log whose queues record the most body bytes one
// DeadLetters call handed back: what a page of the admin API holds at once.
type bodyCounter struct {
	pipeline.Log
	mu  sync.Mutex
	max int
}

func (b *bodyCounter) Queue(sink string) pipeline.Queue { return &countingQueue{b.Log.Queue(sink), b} }

type countingQueue struct {
	pipeline.Queue
	b *bodyCounter
}

func (q *countingQueue) DeadLetters(ctx context.Context, after uint64, limit int) ([]pipeline.DeadLetter, error) {
	dls, err := q.Queue.DeadLetters(ctx, after, limit)
	n := 0
	for _, d := range dls {
		n += len(d.Event.Body)
	}
	q.b.mu.Lock()
	q.b.max = max(q.b.max, n)
	q.b.mu.Unlock()
	return dls, err
}

// TestDeadLetterPagesHoldFewBodies: a page of a thousand dead letters, and
// a retry of all of them, read the log a few dozen at a time, so the
// bodies of a whole page are never held at once (a log reads each dead
// letter with its event).
func TestDeadLetterPagesHoldFewBodies(t *testing.T) {
	const n, size = 200, 16 << 10
	l := memlog.New()
	t.Cleanup(func() { l.Close() })
	var es []pipeline.Entry
	for i := range n {
		es = append(es, pipeline.Entry{
			Event:   pipeline.Event{ID: fmt.Sprintf("big-%03d", i), Source: "callkaro", ReceivedAt: time.Now(), Body: []byte(`"` + strings.Repeat("x", size) + `"`)},
			Targets: []pipeline.Target{{Sink: "archive", Route: "all"}},
		})
	}
	ctx := context.Background()
	if _, err := l.Append(ctx, es); err != nil {
		t.Fatal(err)
	}
	q := l.Queue("archive")
	ds, err := q.Fetch(ctx, n)
	if err != nil || len(ds) != n {
		t.Fatalf("Fetch = %d, %v", len(ds), err)
	}
	var settle []pipeline.Settlement
	for _, d := range ds {
		settle = append(settle, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Dead, Err: "400"})
	}
	if err := q.Settle(ctx, settle); err != nil {
		t.Fatal(err)
	}
	b := &bodyCounter{Log: l}
	h := admin.Handler(v1Options(b))

	got := into[admin.DeadLetterList](t, call(t, h, "GET", "/v1/sinks/archive/dlq?limit=1000", "", ""))
	if len(got.DeadLetters) != n || got.Next != "" || got.DeadLetters[n-1].ID != "big-199" {
		t.Fatalf("GET dlq?limit=1000 = %d dead letters, next %q; want all %d, no next", len(got.DeadLetters), got.Next, n)
	}
	page := into[admin.DeadLetterList](t, call(t, h, "GET", "/v1/sinks/archive/dlq?limit=50&after="+fmt.Sprint(got.DeadLetters[99].Seq), "", ""))
	if len(page.DeadLetters) != 50 || page.DeadLetters[0].ID != "big-100" || page.Next != fmt.Sprint(got.DeadLetters[149].Seq) {
		t.Errorf("GET dlq?limit=50 after the 100th = %d from %v, next %q; want big-100 to big-149", len(page.DeadLetters), page.DeadLetters[0].ID, page.Next)
	}
	r := call(t, h, "POST", "/v1/sinks/archive/dlq/retry", token, `{"all":true}`)
	if res := into[admin.DeadLetterResult](t, r); r.code != http.StatusOK || res.Count != n {
		t.Fatalf("POST dlq/retry all = %d %s, want %d retried", r.code, r.body, n)
	}
	if limit := 64 * (size + 2); b.max > limit {
		t.Errorf("one read of the dead letters held %d bytes of bodies, want at most %d (a few dozen events)", b.max, limit)
	}
}
