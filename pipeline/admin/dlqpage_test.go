package admin_test

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"weak"

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
	// settles counts the RetryDead and DropDead calls, maxSeqs the most
	// seqs one of them was given.
	settles, maxSeqs int
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

func (q *countingQueue) RetryDead(ctx context.Context, seqs []uint64) (int, error) {
	q.settled(seqs)
	return q.Queue.RetryDead(ctx, seqs)
}

func (q *countingQueue) DropDead(ctx context.Context, seqs []uint64) (int, error) {
	q.settled(seqs)
	return q.Queue.DropDead(ctx, seqs)
}

func (q *countingQueue) settled(seqs []uint64) {
	q.b.mu.Lock()
	defer q.b.mu.Unlock()
	q.b.settles++
	q.b.maxSeqs = max(q.b.maxSeqs, len(seqs))
}

// deadLetters appends n events routed to archive to l, each with body, and
// settles them dead there.
func deadLetters(t *testing.T, l pipeline.Log, n int, body []byte) {
	t.Helper()
	var es []pipeline.Entry
	for i := range n {
		es = append(es, pipeline.Entry{
			Event:   pipeline.Event{ID: fmt.Sprintf("big-%04d", i), Source: "callkaro", ReceivedAt: time.Now(), Body: body},
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
}

// TestSettleAllDeadInPages: a retry or a drop of a whole dead-letter queue
// goes through it a page at a time, and its answer names the first
// MaxListedIDs ids and counts the rest, so that a queue of a million dead
// letters costs neither a million ids in memory nor in the answer.
func TestSettleAllDeadInPages(t *testing.T) {
	const n = 2*admin.MaxListedIDs + 500
	for _, action := range []string{"retry", "drop"} {
		t.Run(action, func(t *testing.T) {
			l := memlog.New()
			t.Cleanup(func() { l.Close() })
			deadLetters(t, l, n, []byte(`{}`))
			b := &bodyCounter{Log: l}
			h := admin.Handler(v1Options(b))
			r := call(t, h, "POST", "/v1/sinks/archive/dlq/"+action, token, `{"all":true}`)
			res := into[admin.DeadLetterResult](t, r)
			if r.code != http.StatusOK || res.Count != n || len(res.IDs) != admin.MaxListedIDs || res.IDsOmitted != n-admin.MaxListedIDs ||
				res.IDs[0] != "big-0000" || res.IDs[admin.MaxListedIDs-1] != fmt.Sprintf("big-%04d", admin.MaxListedIDs-1) {
				t.Fatalf("POST dlq/%s all = %d, count %d, %d ids (%v…), %d omitted; want 200, %d, the first %d in order, %d omitted",
					action, r.code, res.Count, len(res.IDs), res.IDs[:min(len(res.IDs), 2)], res.IDsOmitted, n, admin.MaxListedIDs, n-admin.MaxListedIDs)
			}
			if !strings.Contains(string(r.body), `"ids_omitted":`) {
				t.Errorf("answer has no ids_omitted: %.200s", r.body)
			}
			if b.settles < 3 || b.maxSeqs > 1000 {
				t.Errorf("%d calls of the log for %d dead letters, the largest of %d; want pages of at most 1000", b.settles, n, b.maxSeqs)
			}
			if st, err := l.Queue("archive").Stats(context.Background()); err != nil || st.Dead != 0 {
				t.Errorf("Stats after %s all = %+v, %v; want no dead letter left", action, st, err)
			}
		})
	}
}

// TestDeadLetterPagesHoldFewBodies: a page of a thousand dead letters, and
// a retry of all of them, read the log a few dozen at a time, so the
// bodies of a whole page are never held at once (a log reads each dead
// letter with its event).
func TestDeadLetterPagesHoldFewBodies(t *testing.T) {
	const n, size = 200, 16 << 10
	l := memlog.New()
	t.Cleanup(func() { l.Close() })
	deadLetters(t, l, n, []byte(`"`+strings.Repeat("x", size)+`"`))
	b := &bodyCounter{Log: l}
	h := admin.Handler(v1Options(b))

	got := into[admin.DeadLetterList](t, call(t, h, "GET", "/v1/sinks/archive/dlq?limit=1000", "", ""))
	if len(got.DeadLetters) != n || got.Next != "" || got.DeadLetters[n-1].ID != "big-0199" {
		t.Fatalf("GET dlq?limit=1000 = %d dead letters, next %q; want all %d, no next", len(got.DeadLetters), got.Next, n)
	}
	page := into[admin.DeadLetterList](t, call(t, h, "GET", "/v1/sinks/archive/dlq?limit=50&after="+fmt.Sprint(got.DeadLetters[99].Seq), "", ""))
	if len(page.DeadLetters) != 50 || page.DeadLetters[0].ID != "big-0100" || page.Next != fmt.Sprint(got.DeadLetters[149].Seq) {
		t.Errorf("GET dlq?limit=50 after the 100th = %d from %v, next %q; want big-0100 to big-0149", len(page.DeadLetters), page.DeadLetters[0].ID, page.Next)
	}
	r := call(t, h, "POST", "/v1/sinks/archive/dlq/retry", token, `{"all":true}`)
	if res := into[admin.DeadLetterResult](t, r); r.code != http.StatusOK || res.Count != n {
		t.Fatalf("POST dlq/retry all = %d %s, want %d retried", r.code, r.body, n)
	}
	if limit := 64 * (size + 2); b.max > limit {
		t.Errorf("one read of the dead letters held %d bytes of bodies, want at most %d (a few dozen events)", b.max, limit)
	}
}

// payloadLog is a log whose queues hand each dead letter a payload of its
// own (a transform's output, up to rules.MaxPayload in a real log), and
// count at each DropDead how many of those are still reachable.
type payloadLog struct {
	pipeline.Log
	mu sync.Mutex
	// given tracks every payload handed out; held is, for each DropDead,
	// how many of them were still reachable at it.
	given []weak.Pointer[byte]
	held  []int
}

func (p *payloadLog) Queue(sink string) pipeline.Queue { return &payloadQueue{p.Log.Queue(sink), p} }

type payloadQueue struct {
	pipeline.Queue
	p *payloadLog
}

func (q *payloadQueue) DeadLetters(ctx context.Context, after uint64, limit int) ([]pipeline.DeadLetter, error) {
	dls, err := q.Queue.DeadLetters(ctx, after, limit)
	q.p.mu.Lock()
	defer q.p.mu.Unlock()
	for i := range dls {
		payload := make([]byte, 1<<10)
		dls[i].Payload = payload
		q.p.given = append(q.p.given, weak.Make(&payload[0]))
	}
	return dls, err
}

func (q *payloadQueue) DropDead(ctx context.Context, seqs []uint64) (int, error) {
	runtime.GC() // clears the weak pointers of what is no longer reachable
	q.p.mu.Lock()
	n := 0
	for _, w := range q.p.given {
		if w.Value() != nil {
			n++
		}
	}
	q.p.held = append(q.p.held, n)
	q.p.mu.Unlock()
	return q.Queue.DropDead(ctx, seqs)
}

// TestSettleAllDeadHoldsNoPayloads: a drop of a whole dead-letter queue
// holds the seqs and ids of a page, not its dead letters: a page of a
// thousand with a transform's payload each (up to 1 MiB) would hold a
// gigabyte.
func TestSettleAllDeadHoldsNoPayloads(t *testing.T) {
	const n = admin.MaxListedIDs + 200
	l := memlog.New()
	t.Cleanup(func() { l.Close() })
	deadLetters(t, l, n, []byte(`{}`))
	p := &payloadLog{Log: l}
	res, err := admin.SettleAllDead(context.Background(), v1Options(p), "archive", "drop", nil)
	if err != nil || res.Count != n {
		t.Fatalf("SettleAllDead(drop) = %d, %v; want %d, nil", res.Count, err, n)
	}
	if len(p.held) < 2 {
		t.Fatalf("%d DropDead calls for %d dead letters, want a page at a time (the premise)", len(p.held), n)
	}
	for i, held := range p.held {
		if held > 64 {
			t.Errorf("DropDead call %d: %d payloads of the dead letters read still held, want a few dozen at most", i, held)
		}
	}
}
