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
	"github.com/pipelined/pipelined/pipeline/dispatch"
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
	waitWithin(t, time.Minute, "every outcome recorded", func() bool { return stats(t, q).Retrying == n })
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
	waitWithin(t, time.Minute, "the released events delivered", func() bool { return len(sink.calls()) >= 2 })
	waitWithin(t, time.Minute, "every outcome recorded", func() bool {
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

// TestReleasesTooBigForOneWrite acks the first events of 2,500 keys, each
// with a second event held behind it: the 2,500 releases, each moving an
// entry with its 2 KiB payload, do not fit one atomic write either, and
// must be recorded in parts for the second events to be delivered.
func TestReleasesTooBigForOneWrite(t *testing.T) {
	const keys = 2500
	l, err := badgerlog.Open(t.TempDir(), &badgerlog.Options{MemTableSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	appendPayloads(t, l, 2*keys, 2048, func(i int) string { return fmt.Sprint(i % keys) })
	q := l.Queue("s")
	sink := &fakeSink{}
	o := options(q, sink)
	o.BatchMax = 10000
	o.OrderKey = bodyKey
	run(t, o)
	waitWithin(t, time.Minute, "every event delivered", func() bool {
		n := 0
		for _, c := range sink.calls() {
			n += len(c)
		}
		return n == 2*keys
	})
	if calls := sink.calls(); len(calls[0]) != keys {
		t.Fatalf("first Deliver call: %d events, want the %d heads (the test needs their releases recorded together)", len(calls[0]), keys)
	}
	waitStats(t, q, pipeline.QueueStats{})
}

// TestDroppedDeadWhileItsHoldIsInFlight drops a key's dead head
// (OrderBlockOnDead) while the key's next event is held only in memory: it
// came in a batch whose plugin call is still running, so its Hold is not
// recorded yet. The release must not be lost behind it.
func TestDroppedDeadWhileItsHoldIsInFlight(t *testing.T) {
	l, err := badgerlog.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	q := l.Queue("s")
	unblock := make(chan struct{})
	sink := &fakeSink{answer: func(call int, b []sdk.Event) ([]sdk.Result, error) {
		out := make([]sdk.Result, len(b))
		for i := range out {
			out[i] = sdk.Delivered()
		}
		switch call {
		case 1: // the key's head goes dead
			out[0] = sdk.Permanent(errors.New("refused"))
		case 2: // another key's event, in flight while the head is dropped
			<-unblock
		}
		return out, nil
	}}
	o := options(q, sink)
	o.OrderKey, o.OrderBlockOnDead = bodyKey, true
	d := dispatch.New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	appendPayloads(t, l, 1, 1024, func(int) string { return "k" })
	waitFor(t, "the head dead", func() bool { return stats(t, q).Dead == 1 })
	appendPayloads(t, l, 2, 1024, func(i int) string { return []string{"k", "other"}[i] }) // ev-00000 of k, ev-00001 of other
	waitFor(t, "the second batch in flight", func() bool { return len(sink.calls()) == 2 })
	if st := d.Order(); st.HeldKeys != 1 || st.Held != 1 {
		t.Fatalf("Order() = %+v, want k's second event held (the test's premise)", st)
	}
	dls, err := q.DeadLetters(context.Background(), 0, 10)
	if err != nil || len(dls) != 1 {
		t.Fatalf("DeadLetters = %v, %v", dls, err)
	}
	if _, err := q.DropDead(context.Background(), []uint64{dls[0].Seq}); err != nil {
		t.Fatal(err)
	}
	if err := d.DroppedDead(context.Background(), []uint64{dls[0].Seq}); err != nil {
		t.Fatal(err)
	}
	close(unblock)
	waitFor(t, "k's second event delivered", func() bool { return len(sink.calls()) == 3 })
	if c := sink.calls()[2]; len(c) != 1 || c[0].Route != "r" {
		t.Fatalf("third Deliver call = %v, want k's second event", c)
	}
	waitStats(t, q, pipeline.QueueStats{})
}

// appendPayloads appends n events of key key(i), each routed to sink "s"
// with a payload of size bytes, in appends of 500.
func appendPayloads(t *testing.T, l pipeline.Log, n, size int, key func(i int) string) {
	t.Helper()
	payload := bytes.Repeat([]byte{'p'}, size)
	var entries []pipeline.Entry
	for i := range n {
		body, _ := json.Marshal(keyed{K: key(i), N: i})
		entries = append(entries, pipeline.Entry{
			Event:   pipeline.Event{ID: fmt.Sprintf("ev-%05d", i), Source: "src", ReceivedAt: time.Now(), Body: body},
			Targets: []pipeline.Target{{Sink: "s", Route: "r", Payload: payload}},
		})
		if len(entries) == 500 || i == n-1 {
			if _, err := l.Append(context.Background(), entries); err != nil {
				t.Fatalf("Append: %v", err)
			}
			entries = nil
		}
	}
}

// dropDuringLoad is a sink's queue whose Waiting, once it has read the
// entries for the dispatcher's rebuild, runs after: a dead letter dropped
// in the window before the rebuild installs what it read.
type dropDuringLoad struct {
	holderQueue
	after func()
}

type holderQueue interface {
	pipeline.Queue
	pipeline.Holder
}

func (q *dropDuringLoad) Waiting(ctx context.Context, dead bool, visit func(pipeline.Waiting) error) error {
	err := q.holderQueue.Waiting(ctx, dead, visit)
	if q.after != nil {
		q.after()
		q.after = nil
	}
	return err
}

// TestDroppedDeadWhileTheOrderIsRebuilt drops a key's dead head
// (OrderBlockOnDead) while a starting dispatcher rebuilds its per-key
// state, after it read the queue: the key's next event must be released.
func TestDroppedDeadWhileTheOrderIsRebuilt(t *testing.T) {
	l, err := badgerlog.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	q := l.Queue("s").(holderQueue)
	first := &fakeSink{answer: func(_ int, b []sdk.Event) ([]sdk.Result, error) {
		return []sdk.Result{sdk.Permanent(errors.New("refused"))}, nil
	}}
	o := options(q, first)
	o.OrderKey, o.OrderBlockOnDead = bodyKey, true
	stop := run(t, o)
	appendPayloads(t, l, 1, 16, func(int) string { return "k" })
	waitFor(t, "the head dead", func() bool { return stats(t, q).Dead == 1 })
	appendPayloads(t, l, 1, 16, func(int) string { return "k" }) // held behind it (a second ev-00000 of k)
	waitFor(t, "the next event held", func() bool { return stats(t, q).Ready == 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	dls, err := q.DeadLetters(context.Background(), 0, 10)
	if err != nil || len(dls) != 1 {
		t.Fatalf("DeadLetters = %v, %v", dls, err)
	}

	sink := &fakeSink{}
	wq := &dropDuringLoad{holderQueue: q}
	o = options(wq, sink)
	o.OrderKey, o.OrderBlockOnDead = bodyKey, true
	d := dispatch.New(o)
	wq.after = func() { // as the admin API's dlq drop does
		if _, err := q.DropDead(context.Background(), []uint64{dls[0].Seq}); err != nil {
			t.Error(err)
		}
		if err := d.DroppedDead(context.Background(), []uint64{dls[0].Seq}); err != nil {
			t.Error(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the held event delivered", func() bool { return len(sink.calls()) == 1 })
	waitStats(t, q, pipeline.QueueStats{})
}
