package badgerlog_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
)

// TestAppendsReusingTheRecordBufferStayIntact appends batches of events of
// varied sizes one after another (each Append builds its write-ahead log
// record in the buffer of the one before), and reads every event back,
// before and after a restart: none may hold another's bytes. Each record
// is overwritten as soon as its commit returns, so anything that still
// read it then (the committer, Badger) would show here. Badger's values
// taken from the record are read back too: each queue entry's payload
// (fetched after the restart) and each dedup key's event (appended again).
func TestAppendsReusingTheRecordBufferStayIntact(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	badgerlog.PoisonRecords(t) // each record overwritten as soon as its commit returns
	db := open(t, dir)
	rng := rand.New(rand.NewPCG(5, 19))
	want := map[string][]byte{}
	for b := range 60 {
		var es []pipeline.Entry
		for i := range 1 + rng.IntN(20) {
			id := fmt.Sprintf("b%d-e%d", b, i)
			body := bytes.Repeat([]byte{byte('a' + rng.IntN(26))}, 1+rng.IntN(8<<10))
			want[id] = body
			es = append(es, pipeline.Entry{
				Event:    pipeline.Event{ID: id, Source: "s", ReceivedAt: time.Now(), Body: body, Headers: map[string]string{"x-id": id}},
				Targets:  []pipeline.Target{{Sink: "a", Route: "r", Payload: []byte("payload of " + id)}},
				DedupKey: id, DedupWindow: time.Hour,
			})
		}
		if _, err := db.Append(ctx, es); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string) {
		t.Helper()
		for id, body := range want {
			ev, err := db.Event(ctx, id)
			if err != nil {
				t.Fatalf("%s: Event(%s) = %v", when, id, err)
			}
			if !bytes.Equal(ev.Body, body) || ev.Headers["x-id"] != id || ev.ID != id {
				t.Fatalf("%s: event %s read back: id %q, header %q, body of %d bytes starting %q; want its own (%d bytes of %q)",
					when, id, ev.ID, ev.Headers["x-id"], len(ev.Body), ev.Body[:min(len(ev.Body), 4)], len(body), body[:1])
			}
		}
	}
	check("before a restart")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir)
	defer db.Close()
	check("after a restart")
	ds, err := db.Queue("a").Fetch(ctx, len(want)+1)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != len(want) {
		t.Fatalf("Fetch = %d deliveries, want %d", len(ds), len(want))
	}
	for _, d := range ds {
		if string(d.Payload) != "payload of "+d.Event.ID || d.Route != "r" || !bytes.Equal(d.Event.Body, want[d.Event.ID]) {
			t.Fatalf("delivery of %s: route %q, payload %q, body of %d bytes; want its own", d.Event.ID, d.Route, d.Payload, len(d.Event.Body))
		}
	}
	var again []pipeline.Entry
	for id := range want {
		again = append(again, pipeline.Entry{
			Event:    pipeline.Event{ID: "again-" + id, Source: "s", ReceivedAt: time.Now(), Body: []byte("x")},
			Targets:  []pipeline.Target{{Sink: "a", Route: "r"}},
			DedupKey: id, DedupWindow: time.Hour,
		})
	}
	res, err := db.Append(ctx, again)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if id := again[i].DedupKey; !r.Duplicate || r.ID != id {
			t.Fatalf("appending dedup key %s again = %+v, want a duplicate of %s", id, r, id)
		}
	}
}
