package dispatch

import (
	"cmp"
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// waitingQueue is a queue whose Waiting gives the entries a test made
// and, once it has given them all, reads the heap: loadOrder then holds
// them, by key, on top of what it held before.
type waitingQueue struct {
	pipeline.Holder // nil: loadOrder calls only Waiting (no key is all held)
	waiting         []pipeline.Waiting
	heap            uint64 // live heap after the last entry was given
}

func (q *waitingQueue) Waiting(ctx context.Context, dead bool, visit func(pipeline.Waiting) error) error {
	for _, w := range q.waiting {
		if err := visit(w); err != nil {
			return err
		}
	}
	q.heap = liveHeap()
	return nil
}

// liveHeap is the heap in use after a collection.
func liveHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// orderKeyOf is the order key of the events the test makes: the ID up to
// its '/', 34 bytes as a Twilio call SID ("CA" and 32 hex digits).
func orderKeyOf(ev pipeline.Event) (string, error) {
	return ev.ID[:34], nil
}

// TestOrderStateMemory measures what per-key order keeps in memory: per
// key that has an event in flight or retrying (its head), and per event
// held behind one, both as the dispatcher runs (admitOrdered) and as it
// rebuilds the state at start (loadOrder, which also holds every waiting
// entry for a moment). The figures are docs/order.md's "Memory"; the test
// holds them with a margin. Run it with -v to see them:
//
//	go test -count=1 -run TestOrderStateMemory -v ./pipeline/dispatch
func TestOrderStateMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates some 30 MB")
	}
	const (
		maxPerKey  = 400 // bytes, a key with its head and nothing held
		maxPerHeld = 40  // bytes, an event held behind its key's head
		maxAtStart = 600 // bytes, a waiting entry while loadOrder reads them
	)
	ctx := context.Background()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct{ keys, held int }{ // held: per key
		{20000, 0},
		{20000, 1},
		{2000, 10},
		{1, 50000},
	}
	perKey := 0.0 // measured in the first case
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d keys × %d held", tt.keys, tt.held), func(t *testing.T) {
			n := tt.keys * (1 + tt.held)
			batch := make([]pipeline.Delivery, 0, n)
			waiting := make([]pipeline.Waiting, 0, n)
			for k := range tt.keys {
				key := fmt.Sprintf("CA%032x", k)
				for i := range 1 + tt.held {
					ev := pipeline.Event{ID: key + "/" + fmt.Sprint(i), ReceivedAt: at.Add(time.Duration(i) * time.Second)}
					seq := uint64(i*tt.keys + k + 1) // log order: the keys' events interleaved
					batch = append(batch, pipeline.Delivery{Seq: seq, Event: ev})
					st := pipeline.WaitingHeld
					if i == 0 {
						st = pipeline.WaitingRetry
					}
					waiting = append(waiting, pipeline.Waiting{Seq: seq, Event: ev, State: st})
				}
			}
			slices.SortFunc(batch, func(a, b pipeline.Delivery) int { return cmp.Compare(a.Seq, b.Seq) }) // as Fetch gives it

			// Running: the batch is fetched, each key's first event goes
			// out, the others are held.
			d := New(Options{Sink: "s", Queue: &waitingQueue{}, OrderKey: orderKeyOf})
			before := liveHeap()
			out, _ := d.admit(batch, nil)
			if len(out) != tt.keys || d.Order().Held != tt.keys*tt.held {
				t.Fatalf("premise: %d delivered and %d held, want %d and %d", len(out), d.Order().Held, tt.keys, tt.keys*tt.held)
			}
			out, d.ord.holds, d.ord.unrecorded = nil, nil, nil // as once the holds are recorded
			running := float64(liveHeap()-before) / float64(tt.keys)
			runtime.KeepAlive(batch)
			runtime.KeepAlive(d)

			// At start: the same state rebuilt from the queue's waiting
			// entries.
			batch = nil
			q := &waitingQueue{waiting: waiting}
			d = New(Options{Sink: "s", Queue: q, OrderKey: orderKeyOf})
			before = liveHeap()
			if ok, err := d.loadOrder(ctx); !ok || err != nil {
				t.Fatalf("loadOrder = %v, %v", ok, err)
			}
			if st := d.Order(); st.Held != tt.keys*tt.held {
				t.Fatalf("premise: %d held after the rebuild, want %d", st.Held, tt.keys*tt.held)
			}
			rebuilt := float64(liveHeap()-before) / float64(tt.keys)
			atStart := float64(q.heap-before) / float64(n)
			runtime.KeepAlive(d)
			runtime.KeepAlive(q)

			t.Logf("per key: %.0f B running, %.0f B rebuilt; while rebuilding, %.0f B per waiting entry", running, rebuilt, atStart)
			if tt.held == 0 {
				perKey = running
				if running > maxPerKey || rebuilt > maxPerKey {
					t.Errorf("a key with nothing held costs %.0f B running, %.0f B rebuilt; want at most %d", running, rebuilt, maxPerKey)
				}
			} else if perKey > 0 {
				for _, m := range []struct {
					what string
					v    float64
				}{{"running", running}, {"rebuilt", rebuilt}} {
					what, v := m.what, m.v
					held := (v - perKey) / float64(tt.held)
					if tt.keys == 1 {
						held = v / float64(tt.held)
					}
					t.Logf("%s: %.1f B per held event", what, held)
					if held > maxPerHeld {
						t.Errorf("%s, a held event costs %.1f B, want at most %d", what, held, maxPerHeld)
					}
				}
			}
			if atStart > maxAtStart {
				t.Errorf("while rebuilding, a waiting entry costs %.0f B, want at most %d", atStart, maxAtStart)
			}
		})
	}
}
