package dispatch_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/sdk"
)

// seqOf returns the seq of the event id in l.
func seqOf(t testing.TB, l pipeline.Log, id string) uint64 {
	t.Helper()
	es, _, err := l.Events(context.Background(), pipeline.EventFilter{ID: id, Limit: 1})
	if err != nil || len(es) != 1 {
		t.Fatalf("Events(ID %s) = %v, %v; want the event", id, es, err)
	}
	return es[0].Seq
}

// giveUp gives up on the events ids of l in g, for reason.
func giveUp(t testing.TB, g *dispatch.GiveUps, l pipeline.Log, reason string, ids ...string) {
	t.Helper()
	var gs []pipeline.GiveUp
	for _, id := range ids {
		gs = append(gs, pipeline.GiveUp{Seq: seqOf(t, l, id), ID: id, Reason: reason})
	}
	if err := g.Add(gs); err != nil {
		t.Fatalf("GiveUps.Add(%v) error = %v", ids, err)
	}
}

// deadLetters returns the sink's dead letters by event id.
func deadLetters(t testing.TB, q pipeline.Queue) map[string]pipeline.DeadLetter {
	t.Helper()
	dl, err := q.DeadLetters(context.Background(), 0, 100)
	if err != nil {
		t.Fatalf("DeadLetters() error = %v", err)
	}
	out := map[string]pipeline.DeadLetter{}
	for _, d := range dl {
		out[d.Event.ID] = d
	}
	return out
}

// sent counts how many times the sink was handed the event id.
func sent(f *fakeSink, id string) int {
	n := 0
	for _, b := range f.calls() {
		for _, e := range b {
			if e.ID == id {
				n++
			}
		}
	}
	return n
}

// TestGiveUpOnAReadyEvent: an event given up on before its turn goes to the
// dead-letter queue with the operator's reason and never reaches the sink;
// the events around it are delivered, and the set is empty afterwards.
func TestGiveUpOnAReadyEvent(t *testing.T) {
	l := memlog.New()
	ids := appendEvents(t, l, "ev", 3, "s")
	q := l.Queue("s")
	var mu sync.Mutex
	var kept [][]pipeline.GiveUp // what Keep was given, call by call
	g := dispatch.GiveUps{Keep: func(gs []pipeline.GiveUp) error {
		mu.Lock()
		defer mu.Unlock()
		kept = append(kept, gs)
		return nil
	}}
	giveUp(t, &g, l, "bad data, see ticket 42", ids[1])
	sink := &fakeSink{}
	o := options(q, sink)
	o.GiveUps = &g
	run(t, o)
	waitStats(t, q, pipeline.QueueStats{Dead: 1})

	if n := sent(sink, ids[1]); n != 0 {
		t.Errorf("the sink was handed the event given up on %d times, want 0", n)
	}
	for _, id := range []string{ids[0], ids[2]} {
		if n := sent(sink, id); n != 1 {
			t.Errorf("the sink was handed %s %d times, want 1", id, n)
		}
	}
	d, ok := deadLetters(t, q)[ids[1]]
	if !ok {
		t.Fatalf("%s is not a dead letter", ids[1])
	}
	if want := "given up by an operator: bad data, see ticket 42"; d.Err != want {
		t.Errorf("dead letter's error = %q, want %q", d.Err, want)
	}
	if d.Attempts != 0 {
		t.Errorf("dead letter's attempts = %d, want 0 (it was never handed to the sink)", d.Attempts)
	}
	if n := g.Len(); n != 0 {
		t.Errorf("GiveUps.Len() = %d after the entry was settled, want 0", n)
	}
	mu.Lock()
	if want := [][]pipeline.GiveUp{{{Seq: seqOf(t, l, ids[1]), ID: ids[1], Reason: "bad data, see ticket 42"}}, nil}; !reflect.DeepEqual(kept, want) {
		t.Errorf("Keep was given %+v, want the entry, then nothing once it was settled", kept)
	}
	mu.Unlock()
	// Retried from the dead-letter queue, the event (same seq) is
	// delivered: the give-up ended with the life it was given for.
	if n, err := q.RetryDead(context.Background(), []uint64{seqOf(t, l, ids[1])}); err != nil || n != 1 {
		t.Fatalf("RetryDead = %d, %v", n, err)
	}
	waitStats(t, q, pipeline.QueueStats{})
	if n := sent(sink, ids[1]); n != 1 {
		t.Errorf("the sink was handed the retried event %d times, want 1", n)
	}
}

// TestGiveUpsKeep: Keep is given the set after each change; when it fails,
// Add adds nothing and says why, and Remove removes all the same.
func TestGiveUpsKeep(t *testing.T) {
	var fail error
	var last []pipeline.GiveUp
	g := dispatch.GiveUps{Keep: func(gs []pipeline.GiveUp) error {
		if fail != nil {
			return fail
		}
		last = gs
		return nil
	}}
	a, b := pipeline.GiveUp{Seq: 7, ID: "a", Reason: "x"}, pipeline.GiveUp{Seq: 3, ID: "b"}
	if err := g.Add([]pipeline.GiveUp{a, b}); err != nil {
		t.Fatalf("Add = %v", err)
	}
	if want := []pipeline.GiveUp{b, a}; !reflect.DeepEqual(last, want) || !reflect.DeepEqual(g.List(), want) {
		t.Errorf("after Add: Keep had %v, List %v; want %v (by seq)", last, g.List(), want)
	}
	fail = errors.New("disk full")
	if err := g.Add([]pipeline.GiveUp{{Seq: 9, ID: "c"}, {Seq: 7, ID: "a", Reason: "y"}}); !errors.Is(err, fail) {
		t.Errorf("Add with Keep failing = %v, want its error", err)
	}
	if want := []pipeline.GiveUp{b, a}; !reflect.DeepEqual(g.List(), want) {
		t.Errorf("after a failed Add: List = %v, want it as before, %v", g.List(), want)
	}
	if err := g.Remove([]uint64{3}); !errors.Is(err, fail) {
		t.Errorf("Remove with Keep failing = %v, want its error", err)
	}
	if want := []pipeline.GiveUp{a}; !reflect.DeepEqual(g.List(), want) {
		t.Errorf("after a Remove whose Keep failed: List = %v, want %v", g.List(), want)
	}
	fail = nil
	if err := g.Remove([]uint64{42}); err != nil || len(last) != 2 {
		t.Errorf("Remove of a seq not in the set = %v, Keep had %v; want no call", err, last)
	}
	if err := g.Remove([]uint64{7}); err != nil || last != nil || g.Len() != 0 {
		t.Errorf("Remove of the last = %v, Keep had %v, Len %d; want nil, nothing, 0", err, last, g.Len())
	}
}

// TestGiveUpOnARetryingEvent: an event that keeps failing, given up on,
// goes to the dead-letter queue at its next turn with the reason and its
// last error, and the sink is not handed it again after that.
func TestGiveUpOnARetryingEvent(t *testing.T) {
	l := memlog.New()
	ids := appendEvents(t, l, "ev", 1, "s")
	q := l.Queue("s")
	var g dispatch.GiveUps
	sink := &fakeSink{answer: each(sdk.Retry(0, errors.New("422 from the CRM: field phone invalid")))}
	o := options(q, sink)
	o.MaxAttempts = 0 // it would retry for ever
	o.GiveUps = &g
	run(t, o)
	waitFor(t, "two failed attempts", func() bool { return sent(sink, ids[0]) >= 2 })
	giveUp(t, &g, l, "", ids[0])
	before := sent(sink, ids[0])
	waitStats(t, q, pipeline.QueueStats{Dead: 1})

	// An attempt in flight when it was given up on is its last one.
	if n := sent(sink, ids[0]); n > before+1 {
		t.Errorf("the sink was handed the event %d more times after it was given up on, want at most 1 (in flight)", n-before)
	}
	d := deadLetters(t, q)[ids[0]]
	for _, want := range []string{"given up by an operator", "422 from the CRM: field phone invalid"} {
		if !strings.Contains(d.Err, want) {
			t.Errorf("dead letter's error = %q, want it to contain %q", d.Err, want)
		}
	}
	if n := g.Len(); n != 0 {
		t.Errorf("GiveUps.Len() = %d after the entry was settled, want 0", n)
	}
}

// TestGiveUpInFlight: an event given up on while the sink has it goes to
// the dead-letter queue if that attempt fails, and is delivered if it
// succeeds; either way it leaves the set.
func TestGiveUpInFlight(t *testing.T) {
	for _, tt := range []struct {
		name   string
		answer sdk.Result
		want   pipeline.QueueStats
	}{
		{"attempt fails", sdk.Retry(0, errors.New("timeout")), pipeline.QueueStats{Dead: 1}},
		{"attempt succeeds", sdk.Delivered(), pipeline.QueueStats{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := memlog.New()
			ids := appendEvents(t, l, "ev", 1, "s")
			q := l.Queue("s")
			var g dispatch.GiveUps
			inFlight, answer := make(chan struct{}), make(chan struct{})
			sink := &fakeSink{answer: func(call int, batch []sdk.Event) ([]sdk.Result, error) {
				if call == 1 {
					close(inFlight)
					<-answer
				}
				return []sdk.Result{tt.answer}, nil
			}}
			o := options(q, sink)
			// A retry would wait an hour: the entry must leave at the end
			// of the attempt in flight, not at its next turn.
			o.MaxAttempts, o.BackoffMin, o.BackoffMax = 0, time.Hour, time.Hour
			o.GiveUps = &g
			run(t, o)
			<-inFlight
			giveUp(t, &g, l, "wrong tenant", ids[0])
			close(answer)
			waitStats(t, q, tt.want)
			waitFor(t, "the set to empty", func() bool { return g.Len() == 0 })
			if n := sent(sink, ids[0]); n != 1 {
				t.Errorf("the sink was handed the event %d times, want 1", n)
			}
			if tt.want.Dead == 1 {
				if d := deadLetters(t, q)[ids[0]]; !strings.Contains(d.Err, "wrong tenant") || !strings.Contains(d.Err, "timeout") {
					t.Errorf("dead letter's error = %q, want the reason and the attempt's error", d.Err)
				}
			}
		})
	}
}

// TestGiveUpKeepsTheBreakerShut: entries given up on while the breaker is
// open leave with no call, and so tell nothing of the sink: while another
// event still waits to be probed (here held after its failed probe), the
// breaker stays open (settling them must not pass for a probe that
// succeeded). And they leave one after the other, not one per probe
// interval. (With nothing left to probe it closes:
// TestBreakerClosesWithNothingToProbe.)
func TestGiveUpKeepsTheBreakerShut(t *testing.T) {
	l := memlog.New()
	ids := appendEvents(t, l, "ev", 4, "s")
	q := l.Queue("s")
	var g dispatch.GiveUps
	sink := &fakeSink{answer: func(int, []sdk.Event) ([]sdk.Result, error) { return nil, errors.New("connection refused") }}
	o := options(q, sink)
	// Three probe intervals would outlast waitStats' 5 s.
	o.MaxAttempts, o.BreakerFailures, o.BreakerProbe = 0, 2, 2*time.Second
	o.GiveUps = &g
	d, _ := start(t, o)
	waitFor(t, "the breaker to open", func() bool { return d.Status().Open })
	giveUp(t, &g, l, "the CRM drops these", ids[:3]...)
	// ids[3] is the probe after them, fails and is held (counted as retrying).
	waitStats(t, q, pipeline.QueueStats{Retrying: 1, Dead: 3})
	if !d.Status().Open {
		t.Error("the breaker closed after entries given up on were settled, with no call made and an event still failing")
	}
}

// TestGiveUpOnTheHeadOfAKey: with delivery.order_key, an event that keeps
// failing holds its key's later events back; given up on, it goes to the
// dead-letter queue and they follow, in order, on every log that holds.
func TestGiveUpOnTheHeadOfAKey(t *testing.T) {
	for name, open := range orderLogs(t) {
		t.Run(name, func(t *testing.T) {
			l := open(t)
			appendKeyed(t, l, 0, 6, func(i int) string { return fmt.Sprint(i % 2) })
			sink := newOrderSink(0)
			sink.never = "0" // key 0 fails, so its head ev-00000 holds the rest back
			var g dispatch.GiveUps
			o := options(l.Queue("s"), sink)
			o.MaxAttempts, o.BackoffMin, o.BackoffMax, o.BatchWait = 0, time.Millisecond, 5*time.Millisecond, time.Millisecond
			o.OrderKey = bodyKey
			o.GiveUps = &g
			d, _ := start(t, o)
			waitFor(t, "key 1 delivered and key 0 held behind its head", func() bool {
				st := d.Order()
				return sink.count() == 3 && st.Held == 2
			})
			giveUp(t, &g, l, "stale call", "ev-00000")
			waitFor(t, "the head in the dead-letter queue", func() bool { return stats(t, l.Queue("s")).Dead == 1 })
			sink.mu.Lock()
			sink.never = "" // the rest of key 0 is fine
			sink.mu.Unlock()
			waitStats(t, l.Queue("s"), pipeline.QueueStats{Dead: 1})
			waitFor(t, "key 0's later events delivered", func() bool { return sink.count() == 5 })
			sink.mu.Lock()
			got, errs := slices.Clone(sink.keysOf["0"]), slices.Clone(sink.errs)
			sink.mu.Unlock()
			if want := []int{2, 4}; !slices.Equal(got, want) {
				t.Errorf("key 0 delivered %v, want %v (its head given up on, the rest in order)", got, want)
			}
			for _, e := range errs {
				t.Error(e)
			}
		})
	}
}
