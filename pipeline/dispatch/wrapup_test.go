package dispatch_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/sdk"
)

// TestStopWrapsUpTheBatchInFlight: a batch still in flight when the stop's
// deadline is near is wrapped up (Options.WrapUp), and the sink's answer
// (the first event delivered, the rest not attempted) is settled before
// the deadline: Stop returns nil, the delivered event is acked and only
// the others stay queued, with no attempt counted. Without the wrap up
// the call would be given up at the deadline and the whole batch
// delivered again.
func TestStopWrapsUpTheBatchInFlight(t *testing.T) {
	const limit = time.Second
	l := memlog.New()
	appendEvents(t, l, "ev", 3, "s")
	entered, wrapped := make(chan struct{}), make(chan struct{})
	var wrapUps atomic.Int32
	var wrapUpAt atomic.Int64
	sink := &fakeSink{answer: func(_ int, batch []sdk.Event) ([]sdk.Result, error) {
		close(entered)
		<-wrapped
		out := []sdk.Result{sdk.Delivered()}
		for range batch[1:] {
			out = append(out, sdk.NotAttempted(0, sdk.ErrWrapUp))
		}
		return out, nil
	}}
	o := options(l.Queue("s"), sink)
	o.WrapUp = func(context.Context) {
		if wrapUps.Add(1) == 1 {
			wrapUpAt.Store(time.Now().UnixNano())
			close(wrapped)
		}
	}
	d, done := start(t, o)
	<-entered
	t0 := time.Now()
	err, took := stopWithin(d, limit)
	if err != nil {
		t.Fatalf("Stop() = %v after %v, want nil: the batch wrapped up and settled in time", err, took)
	}
	wantRunReturns(t, done)
	if n := wrapUps.Load(); n != 1 {
		t.Errorf("WrapUp called %d times, want 1", n)
	}
	// At the deadline less half the time left (less than 5 s is left).
	if at := time.Unix(0, wrapUpAt.Load()).Sub(t0); at < limit/4 || at > limit {
		t.Errorf("WrapUp called %v into the stop, want about %v (the deadline less the reserve)", at, limit/2)
	}
	ready, err := l.Queue("s").Fetch(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(events(ready)); len(got) != 2 || got[0] != "ev-001" || got[1] != "ev-002" {
		t.Fatalf("queued after Stop = %v, want ev-001 and ev-002 (ev-000 was delivered)", got)
	}
	for _, e := range ready {
		if e.Attempt != 1 {
			t.Errorf("%s: attempt %d after a wrap up, want 1 (not attempted costs none)", e.Event.ID, e.Attempt)
		}
	}
}

// TestStopWithoutWrapUpWhenTheBatchEnds: a batch that settles on its own
// before the reserve point is not wrapped up.
func TestStopWithoutWrapUpWhenTheBatchEnds(t *testing.T) {
	l := memlog.New()
	appendEvents(t, l, "ev", 1, "s")
	entered, release := make(chan struct{}), make(chan struct{})
	sink := &fakeSink{answer: func(int, []sdk.Event) ([]sdk.Result, error) {
		close(entered)
		<-release
		return []sdk.Result{sdk.Delivered()}, nil
	}}
	var wrapUps atomic.Int32
	o := options(l.Queue("s"), sink)
	o.WrapUp = func(context.Context) { wrapUps.Add(1) }
	d, done := start(t, o)
	<-entered
	close(release)
	if err, _ := stopWithin(d, 20*time.Second); err != nil {
		t.Fatalf("Stop() = %v, want nil", err)
	}
	wantRunReturns(t, done)
	if n := wrapUps.Load(); n != 0 {
		t.Errorf("WrapUp called %d times for a batch that ended on its own, want 0", n)
	}
	if got := stats(t, l.Queue("s")); got != (pipeline.QueueStats{}) {
		t.Errorf("Stats() after Stop = %+v, want all zero", got)
	}
}

func events(ds []pipeline.Delivery) []sdk.Event {
	out := make([]sdk.Event, len(ds))
	for i, d := range ds {
		out[i] = sdk.Event{ID: d.Event.ID}
	}
	return out
}
