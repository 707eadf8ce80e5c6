package admin_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
)

// TestDeadLetterListBoundedInBytes: GET /v1/sinks/{sink}/dlq?limit=1000
// over dead letters whose payloads are transform outputs of 1 MiB (a
// hostile body can make them so) answers a page of at most 4 MiB of them
// (at least one) with next, and the pages hold every one. It answered
// the whole limit: 60 such dead letters were a 61 MB answer that took the
// daemon's memory up by 410 MB (encoded whole before it is written), so a
// page of 1,000 would take several gigabytes.
func TestDeadLetterListBoundedInBytes(t *testing.T) {
	l := memlog.New()
	payload := []byte(`"` + strings.Repeat("p", 1<<20-2) + `"`)
	const n = 12
	for i := range n {
		e := pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprint("big-", i), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "slack", Route: "r", Payload: payload, Err: "transform: x"}}}
		if _, err := l.Append(context.Background(), []pipeline.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	h := admin.Handler(v1Options(l))
	seen := 0
	for after, pages := "", 0; ; pages++ {
		if pages > n {
			t.Fatalf("more than %d pages", n)
		}
		r := call(t, h, "GET", "/v1/sinks/slack/dlq?limit=1000&after="+after, token, "")
		if r.code != http.StatusOK {
			t.Fatalf("GET dlq = %d %.200s", r.code, r.body)
		}
		if len(r.body) > 5<<20 {
			t.Errorf("a page of the dead-letter list is %d bytes, want at most about 4 MiB", len(r.body))
		}
		page := into[admin.DeadLetterList](t, r)
		for _, d := range page.DeadLetters {
			if len(d.Payload) != len(payload) {
				t.Errorf("dead letter %s: payload of %d bytes, want %d", d.ID, len(d.Payload), len(payload))
			}
		}
		seen += len(page.DeadLetters)
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if seen != n {
		t.Errorf("the pages held %d dead letters, want %d", seen, n)
	}
}

// limitsAsked is a queue that records the limits DeadLetters is asked.
type limitsAsked struct {
	pipeline.Queue
	limits []int
}

func (q *limitsAsked) DeadLetters(ctx context.Context, after uint64, limit int) ([]pipeline.DeadLetter, error) {
	q.limits = append(q.limits, limit)
	return q.Queue.DeadLetters(ctx, after, limit)
}

// TestDeadLetterWalkReadsLargeOnesFewAtATime: a log reads each dead
// letter with its payload and its event's body; a walk of the queue (a
// page of the list, dlq retry or drop --all) asked for 32 at a time, 64
// MiB of them when each is 1 MiB. It asks for as many as the sizes seen
// say fit in 4 MiB.
func TestDeadLetterWalkReadsLargeOnesFewAtATime(t *testing.T) {
	l := memlog.New()
	payload := []byte(`"` + strings.Repeat("p", 1<<20-2) + `"`)
	for i := range 40 {
		e := pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprint("big-", i), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "slack", Route: "r", Payload: payload, Err: "transform: x"}}}
		if _, err := l.Append(context.Background(), []pipeline.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	q := &limitsAsked{Queue: l.Queue("slack")}
	n := 0
	if err := admin.EachDeadLetter(context.Background(), q, func(pipeline.DeadLetter) { n++ }); err != nil || n != 40 {
		t.Fatalf("EachDeadLetter = %d, %v; want 40", n, err)
	}
	for _, limit := range q.limits {
		if limit > 4 {
			t.Errorf("DeadLetters asked for %d dead letters of 1 MiB at once (limits %v), want at most 4", limit, q.limits)
			break
		}
	}
}
