package badgerlog

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// retryAll appends n events to sink a with payload, fetches them and
// settles each as a retry an hour away.
func retryAll(t *testing.T, l *DB, n int, payload []byte) pipeline.Queue {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		es := []pipeline.Entry{{Event: pipeline.Event{ID: fmt.Sprint("e", i), Source: "s", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "a", Route: "r", Payload: payload}}}}
		if _, err := l.Append(ctx, es); err != nil {
			t.Fatal(err)
		}
	}
	q := l.Queue("a")
	for range n {
		ds, err := q.Fetch(ctx, 1)
		if err != nil || len(ds) != 1 {
			t.Fatalf("Fetch = %d, %v", len(ds), err)
		}
		if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Retry, Err: "503", RetryAt: time.Now().Add(time.Hour)}}); err != nil {
			t.Fatal(err)
		}
	}
	return q
}

// hastenPages calls HastenRetries(max) on one walk until it is done and
// returns what each call moved.
func hastenPages(t *testing.T, q pipeline.Queue, max int) []int {
	t.Helper()
	var pages []int
	var w pipeline.RetryWalk
	for range 100 {
		n, err := q.(pipeline.RetryHastener).HastenRetries(context.Background(), &w, max)
		if err != nil {
			t.Fatalf("HastenRetries after pages %v: %v", pages, err)
		}
		pages = append(pages, n)
		if w.Done {
			return pages
		}
	}
	t.Fatalf("HastenRetries still moving after 100 pages: %v", pages)
	return nil
}

// TestHastenPagesAreBounded: a page of HastenRetries ends at hastenBytes
// of targets, and, with transform outputs of 900 KiB, before Badger's own
// bound on a transaction (2.4 MiB with the default memtable, payloads
// under the value threshold counted whole), which Abandon and RetryDead
// once failed on every call; pages go on until one moves nothing, and
// every entry is due with its payload.
func TestHastenPagesAreBounded(t *testing.T) {
	ctx := context.Background()
	t.Run("hastenBytes", func(t *testing.T) {
		defer func(b int) { hastenBytes = b }(hastenBytes)
		hastenBytes = 250
		l, err := Open(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		payload := []byte(`"` + strings.Repeat("p", 98) + `"`) // 100 bytes, 110 or so encoded
		q := retryAll(t, l, 7, payload)
		if got, want := fmt.Sprint(hastenPages(t, q, 1000)), "[3 3 1]"; got != want {
			t.Errorf("HastenRetries pages moved %s, want %s", got, want)
		}
		ds, err := q.Fetch(ctx, 10)
		if err != nil || len(ds) != 7 {
			t.Fatalf("Fetch after the pages = %d, %v; want all 7 due", len(ds), err)
		}
	})
	t.Run("Badger's transaction", func(t *testing.T) {
		l, err := Open(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		payload := []byte(`"` + strings.Repeat("p", 900<<10) + `"`)
		const n = 6
		q := retryAll(t, l, n, payload)
		pages := hastenPages(t, q, 1000)
		moved := 0
		for _, p := range pages {
			moved += p
		}
		if moved != n || len(pages) < 3 {
			t.Errorf("HastenRetries pages moved %v, want all %d in pages of what fits in a transaction", pages, n)
		}
		ds, err := q.Fetch(ctx, n)
		if err != nil || len(ds) != n {
			t.Fatalf("Fetch after the pages = %d, %v; want all %d due", len(ds), err, n)
		}
		for _, d := range ds {
			if string(d.Payload) != string(payload) || d.Attempt != 2 || d.LastError != "503" {
				t.Errorf("entry %d after HastenRetries: payload kept %v, attempt %d, last error %q", d.Seq, string(d.Payload) == string(payload), d.Attempt, d.LastError)
			}
		}
	})
}

// TestNextRetryPassesDeletedKeysWithinItsBound: after a retry-now, the old
// keys of the retries it made due are deletion marks an hour ahead until
// compaction (two versions each: the write and the deletion); NextRetry
// passes them to the retry due after them while their versions are fewer
// than nextRetryWalk, and beyond that fails (not known) rather than walk
// them all.
func TestNextRetryPassesDeletedKeysWithinItsBound(t *testing.T) {
	for _, tt := range []struct {
		name    string
		retries int
		known   bool
	}{
		{"fewer marks than the bound", nextRetryWalk/2 - 10, true},
		{"more marks than the bound", nextRetryWalk/2 + 10, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Open(t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			q := retryAll(t, l, tt.retries, nil)
			hastenPages(t, q, 1000)
			ctx := context.Background()
			ds, err := q.Fetch(ctx, 1) // one of them fails again, two hours ahead
			if err != nil || len(ds) != 1 {
				t.Fatalf("Fetch = %d, %v", len(ds), err)
			}
			later := time.Now().Add(2 * time.Hour)
			if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Retry, Err: "503", RetryAt: later}}); err != nil {
				t.Fatal(err)
			}
			at, err := q.(pipeline.RetryClock).NextRetry(ctx, time.Now())
			switch {
			case tt.known && (err != nil || !at.Equal(time.Unix(0, later.UnixNano()))):
				t.Errorf("NextRetry past %d deletion marks = %v, %v; want %v", tt.retries, at, err, later)
			case !tt.known && (err == nil || !strings.Contains(err.Error(), "deleted keys")):
				t.Errorf("NextRetry past %d deletion marks = %v, %v; want an error: more than %d versions to pass", tt.retries, at, err, nextRetryWalk)
			}
		})
	}
}

// TestHastenScanIsBounded: a page goes through hastenScan retry keys at
// most, moved or passed by, and the walk goes on from there: here every
// entry failed after the walk began (its retry key's version is above
// the walk's read timestamp), so each is passed by, and each page moves
// none.
func TestHastenScanIsBounded(t *testing.T) {
	defer func(n int) { hastenScan = n }(hastenScan)
	hastenScan = 2
	l, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	began := time.Now()
	txn := l.db.NewTransaction(false)
	rw := &retryWalk{began: true, readTs: txn.ReadTs()}
	txn.Discard()
	q := retryAll(t, l, 5, nil).(pipeline.RetryHastener)
	w := pipeline.RetryWalk{Began: began, State: rw}
	var pages []int
	for !w.Done && len(pages) < 10 {
		n, err := q.HastenRetries(context.Background(), &w, 1000)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, n)
	}
	if got, want := fmt.Sprint(pages), "[0 0 0]"; got != want {
		t.Errorf("pages of a walk that passes every entry by = %s, want %s (2, 2, then 1 key gone through)", got, want)
	}
	if n, err := q.HastenRetries(context.Background(), &pipeline.RetryWalk{}, 1000); err != nil || n != 2 {
		t.Errorf("a new walk, 2 keys a page = %d, %v; want 2", n, err)
	}
}
