package inspector_test

import (
	"context"
	"fmt"
	"html"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/inspector"
)

// readCounter is a log whose queues count the bytes of payloads their
// DeadLetters hand out.
type readCounter struct {
	pipeline.Log
	mu   sync.Mutex
	read int
}

func (c *readCounter) Queue(sink string) pipeline.Queue { return &countedQueue{c.Log.Queue(sink), c} }

// take returns the bytes read since the last call.
func (c *readCounter) take() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.read
	c.read = 0
	return n
}

type countedQueue struct {
	pipeline.Queue
	c *readCounter
}

func (q *countedQueue) DeadLetters(ctx context.Context, after uint64, limit int) ([]pipeline.DeadLetter, error) {
	dls, err := q.Queue.DeadLetters(ctx, after, limit)
	q.c.mu.Lock()
	for _, d := range dls {
		q.c.read += len(d.Payload)
	}
	q.c.mu.Unlock()
	return dls, err
}

// TestDeadLetterPageBoundedInBytes: the UI's dead-letter page over dead
// letters whose payloads are transform outputs of 1 MiB (a hostile body
// can make them so) reads a few of them, not a page of 50 (it read 51,
// 51 MiB, for a page that shows no payload), says the page ended early and
// links to the next page; following the links shows every dead letter
// once, in log order.
func TestDeadLetterPageBoundedInBytes(t *testing.T) {
	const n = 60
	l := memlog.New()
	t.Cleanup(func() { l.Close() })
	payload := []byte(`"` + strings.Repeat("p", 1<<20-2) + `"`)
	for i := range n {
		e := pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprintf("big-%02d", i), Source: "s", ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "crm", Route: "r", Payload: payload, Err: "transform: x"}}}
		if _, err := l.Append(context.Background(), []pipeline.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	rc := &readCounter{Log: l}
	ao := admin.Options{Log: rc, AllowUnauthenticated: true,
		Sinks: func(context.Context) ([]admin.SinkStatus, error) {
			return []admin.SinkStatus{{Name: "crm", Plugin: "running"}}, nil
		}}
	srv := httptest.NewServer(inspector.New(inspector.Options{Admin: ao, SinkNames: func() []string { return []string{"crm"} }}))
	t.Cleanup(srv.Close)
	c := client(t)
	next := regexp.MustCompile(`href="(/ui/dlq/crm\?after=[0-9]+)" rel="next"`)
	row := regexp.MustCompile(`href="/ui/events/(big-[0-9]+)"`)
	var seen []string
	u := srv.URL + "/ui/dlq/crm"
	for pages := 0; ; pages++ {
		if pages > n {
			t.Fatalf("more than %d pages: the cursor does not move", n)
		}
		resp, page := get(t, c, u)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s = %d %.300s", u, resp.StatusCode, page)
		}
		if read := rc.take(); read > 12<<20 {
			t.Errorf("page %d read %d MiB of payloads, want at most a few (the page's bound is 4 MiB)", pages, read>>20)
		}
		rows := row.FindAllStringSubmatch(page, -1)
		if len(rows) == 0 {
			t.Fatalf("page %d shows no dead letter:\n%.2000s", pages, page)
		}
		for _, r := range rows {
			seen = append(seen, r[1])
		}
		m := next.FindStringSubmatch(page)
		if m == nil {
			break
		}
		if !strings.Contains(page, "whose payloads reach 4 MiB") {
			t.Errorf("page %d is cut by its bound in bytes and does not say so", pages)
		}
		u = srv.URL + html.UnescapeString(m[1])
	}
	if len(seen) != n {
		t.Fatalf("the pages showed %d dead letters, want %d: %v", len(seen), n, seen)
	}
	for i, id := range seen {
		if want := fmt.Sprintf("big-%02d", i); id != want {
			t.Fatalf("dead letter %d shown is %s, want %s (every one once, in log order)", i, id, want)
		}
	}
}
