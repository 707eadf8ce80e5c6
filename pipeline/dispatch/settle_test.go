package dispatch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
	"github.com/pipelined/pipelined/sdk"
)

// TestSettleTooBigForOneWrite gives a real Badger log at its smallest
// memtable a batch of batch_max events whose outcomes do not fit one
// atomic write: retries, each keeping a 1 KiB transform payload. The
// dispatcher must record them in parts, not retry the whole for ever.
func TestSettleTooBigForOneWrite(t *testing.T) {
	const n = 7500
	l, err := badgerlog.Open(t.TempDir(), &badgerlog.Options{MemTableSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	payload := bytes.Repeat([]byte{'p'}, 1024)
	for first := 0; first < n; first += 500 {
		var entries []pipeline.Entry
		for i := first; i < first+500; i++ {
			id := fmt.Sprintf("ev-%05d", i)
			entries = append(entries, pipeline.Entry{
				Event:   pipeline.Event{ID: id, Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)},
				Targets: []pipeline.Target{{Sink: "s", Route: "r", Payload: payload}},
			})
		}
		if _, err := l.Append(context.Background(), entries); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	q := l.Queue("s")
	sink := &fakeSink{answer: func(call int, b []sdk.Event) ([]sdk.Result, error) {
		out := make([]sdk.Result, len(b))
		for i := range out {
			out[i] = sdk.Retry(time.Hour, errors.New("sink busy"))
		}
		return out, nil
	}}
	o := options(q, sink)
	o.BatchMax = 10000 // the most a sink's delivery.batch_max may be
	run(t, o)
	waitFor(t, "every outcome recorded", func() bool { return stats(t, q).Retrying == n })
	if calls := sink.calls(); len(calls) != 1 || len(calls[0]) != n {
		t.Fatalf("Deliver calls: %d, want one of all %d events (the test needs them settled together)", len(calls), n)
	}
}

// TestSettleOrderedTooBigForOneWrite is TestSettleTooBigForOneWrite with
// delivery.order_key: 7,500 keys whose first events fail (keeping their
// payloads) but for the first 100, whose next events wait held behind
// them. The outcomes, the holds and the releases must all be recorded (in
// parts), and the released events delivered next.
func TestSettleOrderedTooBigForOneWrite(t *testing.T) {
	const n, next = 7500, 100
	l, err := badgerlog.Open(t.TempDir(), &badgerlog.Options{MemTableSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	payload := bytes.Repeat([]byte{'p'}, 1024)
	var entries []pipeline.Entry
	add := func(i int, key int) {
		body, _ := json.Marshal(keyed{K: fmt.Sprint(key), N: i})
		entries = append(entries, pipeline.Entry{
			Event:   pipeline.Event{ID: fmt.Sprintf("ev-%05d", i), Source: "src", ReceivedAt: time.Now(), Body: body},
			Targets: []pipeline.Target{{Sink: "s", Route: "r", Payload: payload}},
		})
		if len(entries) == 500 || i == n+next-1 {
			if _, err := l.Append(context.Background(), entries); err != nil {
				t.Fatalf("Append: %v", err)
			}
			entries = nil
		}
	}
	for i := range n + next {
		add(i, i%n) // events n.. are the second events of keys 0..next-1
	}
	q := l.Queue("s")
	sink := &fakeSink{answer: func(call int, b []sdk.Event) ([]sdk.Result, error) {
		out := make([]sdk.Result, len(b))
		for i, e := range b {
			out[i] = sdk.Retry(time.Hour, errors.New("sink busy"))
			if e.ID < fmt.Sprintf("ev-%05d", next) || call > 1 {
				out[i] = sdk.Delivered()
			}
		}
		return out, nil
	}}
	o := options(q, sink)
	o.BatchMax = 10000 // the most a sink's delivery.batch_max may be
	o.OrderKey = bodyKey
	run(t, o)
	waitFor(t, "the released events delivered", func() bool { return len(sink.calls()) >= 2 })
	waitFor(t, "every outcome recorded", func() bool {
		st := stats(t, q)
		return st.Retrying == n-next && st.Ready == 0
	})
	calls := sink.calls()
	if len(calls[0]) != n {
		t.Fatalf("first Deliver call: %d events, want all %d heads (the test needs their outcomes settled together)", len(calls[0]), n)
	}
	var second []string
	for _, e := range calls[1] {
		second = append(second, e.ID)
	}
	if len(second) != next || second[0] != fmt.Sprintf("ev-%05d", n) || second[next-1] != fmt.Sprintf("ev-%05d", n+next-1) {
		t.Fatalf("second Deliver call: %d events %v…, want the %d released ones from ev-%05d", len(second), second[:min(3, len(second))], next, n)
	}
}
