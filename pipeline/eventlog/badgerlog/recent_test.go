package badgerlog_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
)

// TestFetchedEventIsTheStoredOne checks that an event a queue hands out
// right after its append (from the recent-events cache) is the event the
// log stores, field by field, as one read back after a restart is: with
// and without headers, dedup key and body, with trace context and a dedup
// key set on the event rather than the entry, and after a duplicate.
func TestFetchedEventIsTheStoredOne(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := open(t, dir)
	at := time.Date(2026, 12, 5, 7, 0, 0, 123456789, time.FixedZone("IST", 19800))
	entries := []pipeline.Entry{
		{Event: pipeline.Event{ID: "with-headers", Source: "s", ReceivedAt: at, Body: []byte(`{"a":1}`), Auth: "bearer",
			Headers: map[string]string{"user-agent": "x", "x-request-id": "r"}}, DedupKey: "k1", DedupWindow: time.Hour},
		{Event: pipeline.Event{ID: "no-headers", Source: "s", ReceivedAt: at, Body: []byte(`[]`), Headers: map[string]string{}}},
		{Event: pipeline.Event{ID: "duplicate", Source: "s", ReceivedAt: at, Body: []byte(`{}`)}, DedupKey: "k1", DedupWindow: time.Hour},
		{Event: pipeline.Event{ID: "empty-body", Source: "s", ReceivedAt: at}},
		{Event: pipeline.Event{ID: "traced", Source: "s", ReceivedAt: at, Body: []byte(`{}`), DedupKey: "writer-set",
			TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", TraceState: "k=v"}},
		{Event: pipeline.Event{ID: "unrouted", Source: "s", ReceivedAt: at, Body: []byte(`{}`)}},
		{Event: pipeline.Event{ID: "dead-only", Source: "s", ReceivedAt: at, Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "a", Route: "r", Err: "transform failed"}}},
	}
	for i := range entries[:5] {
		entries[i].Targets = []pipeline.Target{{Sink: "a", Route: "r"}, {Sink: "b", Route: "r"}}
	}
	res, err := db.Append(ctx, entries)
	if err != nil {
		t.Fatalf("Append = %v", err)
	}
	if !res[2].Duplicate {
		t.Fatalf("Append: the third entry is not a duplicate (%+v): the test's premise is wrong", res[2])
	}
	fetch := func(db *badgerlog.DB, sink string) map[string]pipeline.Event {
		t.Helper()
		ds, err := db.Queue(sink).Fetch(ctx, 10)
		if err != nil {
			t.Fatalf("Fetch(%s) = %v", sink, err)
		}
		out := map[string]pipeline.Event{}
		for _, d := range ds {
			out[d.Event.ID] = d.Event
		}
		return out
	}
	if n := badgerlog.RecentEvents(db); n != 4 {
		t.Fatalf("the recent-events cache holds %d events after the append, want 4 (not the unrouted nor the dead-only one)", n)
	}
	fresh := map[string]map[string]pipeline.Event{"a": fetch(db, "a"), "b": fetch(db, "b")}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir) // a new process: nothing cached
	defer db.Close()
	if n := badgerlog.RecentEvents(db); n != 0 {
		t.Fatalf("the recent-events cache holds %d events after reopening, want 0", n)
	}
	for _, sink := range []string{"a", "b"} {
		stored := fetch(db, sink)
		if len(stored) != 4 || len(fresh[sink]) != 4 {
			t.Fatalf("sink %s: %d events fetched after the append, %d after reopening; want 4 each", sink, len(fresh[sink]), len(stored))
		}
		for id, want := range stored {
			t.Run(fmt.Sprintf("%s/%s", sink, id), func(t *testing.T) {
				if got := fresh[sink][id]; !reflect.DeepEqual(got, want) {
					t.Errorf("fetched after the append:\n%#v\nread from the log:\n%#v", got, want)
				}
			})
		}
	}
}
