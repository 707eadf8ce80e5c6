package admin_test

import (
	"context"
	"testing"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
)

// refailing is a queue whose walks never end: every page finds a whole
// page waiting, as a log whose walk counted the entries that fail again
// as fast as they are made due would (HastenAll's guard, for a log that
// keeps no walk as the contract says).
type refailing struct {
	pipeline.Queue
	pages int
}

func (q *refailing) HastenRetries(_ context.Context, w *pipeline.RetryWalk, max int) (int, error) {
	q.pages++
	if q.pages > 100 { // a walk that never ends, for the old code: stop it here
		w.Done = true
		return 0, nil
	}
	return max, nil
}

// TestHastenAllEndsWhileRetriesFailAgain: a retry-now moves at most what
// waited when it began and a page more, however many entries fail again
// and wait for a retry meanwhile (P9: the call is bounded).
func TestHastenAllEndsWhileRetriesFailAgain(t *testing.T) {
	q := &refailing{Queue: memlog.New().Queue("crm")}
	const waiting = 2500
	n, err := admin.HastenAll(context.Background(), q, waiting, nil)
	if err != nil || n != waiting+1000 || q.pages != 4 {
		t.Errorf("HastenAll(%d waiting) = %d, %v in %d pages; want %d, nil in 4 pages (what waited, and a page more)", waiting, n, err, q.pages, waiting+1000)
	}
}
