package dispatch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/sdk"
)

// keyed is the body of a test event: its key and its number in the log.
type keyed struct {
	K string `json:"k"`
	N int    `json:"n"`
}

// bodyKey is an order key over keyed bodies, as the daemon's compiled
// delivery.order_key would be; a body without "k" fails.
func bodyKey(ev pipeline.Event) (string, error) {
	var b keyed
	if err := json.Unmarshal(ev.Body, &b); err != nil {
		return "", err
	}
	if b.K == "" {
		return "", errors.New("no k")
	}
	return b.K, nil
}

// appendKeyed appends n events, event i of key fmt.Sprint(key(i)), routed to sink "s".
func appendKeyed(t testing.TB, l pipeline.Log, from, n int, key func(i int) string) {
	t.Helper()
	var entries []pipeline.Entry
	for i := from; i < from+n; i++ {
		body, _ := json.Marshal(keyed{K: key(i), N: i})
		entries = append(entries, pipeline.Entry{
			Event:   pipeline.Event{ID: fmt.Sprintf("ev-%05d", i), Source: "src", ReceivedAt: time.Now(), Body: body},
			Targets: []pipeline.Target{{Sink: "s", Route: "r"}},
		})
		if len(entries) == 500 {
			if _, err := l.Append(context.Background(), entries); err != nil {
				t.Fatalf("Append = %v", err)
			}
			entries = nil
		}
	}
	if len(entries) > 0 {
		if _, err := l.Append(context.Background(), entries); err != nil {
			t.Fatalf("Append = %v", err)
		}
	}
}

// orderSink fails each event with probability fail (a retry) and checks,
// at every call, the order promise: an event of a key is only ever handed
// over once every earlier event of its key was delivered, and a batch holds
// at most one event per key.
type orderSink struct {
	fail   float64
	skip   float64      // the probability of answering an event not attempted (sdk.NotAttempted)
	never  string       // a key that always fails
	stride int          // event n's predecessor in its key is n-stride; 0: not checked
	kill   map[int]bool // events that fail permanently, once

	mu        sync.Mutex
	done      map[string]int // by key: the n of the last event delivered
	delivered map[int]bool
	errs      []string
	calls     int
	keysOf    map[string][]int // by key: every n delivered, in order
	firstAt   map[int]time.Time
}

func newOrderSink(fail float64) *orderSink {
	return &orderSink{fail: fail, done: map[string]int{}, delivered: map[int]bool{}, keysOf: map[string][]int{}, firstAt: map[int]time.Time{}}
}

func (s *orderSink) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	out := make([]sdk.Result, len(batch))
	seen := map[string]bool{}
	for i, e := range batch {
		var b keyed
		if err := json.Unmarshal(e.Body, &b); err != nil {
			s.errs = append(s.errs, err.Error())
			continue
		}
		if seen[b.K] {
			s.errs = append(s.errs, fmt.Sprintf("call %d: two events of key %s in one batch", s.calls, b.K))
		}
		seen[b.K] = true
		if _, ok := s.firstAt[b.N]; !ok {
			s.firstAt[b.N] = time.Now()
		}
		if last, ok := s.done[b.K]; ok && last >= b.N && !s.delivered[b.N] {
			s.errs = append(s.errs, fmt.Sprintf("event %d of key %s handed over after a later event %d of its key was delivered", b.N, b.K, last))
		}
		if s.stride > 0 && b.N >= s.stride && !s.delivered[b.N-s.stride] {
			s.errs = append(s.errs, fmt.Sprintf("event %d of key %s handed over before event %d of its key was delivered", b.N, b.K, b.N-s.stride))
		}
		if s.kill[b.N] {
			delete(s.kill, b.N)
			out[i] = sdk.Permanent(errors.New("the test sink refuses this event"))
			continue
		}
		if s.skip > 0 && rand.Float64() < s.skip {
			out[i] = sdk.NotAttempted(0, errors.New("the test sink did not send it"))
			continue
		}
		if b.K == s.never || rand.Float64() < s.fail {
			out[i] = sdk.Retry(0, errors.New("the test sink fails at random"))
			continue
		}
		out[i] = sdk.Delivered()
		if !s.delivered[b.N] {
			s.delivered[b.N] = true
			s.keysOf[b.K] = append(s.keysOf[b.K], b.N)
		}
		s.done[b.K] = max(s.done[b.K], b.N)
	}
	return out, nil
}

func (s *orderSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.delivered)
}

// check fails the test with the violations seen, and checks that each key's
// events were delivered in log order, all n of them.
func (s *orderSink) check(t *testing.T, n int) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range s.errs {
		if i == 10 {
			t.Errorf("... and %d more", len(s.errs)-10)
			break
		}
		t.Error(e)
	}
	if len(s.delivered) != n {
		t.Errorf("%d events delivered, want %d", len(s.delivered), n)
	}
	for k, ns := range s.keysOf {
		for i := 1; i < len(ns); i++ {
			if ns[i] < ns[i-1] {
				t.Errorf("key %s: event %d delivered after event %d", k, ns[i], ns[i-1])
				break
			}
		}
	}
}

func orderLogs(t *testing.T) map[string]func(t *testing.T) pipeline.Log {
	return map[string]func(t *testing.T) pipeline.Log{
		"memlog": func(t *testing.T) pipeline.Log { return memlog.New() },
		"badgerlog": func(t *testing.T) pipeline.Log {
			db, err := badgerlog.Open(t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		},
	}
}

// TestOrderKeyNotAttempted: events a sink does not attempt keep their
// key's order as retries do (a later event of the key waits for them), and
// cost no attempt: with max_attempts 1, a sink that answers 30% of events
// not attempted gets every event, in order, and nothing is dead.
func TestOrderKeyNotAttempted(t *testing.T) {
	deliverInOrder(t, 1000, 1, func() *orderSink {
		sink := newOrderSink(0)
		sink.skip = 0.3
		return sink
	})
}

// deliverInOrder appends n events over 50 keys to each of orderLogs and
// delivers them with order_key to the sink newSink makes, with
// maxAttempts: every key's events arrive in log order, and nothing is
// left held or retrying.
func deliverInOrder(t *testing.T, n, maxAttempts int, newSink func() *orderSink) {
	t.Helper()
	for name, open := range orderLogs(t) {
		t.Run(name, func(t *testing.T) {
			l := open(t)
			appendKeyed(t, l, 0, n, func(i int) string { return fmt.Sprint(i % 50) })
			sink := newSink()
			sink.stride = 50
			o := options(l.Queue("s"), sink)
			o.MaxAttempts, o.BackoffMin, o.BackoffMax, o.BatchWait = maxAttempts, time.Millisecond, 5*time.Millisecond, time.Millisecond
			o.OrderKey = bodyKey
			run(t, o)
			deadline := time.Now().Add(60 * time.Second)
			for sink.count() < n && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			sink.check(t, n)
			waitStats(t, l.Queue("s"), pipeline.QueueStats{})
		})
	}
}

// TestOrderKey delivers events over 50 keys to a sink that fails 20% of
// events at random: every key's events arrive in log order, and nothing is
// left held or retrying.
func TestOrderKey(t *testing.T) {
	deliverInOrder(t, 3000, 0, func() *orderSink { return newOrderSink(0.2) })
}

// TestOrderKeyHoldsOnlyItsKey checks that a key whose event keeps failing
// holds back its own later events only, that the dispatcher reports them,
// and that they follow in order once it is delivered.
func TestOrderKeyHoldsOnlyItsKey(t *testing.T) {
	for name, open := range orderLogs(t) {
		t.Run(name, func(t *testing.T) {
			l := open(t)
			const n = 200
			appendKeyed(t, l, 0, n, func(i int) string { return fmt.Sprint(i % 10) }) // key 3: 20 events
			sink := newOrderSink(0)
			sink.never, sink.stride = "3", 10
			o := options(l.Queue("s"), sink)
			o.MaxAttempts, o.BackoffMin, o.BackoffMax = 0, time.Millisecond, 5*time.Millisecond
			o.OrderKey = bodyKey
			d := dispatch.New(o)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- d.Run(ctx) }()
			defer func() { cancel(); <-done }()
			waitFor(t, "every other key delivered", func() bool { return sink.count() == n-n/10 })
			st := d.Order()
			if !st.Enabled || st.HeldKeys != 1 || st.Held != n/10-1 || st.OldestHeld.IsZero() {
				t.Errorf("Order() = %+v, want 1 key holding %d events", st, n/10-1)
			}
			// The last batch's acks are recorded after the sink answered.
			waitFor(t, "only key 3's events left in the queue", func() bool {
				qs := stats(t, l.Queue("s"))
				return qs.Ready+qs.Retrying == n/10
			})
			sink.mu.Lock()
			sink.never = ""
			sink.mu.Unlock()
			waitFor(t, "key 3 delivered too", func() bool { return sink.count() == n })
			sink.check(t, n)
			if st := d.Order(); st.Held != 0 || st.HeldKeys != 0 {
				t.Errorf("Order() = %+v after all delivered, want nothing held", st)
			}
		})
	}
}

// TestOrderKeyAfterRestart stops a dispatcher in the middle of a run with
// keys retrying and held, closes and reopens the log (the in-memory leases
// and the dispatcher's state are gone), and checks that a new dispatcher
// keeps every key's order.
func TestOrderKeyAfterRestart(t *testing.T) {
	dir := t.TempDir()
	db, err := badgerlog.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	appendKeyed(t, db, 0, n, func(i int) string { return fmt.Sprint(i % 50) })
	sink := newOrderSink(0.3)
	sink.stride = 50
	o := options(db.Queue("s"), sink)
	o.MaxAttempts, o.BackoffMin, o.BackoffMax, o.BatchWait = 0, 5*time.Millisecond, 50*time.Millisecond, time.Millisecond
	o.OrderKey = bodyKey
	d := dispatch.New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "a third delivered", func() bool { return sink.count() >= n/3 })
	held := d.Order().Held
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if held == 0 {
		t.Fatalf("no event was held when the dispatcher stopped: the test's premise failed")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = badgerlog.Open(dir, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	o.Queue = db.Queue("s")
	run(t, o)
	deadline := time.Now().Add(60 * time.Second)
	for sink.count() < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	sink.check(t, n)
	waitStats(t, db.Queue("s"), pipeline.QueueStats{})
}

// TestOrderKeyRemoved checks that a dispatcher without an order key
// delivers the events an earlier one held (order_key removed by a reload).
func TestOrderKeyRemoved(t *testing.T) {
	for name, open := range orderLogs(t) {
		t.Run(name, func(t *testing.T) {
			l := open(t)
			const n = 100
			appendKeyed(t, l, 0, n, func(i int) string { return fmt.Sprint(i % 10) })
			sink := newOrderSink(0)
			sink.never = "3"
			o := options(l.Queue("s"), sink)
			o.MaxAttempts, o.BackoffMin, o.BackoffMax = 0, time.Millisecond, 5*time.Millisecond
			o.OrderKey = bodyKey
			stop := run(t, o)
			waitFor(t, "every other key delivered", func() bool { return sink.count() == n-n/10 })
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			sink.mu.Lock()
			sink.never = ""
			sink.mu.Unlock()
			o.OrderKey = nil
			run(t, o)
			waitFor(t, "the held events delivered", func() bool { return sink.count() == n })
			waitStats(t, l.Queue("s"), pipeline.QueueStats{})
		})
	}
}

// TestOrderOnDead checks what a dead letter does to its key: with
// "release" the key goes on; with "block" its later events wait (the
// others flow) until the dead letter is retried (then it is delivered
// first) or dropped.
func TestOrderOnDead(t *testing.T) {
	for _, tc := range []struct {
		name  string
		block bool
		then  string // "retry" or "drop" the dead letter
	}{
		{"release", false, ""},
		{"block/retry", true, "retry"},
		{"block/drop", true, "drop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := memlog.New()
			t.Cleanup(func() { l.Close() })
			const n = 40
			appendKeyed(t, l, 0, n, func(i int) string { return fmt.Sprint(i % 4) })
			sink := newOrderSink(0)
			sink.kill = map[int]bool{5: true} // key 1's second event
			o := options(l.Queue("s"), sink)
			o.MaxAttempts, o.BackoffMin, o.BackoffMax = 0, time.Millisecond, 5*time.Millisecond
			o.OrderKey, o.OrderBlockOnDead = bodyKey, tc.block
			d := dispatch.New(o)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- d.Run(ctx) }()
			defer func() { cancel(); <-done }()
			q := l.Queue("s")
			if !tc.block {
				waitFor(t, "all but the dead one delivered", func() bool { return sink.count() == n-1 })
				sink.check(t, n-1)
				return
			}
			// Key 1 holds its 8 later events; keys 0, 2 and 3 (30 events) and 1's first are delivered.
			waitFor(t, "the other keys delivered", func() bool { return sink.count() == n-n/4+1 })
			waitFor(t, "key 1 held", func() bool { st := d.Order(); return st.HeldKeys == 1 && st.Held == n/4-2 })
			if st := stats(t, q); st.Dead != 1 {
				t.Fatalf("Stats = %+v, want 1 dead", st)
			}
			dls, err := q.DeadLetters(context.Background(), 0, 10)
			if err != nil || len(dls) != 1 {
				t.Fatalf("DeadLetters = %v, %v", dls, err)
			}
			switch tc.then {
			case "retry":
				if _, err := q.RetryDead(context.Background(), []uint64{dls[0].Seq}); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "key 1 delivered", func() bool { return sink.count() == n })
				sink.check(t, n)
			case "drop":
				if _, err := q.DropDead(context.Background(), []uint64{dls[0].Seq}); err != nil {
					t.Fatal(err)
				}
				if err := d.DroppedDead(context.Background(), []uint64{dls[0].Seq}); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "key 1's later events delivered", func() bool { return sink.count() == n-1 })
				sink.check(t, n-1)
			}
			waitStats(t, q, pipeline.QueueStats{})
		})
	}
}

// TestOrderKeyHeadInFlightAtCrash plays a crash while a key's first event
// was in flight (fetched from the ready entries, not settled) and its later
// events were held: after reopening, the in-flight one is delivered first,
// though the held ones are due retries once released.
func TestOrderKeyHeadInFlightAtCrash(t *testing.T) {
	dir := t.TempDir()
	db, err := badgerlog.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	appendKeyed(t, db, 0, 3, func(int) string { return "a" })
	ds, err := db.Queue("s").Fetch(context.Background(), 3)
	if err != nil || len(ds) != 3 {
		t.Fatalf("Fetch = %d entries, %v; want 3", len(ds), err)
	}
	// The dispatcher delivers ds[0] and holds the two others; then the daemon dies.
	if err := db.Queue("s").Settle(context.Background(), []pipeline.Settlement{{Seq: ds[1].Seq, Outcome: pipeline.Hold}, {Seq: ds[2].Seq, Outcome: pipeline.Hold}}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = badgerlog.Open(dir, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	sink := newOrderSink(0)
	sink.stride = 1
	o := options(db.Queue("s"), sink)
	o.OrderKey = bodyKey
	run(t, o)
	waitFor(t, "all 3 delivered", func() bool { return sink.count() == 3 })
	sink.check(t, 3)
}

// TestOrderKeyReplay checks the promise for a replayed event (Requeue):
// it is delivered after its key's event that is retrying and before the
// key's later events held behind that one.
func TestOrderKeyReplay(t *testing.T) {
	for name, open := range orderLogs(t) {
		t.Run(name, func(t *testing.T) {
			l := open(t)
			appendKeyed(t, l, 0, 4, func(int) string { return "a" })
			var mu sync.Mutex
			var got []int
			failing := true
			sink := &fakeSink{answer: func(_ int, batch []sdk.Event) ([]sdk.Result, error) {
				mu.Lock()
				defer mu.Unlock()
				out := make([]sdk.Result, len(batch))
				for i, e := range batch {
					var b keyed
					json.Unmarshal(e.Body, &b)
					if b.N == 1 && failing {
						out[i] = sdk.Retry(0, errors.New("not yet"))
						continue
					}
					out[i] = sdk.Delivered()
					got = append(got, b.N)
				}
				return out, nil
			}}
			o := options(l.Queue("s"), sink)
			o.MaxAttempts, o.BackoffMin, o.BackoffMax = 0, 5*time.Millisecond, 20*time.Millisecond
			o.OrderKey = bodyKey
			d := dispatch.New(o)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- d.Run(ctx) }()
			defer func() { cancel(); <-done }()
			waitFor(t, "event 0 delivered, 1 retrying, 2 and 3 held", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(got) == 1 && d.Order().Held == 2
			})
			evs, _, err := l.Events(context.Background(), pipeline.EventFilter{ID: "ev-00000"})
			if err != nil || len(evs) != 1 {
				t.Fatalf("Events(ev-00000) = %v, %v", evs, err)
			}
			if n, err := l.Queue("s").Requeue(context.Background(), []pipeline.Requeue{{Seq: evs[0].Seq, Route: "r"}}); err != nil || n != 1 {
				t.Fatalf("Requeue(event 0) = %d, %v; want 1", n, err)
			}
			waitFor(t, "the replay held", func() bool { return d.Order().Held == 3 })
			mu.Lock()
			failing = false
			mu.Unlock()
			waitFor(t, "all delivered", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 5 })
			mu.Lock()
			defer mu.Unlock()
			if want := []int{0, 1, 0, 2, 3}; !slices.Equal(got, want) {
				t.Errorf("delivered %v, want %v (the replay of 0 after the retrying 1, before the held 2 and 3)", got, want)
			}
		})
	}
}

// TestOrderOnDeadBlockAfterRestart checks that a key blocked behind its
// dead letter stays blocked when the dispatcher starts again (its state is
// rebuilt from the queue), and goes on in order once the letter is retried.
func TestOrderOnDeadBlockAfterRestart(t *testing.T) {
	db, err := badgerlog.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	const n = 20
	appendKeyed(t, db, 0, n, func(i int) string { return fmt.Sprint(i % 2) })
	sink := newOrderSink(0)
	sink.kill = map[int]bool{3: true} // key 1's second event
	sink.stride = 2
	q := db.Queue("s")
	o := options(q, sink)
	o.MaxAttempts, o.BackoffMin, o.BackoffMax = 0, time.Millisecond, 5*time.Millisecond
	o.OrderKey, o.OrderBlockOnDead = bodyKey, true
	stop := run(t, o)
	waitFor(t, "key 0 and key 1's first event delivered", func() bool { return sink.count() == n/2+1 })
	waitFor(t, "the dead letter recorded", func() bool { return stats(t, q).Dead == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	d := dispatch.New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "key 1 held again after the restart", func() bool { st := d.Order(); return st.HeldKeys == 1 && st.Held == n/2-2 })
	if got := sink.count(); got != n/2+1 {
		t.Fatalf("%d delivered after the restart, want still %d", got, n/2+1)
	}
	dls, err := q.DeadLetters(context.Background(), 0, 10)
	if err != nil || len(dls) != 1 {
		t.Fatalf("DeadLetters = %v, %v", dls, err)
	}
	if _, err := q.RetryDead(context.Background(), []uint64{dls[0].Seq}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "key 1 delivered", func() bool { return sink.count() == n })
	sink.check(t, n)
}

// TestErrorNotUTF8IsStored: a sink's error text is whatever it says (a
// database's message quoting Latin-1 bytes, a plugin's stderr), but the log
// keeps strings as UTF-8 and refuses others. On a real log the event still
// reaches the dead-letter queue, its error as JSON shows it (U+FFFD for the
// bad byte), instead of the dispatcher retrying a refused settlement.
func TestErrorNotUTF8IsStored(t *testing.T) {
	for name, open := range orderLogs(t) {
		t.Run(name, func(t *testing.T) {
			l := open(t)
			e := pipeline.Entry{
				Event:   pipeline.Event{ID: "latin1", Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)},
				Targets: []pipeline.Target{{Sink: "s", Route: "r"}},
			}
			if _, err := l.Append(context.Background(), []pipeline.Entry{e}); err != nil {
				t.Fatal(err)
			}
			sink := &fakeSink{answer: each(sdk.Permanent(errors.New("duplicate key caf\xe9")))}
			run(t, options(l.Queue("s"), sink))
			waitStats(t, l.Queue("s"), pipeline.QueueStats{Dead: 1})
			dl, err := l.Queue("s").DeadLetters(context.Background(), 0, 10)
			if err != nil || len(dl) != 1 {
				t.Fatalf("DeadLetters = %v, %v; want the event", dl, err)
			}
			if want := "permanent failure: duplicate key caf\uFFFD"; dl[0].Err != want {
				t.Errorf("dead letter's error = %q, want %q", dl[0].Err, want)
			}
		})
	}
}

// fetchSpy is a Holder that counts how many times Fetch returned each
// event.
type fetchSpy struct {
	pipeline.Holder

	mu    sync.Mutex
	times map[string]int // by event id
}

func (q *fetchSpy) Fetch(ctx context.Context, max int) ([]pipeline.Delivery, error) {
	ds, err := q.Holder.Fetch(ctx, max)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.times == nil {
		q.times = map[string]int{}
	}
	for _, d := range ds {
		q.times[d.Event.ID]++
	}
	return ds, err
}

// fetched reports how many times Fetch returned the event id.
func (q *fetchSpy) fetched(id string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.times[id]
}

// TestOrderKeyBacklogDoesNotWaitBatchWait: a batch whose key has later
// events held behind it is sent at once, not after BatchWait: those events
// can only follow this batch, so a key's backlog drains at one call per
// event, not one BatchWait per event (with a BatchWait of a minute, the
// old code took a minute per event). The last batch, with nothing held
// behind it, waits BatchWait for company like any batch (the test's stop
// sends it), and so do batches of keys without a backlog, as without an
// order key.
func TestOrderKeyBacklogDoesNotWaitBatchWait(t *testing.T) {
	for name, open := range orderLogs(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("one key", func(t *testing.T) {
				l := open(t)
				const n = 20
				appendKeyed(t, l, 0, n, func(int) string { return "a" })
				sink := newOrderSink(0)
				sink.stride = 1
				q := &fetchSpy{Holder: l.Queue("s").(pipeline.Holder)}
				o := options(q, sink)
				o.OrderKey, o.BatchWait = bodyKey, time.Minute
				stop := run(t, o)
				waitFor(t, "every event but the last delivered, the last fetched again once released", func() bool {
					return sink.count() == n-1 && q.fetched(fmt.Sprintf("ev-%05d", n-1)) == 2
				})
				if err := stop(); err != nil {
					t.Errorf("Run() = %v, want nil", err)
				}
				sink.check(t, n)
			})
			t.Run("keys retrying after an outage", func(t *testing.T) {
				l := open(t)
				const keys, n = 3, 30
				appendKeyed(t, l, 0, n, func(i int) string { return fmt.Sprint(i % keys) })
				sink := newOrderSink(1) // down: every event fails
				sink.stride = keys
				q := &fetchSpy{Holder: l.Queue("s").(pipeline.Holder)}
				o := options(q, sink)
				o.MaxAttempts, o.BackoffMin, o.BackoffMax = 0, time.Millisecond, 5*time.Millisecond
				o.OrderKey, o.BatchWait = bodyKey, time.Minute
				d, done := start(t, o)
				waitFor(t, "each key's head retrying, the rest held", func() bool {
					sink.mu.Lock()
					defer sink.mu.Unlock()
					return sink.calls >= 2 && d.Order().Held == n-keys
				})
				sink.mu.Lock()
				sink.fail, sink.calls = 0, 0 // back up
				sink.mu.Unlock()
				waitFor(t, "every event but each key's last delivered, the last ones fetched again once released", func() bool {
					for i := n - keys; i < n; i++ {
						if q.fetched(fmt.Sprintf("ev-%05d", i)) != 2 {
							return false
						}
					}
					return sink.count() == n-keys
				})
				if err, _ := stopWithin(d, 5*time.Second); err != nil {
					t.Errorf("Stop() = %v, want nil", err)
				}
				wantRunReturns(t, done)
				sink.check(t, n)
				sink.mu.Lock()
				calls := sink.calls
				sink.mu.Unlock()
				if calls > n/keys+1 { // a retry may come due a little after the others
					t.Errorf("the backlog of %d keys × %d events took %d calls, want about %d (one event of each key per call)", keys, n/keys, calls, n/keys)
				}
			})
			t.Run("other keys still wait to fill a batch", func(t *testing.T) {
				l := open(t)
				q := &fetchSpy{Holder: l.Queue("s").(pipeline.Holder)}
				sink := newOrderSink(0)
				o := options(q, sink)
				// The batch is sent when full, so the long wait costs nothing.
				o.OrderKey, o.BatchMax, o.BatchWait = bodyKey, 3, time.Minute
				run(t, o)
				appendKeyed(t, l, 0, 1, func(int) string { return "a" })
				waitFor(t, "the first entry to be fetched", func() bool { return q.fetched("ev-00000") == 1 })
				appendKeyed(t, l, 1, 2, func(i int) string { return fmt.Sprint("k", i) })
				waitFor(t, "every event delivered", func() bool { return sink.count() == 3 })
				sink.check(t, 3)
				sink.mu.Lock()
				calls := sink.calls
				sink.mu.Unlock()
				if calls != 1 {
					t.Errorf("3 events of 3 keys took %d calls, want 1 batch", calls)
				}
			})
		})
	}
}

// downSink answers every event with a retry an hour away (a 503 with
// Retry-After: 3600) while down, and is its orderSink once up.
type downSink struct {
	*orderSink
	down  atomic.Bool
	calls atomic.Int64
}

func (s *downSink) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	s.calls.Add(1)
	if s.down.Load() {
		out := make([]sdk.Result, len(batch))
		for i := range out {
			out[i] = sdk.Retry(time.Hour, errors.New("503 Service Unavailable, Retry-After: 3600"))
		}
		return out, nil
	}
	return s.orderSink.Deliver(ctx, batch)
}

// TestOrderKeyRetryNow: with delivery.order_key, a sink down with a
// Retry-After of an hour parks each key's first event an hour ahead and
// holds the others behind it; the sink comes back and an operator makes
// the retries due now (pipelined sinks retry-now), also after a restart
// of the log and the dispatcher (badgerlog): every key's events arrive in
// log order, none of a key before an earlier one, and all of them at once.
func TestOrderKeyRetryNow(t *testing.T) {
	const n, keys = 200, 10
	for _, restart := range []bool{false, true} {
		for name, open := range orderLogs(t) {
			if restart && name != "badgerlog" {
				continue
			}
			t.Run(fmt.Sprintf("%s/restart=%v", name, restart), func(t *testing.T) {
				dir := t.TempDir()
				var l pipeline.Log
				if restart {
					db, err := badgerlog.Open(dir, nil)
					if err != nil {
						t.Fatal(err)
					}
					l = db
				} else {
					l = open(t)
				}
				appendKeyed(t, l, 0, n, func(i int) string { return fmt.Sprint(i % keys) })
				sink := &downSink{orderSink: newOrderSink(0)}
				sink.stride = keys
				sink.down.Store(true)
				o := options(l.Queue("s"), sink)
				o.MaxAttempts, o.BackoffMin, o.BackoffMax = 0, time.Millisecond, time.Hour
				o.OrderKey = bodyKey
				d := dispatch.New(o)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- d.Run(ctx) }()
				waitFor(t, "each key's head parked and the rest held", func() bool {
					st := d.Order()
					return st.HeldKeys == keys && st.Held == n-keys && stats(t, l.Queue("s")).Retrying == n
				})
				calls := sink.calls.Load()
				if restart {
					cancel()
					if err := <-done; err != nil {
						t.Fatalf("Run() = %v", err)
					}
					if err := l.Close(); err != nil {
						t.Fatal(err)
					}
					db, err := badgerlog.Open(dir, nil)
					if err != nil {
						t.Fatal(err)
					}
					l = db
					o.Queue = l.Queue("s")
					ctx, cancel = context.WithCancel(context.Background())
					d = dispatch.New(o)
					go func() { done <- d.Run(ctx) }()
					waitFor(t, "the new dispatcher to know the held keys", func() bool { return d.Order().HeldKeys == keys })
				}
				defer func() { cancel(); <-done; l.Close() }()
				if got := sink.calls.Load(); got != calls {
					t.Fatalf("the sink got %d calls more while everything was parked an hour ahead", got-calls)
				}
				sink.down.Store(false)
				hastened := 0
				for w := (pipeline.RetryWalk{}); !w.Done; {
					m, err := l.Queue("s").(pipeline.RetryHastener).HastenRetries(context.Background(), &w, 3)
					if err != nil {
						t.Fatal(err)
					}
					hastened += m
				}
				if hastened != keys {
					t.Errorf("HastenRetries moved %d, want the %d heads (held events are not retries)", hastened, keys)
				}
				waitFor(t, "every event delivered", func() bool { return sink.count() == n })
				sink.check(t, n)
				waitStats(t, l.Queue("s"), pipeline.QueueStats{})
			})
		}
	}
}
