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

// pagedLog is a log whose queues take pageTime over each page of a long
// admin operation (HastenRetries, Abandon, RetryDead, DropDeadSeqs), count
// them, and close started once the second begins. A page does not look at
// ctx (as a page of the log that is one transaction finishes what it
// began): the caller must stop between pages.
type pagedLog struct {
	*memlog.Log
	pageTime time.Duration
	mu       sync.Mutex
	pages    int
	started  chan struct{}
}

func (l *pagedLog) Queue(sink string) pipeline.Queue {
	return &pagedQueue{l.Log.Queue(sink).(*memlog.Queue), l}
}

// page is the start of a page: it counts it and takes pageTime.
func (l *pagedLog) page() {
	l.mu.Lock()
	l.pages++
	if l.pages == 2 {
		close(l.started)
	}
	l.mu.Unlock()
	time.Sleep(l.pageTime) // the work of a page on a slow disk
}

func (l *pagedLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pages
}

type pagedQueue struct {
	*memlog.Queue
	l *pagedLog
}

func (q *pagedQueue) HastenRetries(ctx context.Context, w *pipeline.RetryWalk, max int) (int, error) {
	q.l.page()
	return q.Queue.HastenRetries(context.WithoutCancel(ctx), w, min(max, 10))
}

func (q *pagedQueue) Abandon(ctx context.Context, max int, errFor func(string) string) (int, error) {
	q.l.page()
	return q.Queue.Abandon(context.WithoutCancel(ctx), min(max, 10), errFor)
}

func (q *pagedQueue) RetryDead(ctx context.Context, seqs []uint64) (int, error) {
	q.l.page()
	return q.Queue.RetryDead(context.WithoutCancel(ctx), seqs)
}

func (q *pagedQueue) DropDeadSeqs(ctx context.Context, seqs []uint64) ([]uint64, error) {
	q.l.page()
	return q.Queue.DropDeadSeqs(context.WithoutCancel(ctx), seqs)
}

// TestHangUpStopsLongCalls: a client that hangs up on a call that goes
// page by page through a queue (retry-now, a retry or drop of a whole
// dead-letter queue, a give-up on a removed sink's whole queue) stops it
// at the next page: what the pages before did stays done, and the log
// says how much that was.
func TestHangUpStopsLongCalls(t *testing.T) {
	const pageTime = 50 * time.Millisecond
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
			l := &pagedLog{Log: fixture(t), pageTime: pageTime, started: make(chan struct{})}
			tc.setup(t, l.Log)
			o := v1Options(l)
			if tc.name == "give up all" {
				removedSlack(&o, func() bool { return true })
			}
			var logs syncBuffer
			o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			srv := httptest.NewServer(admin.Handler(o))
			defer srv.Close()
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
			case <-time.After(10 * time.Second):
				t.Fatal("no second page in 10s")
			}
			hangUp()
			<-done
			// The page in progress ends, and then the call: wait for it to
			// say so, then see that no page began since.
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(logs.String(), tc.logged) {
				if time.Now().After(deadline) {
					t.Fatalf("after the hang-up, %d pages in all and no %q in the log:\n%s", l.count(), tc.logged, logs.String())
				}
				time.Sleep(pageTime)
			}
			n := l.count()
			time.Sleep(4 * pageTime)
			if got := l.count(); got != n || got > 4 {
				t.Errorf("pages after the hang-up: %d, then %d; want the call to stop at the page after it (at most 4 in all)", n, got)
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
