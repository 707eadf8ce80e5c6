package admin_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
)

// pagedLog is a log whose queues count each page of a long admin
// operation (HastenRetries, Abandon, RetryDead, DropDeadSeqs) and close
// started once the second begins. From the second on, a page lasts until
// the server has seen the client hang up (the page's ctx is done), or
// until the test lets it go (release): the hang-up always comes in the
// middle of a page, and without a clock. A page does not stop then (as a
// page of the log that is one transaction finishes what it began): the
// caller must stop between pages.
type pagedLog struct {
	*memlog.Log
	started chan struct{}
	let     chan struct{}
	once    sync.Once
	mu      sync.Mutex
	pages   int
	unheard int // pages let go by the test, not ended by the hang-up
}

func newPagedLog(t *testing.T) *pagedLog {
	return &pagedLog{Log: fixture(t), started: make(chan struct{}), let: make(chan struct{})}
}

func (l *pagedLog) Queue(sink string) pipeline.Queue {
	return &pagedQueue{l.Log.Queue(sink).(*memlog.Queue), l}
}

// page is the start of a page: it counts it and, from the second on,
// waits for ctx, the call's, to be done.
func (l *pagedLog) page(ctx context.Context) {
	l.mu.Lock()
	l.pages++
	n := l.pages
	if n == 2 {
		close(l.started)
	}
	l.mu.Unlock()
	if n < 2 {
		return
	}
	select {
	case <-ctx.Done():
	case <-l.let:
		l.mu.Lock()
		l.unheard++
		l.mu.Unlock()
	}
}

// release lets every page go, waiting or to come, without the hang-up.
func (l *pagedLog) release() { l.once.Do(func() { close(l.let) }) }

func (l *pagedLog) count() (pages, unheard int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pages, l.unheard
}

type pagedQueue struct {
	*memlog.Queue
	l *pagedLog
}

func (q *pagedQueue) HastenRetries(ctx context.Context, w *pipeline.RetryWalk, max int) (int, error) {
	q.l.page(ctx)
	return q.Queue.HastenRetries(context.WithoutCancel(ctx), w, min(max, 10))
}

func (q *pagedQueue) Abandon(ctx context.Context, max int, errFor func(string) string) (int, error) {
	q.l.page(ctx)
	return q.Queue.Abandon(context.WithoutCancel(ctx), min(max, 10), errFor)
}

func (q *pagedQueue) RetryDead(ctx context.Context, seqs []uint64) (int, error) {
	q.l.page(ctx)
	return q.Queue.RetryDead(context.WithoutCancel(ctx), seqs)
}

func (q *pagedQueue) DropDeadSeqs(ctx context.Context, seqs []uint64) ([]uint64, error) {
	q.l.page(ctx)
	return q.Queue.DropDeadSeqs(context.WithoutCancel(ctx), seqs)
}

// TestHangUpStopsLongCalls: a client that hangs up on a call that goes
// page by page through a queue (retry-now, a retry or drop of a whole
// dead-letter queue, a give-up on a removed sink's whole queue) stops it
// at the next page: what the pages before did stays done, and the log
// says how much that was.
func TestHangUpStopsLongCalls(t *testing.T) {
	for _, tc := range []struct {
		name, path, body string
		setup            func(t *testing.T, l pipeline.Log)
		logged           string
	}{
		{"retry-now", "/v1/sinks/slack/retry-now", "", func(t *testing.T, l pipeline.Log) {
			appendTo(t, l, "slack", "late", 100)
			q := l.Queue("slack")
			ctx := context.Background()
			ds, err := q.Fetch(ctx, 200)
			if err != nil {
				t.Fatal(err)
			}
			var ss []pipeline.Settlement
			for _, d := range ds {
				ss = append(ss, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "503"})
			}
			if err := q.Settle(ctx, ss); err != nil {
				t.Fatal(err)
			}
		}, "sink retries made due now in part"},
		{"dlq retry all", "/v1/sinks/archive/dlq/retry", `{"all":true}`, func(t *testing.T, l pipeline.Log) {
			deadLetters(t, l, 20*1000+1, []byte(`{}`))
		}, "dead letters retried in part"},
		{"dlq drop all", "/v1/sinks/archive/dlq/drop", `{"all":true}`, func(t *testing.T, l pipeline.Log) {
			deadLetters(t, l, 20*1000+1, []byte(`{}`))
		}, "dead letters dropped in part"},
		{"give up all", "/v1/sinks/slack/dlq/add", `{"all":true}`, func(t *testing.T, l pipeline.Log) {
			appendTo(t, l, "slack", "late", 200)
		}, "giving up on a removed sink's queue stopped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newPagedLog(t)
			tc.setup(t, l.Log)
			o := v1Options(l)
			if tc.name == "give up all" {
				removedSlack(&o, func() bool { return true })
			}
			var logs syncBuffer
			o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			srv := httptest.NewServer(admin.Handler(o))
			defer srv.Close()
			defer l.release() // before Close, which waits for the call
			ctx, hangUp := context.WithCancel(context.Background())
			req, err := http.NewRequestWithContext(ctx, "POST", srv.URL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/json")
			done := make(chan error, 1)
			go func() {
				resp, err := srv.Client().Do(req)
				if err == nil {
					resp.Body.Close()
				}
				done <- err
			}()
			select {
			case <-l.started:
			case err := <-done:
				t.Fatalf("the call ended before its second page: %v (premise: it takes pages)", err)
			case <-time.After(time.Minute): // 20,000 dead letters under -race on a loaded machine
				t.Fatal("no second page in a minute")
			}
			hangUp()
			<-done
			// The page in progress ends once the server has seen the
			// hang-up, and then the call: Close returns when its handler
			// has. A call that does not stop gets its pages let go after
			// 30s, to be counted.
			closed := make(chan struct{})
			go func() { srv.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(30 * time.Second):
				l.release()
				select {
				case <-closed:
				case <-time.After(30 * time.Second):
					n, _ := l.count()
					t.Fatalf("the call still runs a minute after the hang-up, %d pages in", n)
				}
			}
			n, unheard := l.count()
			if unheard > 0 {
				t.Errorf("%d pages waited 30s for the hang-up and were let go: the call did not see it", unheard)
			}
			if n != 2 {
				t.Errorf("pages: %d, want 2: the call stops after the page in progress at the hang-up", n)
			}
			if !strings.Contains(logs.String(), tc.logged) {
				t.Errorf("after the hang-up, no %q in the log:\n%s", tc.logged, logs.String())
			}
		})
	}
}

// syncBuffer is a bytes.Buffer that a handler's logger and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
