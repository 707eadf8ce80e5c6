package dispatch_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/sdk"
)

var errNotInTime = errors.New("not sent: the call's time ran out")

// reportSum adds up the Reports of a dispatcher, safe for Observe's
// goroutine and the test's.
type reportSum struct {
	mu  sync.Mutex
	sum dispatch.Report
}

func (r *reportSum) add(rep dispatch.Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sum.Delivered += rep.Delivered
	r.sum.Retried += rep.Retried
	r.sum.NotAttempted += rep.NotAttempted
	r.sum.Dead += rep.Dead
}

func (r *reportSum) get() dispatch.Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sum
}

// TestNotAttemptedCostsNoAttempt: a sink that sends one event per call
// and answers the rest of each batch NotAttempted (a receiver too slow for
// the whole batch) gets every event delivered at its first attempt, with
// max_attempts 2 and more not-attempted answers than that for most of
// them; none goes to the dead-letter queue, and the Reports count the
// not-attempted answers apart from retries.
func TestNotAttemptedCostsNoAttempt(t *testing.T) {
	const n = 5
	l := memlog.New()
	appendEvents(t, l, "ev", n, "s")
	q := l.Queue("s")
	sink := &fakeSink{answer: func(_ int, b []sdk.Event) ([]sdk.Result, error) {
		out := []sdk.Result{sdk.Delivered()}
		for range b[1:] {
			out = append(out, sdk.NotAttempted(0, errNotInTime))
		}
		return out, nil
	}}
	var sum reportSum
	var opened atomic.Bool
	o := options(q, sink)
	o.MaxAttempts = 2
	o.BreakerFailures = 1 // a not-attempted answer is no failure: the breaker must stay shut
	o.OnBreaker = func(open bool) { opened.Store(opened.Load() || open) }
	o.Observe = sum.add
	run(t, o)
	waitStats(t, q, pipeline.QueueStats{})

	calls := sink.calls()
	if len(calls) != n {
		t.Errorf("Deliver calls = %d, want %d (one event sent per call)", len(calls), n)
	}
	for i, b := range calls {
		if b[0].Attempt != 1 {
			t.Errorf("call %d delivered %s at attempt %d, want 1: not-attempted answers cost none", i+1, b[0].ID, b[0].Attempt)
		}
	}
	want := dispatch.Report{Delivered: n, NotAttempted: n * (n - 1) / 2}
	if got := sum.get(); got != want {
		t.Errorf("Reports add up to %+v, want %+v (the premise: events answered not attempted, again and again)", got, want)
	}
	if opened.Load() {
		t.Error("the breaker opened: not-attempted answers fed it")
	}
}

// TestNotAttemptedAloneWaits: a batch the sink attempted nothing of says
// nothing of the sink (the breaker stays as it was: shut, with
// breaker_failures 1), costs no attempt (max_attempts 1 sends nothing to
// the dead-letter queue), and is not sent again at once: the next call
// waits BackoffMin, so a sink that takes nothing is not called in a loop.
func TestNotAttemptedAloneWaits(t *testing.T) {
	const idle = 4 // calls answered all not attempted
	l := memlog.New()
	appendEvents(t, l, "ev", 3, "s")
	q := l.Queue("s")
	sink := &fakeSink{answer: func(call int, b []sdk.Event) ([]sdk.Result, error) {
		if call > idle {
			return nil, nil
		}
		return each(sdk.NotAttempted(0, errors.New("no capacity")))(call, b)
	}}
	var opened atomic.Bool
	o := options(q, sink)
	o.MaxAttempts = 1
	o.BackoffMin = 60 * time.Millisecond
	o.BreakerFailures = 1
	o.OnBreaker = func(open bool) { opened.Store(opened.Load() || open) }
	run(t, o)
	waitStats(t, q, pipeline.QueueStats{})

	calls := sink.calls()
	if len(calls) != idle+1 {
		t.Fatalf("Deliver calls = %d, want %d", len(calls), idle+1)
	}
	sink.mu.Lock()
	started, returned := sink.startedAt, sink.returnedAt
	sink.mu.Unlock()
	for i := 1; i < len(started); i++ {
		if gap := started[i].Sub(returned[i-1]); gap < o.BackoffMin-5*time.Millisecond {
			t.Errorf("call %d came %v after call %d answered all not attempted, want >= BackoffMin %v", i+1, gap, i, o.BackoffMin)
		}
		if got := calls[i][0].Attempt; got != 1 {
			t.Errorf("call %d: Attempt = %d, want 1", i+1, got)
		}
	}
	if opened.Load() {
		t.Error("the breaker opened on batches the sink attempted nothing of")
	}
}

// TestNotAttemptedAfterThrottle: the http sink's 429: the first event is a
// retry after the Retry-After, the rest of the batch not attempted after
// the same delay. None comes back before it; only the first costs an
// attempt.
func TestNotAttemptedAfterThrottle(t *testing.T) {
	const retryAfter = 150 * time.Millisecond
	l := memlog.New()
	appendEvents(t, l, "ev", 3, "s")
	q := l.Queue("s")
	throttled := errors.New("429 Too Many Requests")
	sink := &fakeSink{answer: func(call int, b []sdk.Event) ([]sdk.Result, error) {
		if call > 1 {
			return nil, nil
		}
		out := []sdk.Result{sdk.Retry(retryAfter, throttled)}
		for range b[1:] {
			out = append(out, sdk.NotAttempted(retryAfter, errors.New("not sent: 429 earlier in the batch")))
		}
		return out, nil
	}}
	run(t, options(q, sink))
	waitStats(t, q, pipeline.QueueStats{})

	calls := sink.calls()
	sink.mu.Lock()
	first := sink.returnedAt[0]
	later := sink.startedAt[1:]
	sink.mu.Unlock()
	for i, at := range later {
		if gap := at.Sub(first); gap < retryAfter-5*time.Millisecond {
			t.Errorf("call %d came %v after the 429, want >= its Retry-After %v", i+2, gap, retryAfter)
		}
	}
	attempts := map[string]int{}
	for _, b := range calls[1:] {
		for _, e := range b {
			attempts[e.ID] = e.Attempt
		}
	}
	if want := map[string]int{"ev-000": 2, "ev-001": 1, "ev-002": 1}; !equalMaps(attempts, want) {
		t.Errorf("attempts of the second delivery = %v, want %v: only the throttled event was attempted", attempts, want)
	}
}

func equalMaps(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestNotAttemptedMaxAge: max_age is wall time, and a sink that never
// attempts an event does not keep it forever: it goes to the dead-letter
// queue once max_age has passed since its first answer that was not
// delivered, with no attempt counted and a reason that says so.
func TestNotAttemptedMaxAge(t *testing.T) {
	const maxAge = 300 * time.Millisecond
	l := memlog.New()
	appendEvents(t, l, "ev", 1, "s")
	q := l.Queue("s")
	sink := &fakeSink{answer: each(sdk.NotAttempted(0, errors.New("no capacity")))}
	o := options(q, sink)
	o.MaxAttempts = 0
	o.MaxAge = maxAge
	o.BackoffMin = 20 * time.Millisecond
	run(t, o)
	waitStats(t, q, pipeline.QueueStats{Dead: 1})

	sink.mu.Lock()
	first, last := sink.returnedAt[0], sink.returnedAt[len(sink.returnedAt)-1]
	sink.mu.Unlock()
	if got := last.Sub(first); got < maxAge {
		t.Errorf("dead-lettered %v after the first answer, want >= MaxAge %v", got, maxAge)
	}
	dl, err := q.DeadLetters(context.Background(), 0, 10)
	if err != nil || len(dl) != 1 {
		t.Fatalf("DeadLetters() = %d entries, %v, want 1", len(dl), err)
	}
	if dl[0].Attempts != 0 {
		t.Errorf("DeadLetters()[0].Attempts = %d, want 0: it was never attempted", dl[0].Attempts)
	}
	for _, sub := range []string{"gave up after failing for", "not attempted", "no capacity"} {
		if !strings.Contains(dl[0].Err, sub) {
			t.Errorf("DeadLetters()[0].Err = %q, want it to contain %q", dl[0].Err, sub)
		}
	}
}

// TestNotAttemptedProbeKeepsBreakerOpen: a probe of the open breaker that
// the sink did not attempt learnt nothing: the breaker stays open (it
// closes only on a probe that did not fail), and the probe costs nothing.
func TestNotAttemptedProbeKeepsBreakerOpen(t *testing.T) {
	l := memlog.New()
	appendEvents(t, l, "ev", 1, "s")
	q := l.Queue("s")
	var up atomic.Bool
	sink := &fakeSink{answer: func(call int, b []sdk.Event) ([]sdk.Result, error) {
		switch {
		case call == 1:
			return nil, errors.New("connection refused")
		case call <= 3:
			return each(sdk.NotAttempted(0, errors.New("no capacity")))(call, b)
		case up.Load():
			return nil, nil
		}
		return nil, errors.New("connection refused")
	}}
	var bl breakerLog
	o := options(q, sink)
	o.MaxAttempts = 2
	o.BackoffMin = time.Millisecond
	o.BreakerFailures = 1
	o.BreakerProbe = 20 * time.Millisecond
	o.OnBreaker = bl.record
	d, _ := start(t, o)
	waitFor(t, "two probes answered not attempted", func() bool { return sink.returned() >= 3 })
	if !d.Status().Open {
		t.Error("Status().Open = false after probes the sink did not attempt, want true: they said nothing of the sink")
	}
	up.Store(true)
	waitStats(t, q, pipeline.QueueStats{})
	if got := bl.get(); len(got) != 2 || !got[0] || got[1] {
		t.Errorf("OnBreaker calls = %v, want [true false] (opened by the failed call, closed by the good probe)", got)
	}
}

// TestNotAttemptedAfterThrottleWithoutDelay: a 429 without Retry-After
// (the sink asks for no delay of its own: the throttled event is a
// Retry(0), the rest of the batch NotAttempted(0)) is not followed at once
// by a call with the rest: a call that delivered nothing it attempted is
// no progress, and its events not attempted wait BackoffMin, as a batch
// not attempted at all does, so that a throttled receiver is not hit
// again at once. The throttled event alone costs an attempt.
func TestNotAttemptedAfterThrottleWithoutDelay(t *testing.T) {
	l := memlog.New()
	appendEvents(t, l, "ev", 3, "s")
	q := l.Queue("s")
	sink := &fakeSink{answer: func(call int, b []sdk.Event) ([]sdk.Result, error) {
		if call > 1 {
			return nil, nil
		}
		out := []sdk.Result{sdk.Retry(0, errors.New("429 Too Many Requests"))}
		for range b[1:] {
			out = append(out, sdk.NotAttempted(0, errors.New("not sent: 429 earlier in the batch")))
		}
		return out, nil
	}}
	o := options(q, sink)
	o.BackoffMin, o.BackoffMax = 200*time.Millisecond, time.Second
	run(t, o)
	waitStats(t, q, pipeline.QueueStats{})

	calls := sink.calls()
	if len(calls) < 2 || len(calls[0]) != 3 {
		t.Fatalf("Deliver calls = %d, the first of %d events; want a first call of all 3 (the premise)", len(calls), len(calls[0]))
	}
	sink.mu.Lock()
	first := sink.returnedAt[0]
	later := sink.startedAt[1:]
	sink.mu.Unlock()
	for i, at := range later {
		if gap := at.Sub(first); gap < o.BackoffMin-5*time.Millisecond {
			t.Errorf("call %d came %v after the 429, want >= BackoffMin %v", i+2, gap, o.BackoffMin)
		}
	}
	attempts := map[string]int{}
	for _, b := range calls[1:] {
		for _, e := range b {
			attempts[e.ID] = e.Attempt
		}
	}
	if want := map[string]int{"ev-000": 2, "ev-001": 1, "ev-002": 1}; !equalMaps(attempts, want) {
		t.Errorf("attempts of the second delivery = %v, want %v: only the throttled event was attempted", attempts, want)
	}
}

// TestNotAttemptedAloneWaitsWithMoreQueued: a sink that attempts nothing
// of its batch is not called again at once with the next events of the
// queue either: the dispatcher itself waits BackoffMin after such a call,
// so a sink that takes nothing is not run through the whole queue in a
// loop, every entry written again each time.
func TestNotAttemptedAloneWaitsWithMoreQueued(t *testing.T) {
	const idle = 3 // calls answered all not attempted
	l := memlog.New()
	appendEvents(t, l, "ev", 6, "s")
	q := l.Queue("s")
	sink := &fakeSink{answer: func(call int, b []sdk.Event) ([]sdk.Result, error) {
		if call > idle {
			return nil, nil
		}
		return each(sdk.NotAttempted(0, errors.New("no capacity")))(call, b)
	}}
	o := options(q, sink)
	o.BatchMax = 1
	o.BackoffMin = 100 * time.Millisecond
	run(t, o)
	waitStats(t, q, pipeline.QueueStats{})

	sink.mu.Lock()
	started, returned := sink.startedAt, sink.returnedAt
	sink.mu.Unlock()
	if len(started) < idle+1 {
		t.Fatalf("Deliver calls = %d, want more than %d (the premise)", len(started), idle)
	}
	for i := 1; i <= idle; i++ {
		if gap := started[i].Sub(returned[i-1]); gap < o.BackoffMin-5*time.Millisecond {
			t.Errorf("call %d came %v after call %d answered all not attempted, want >= BackoffMin %v", i+1, gap, i, o.BackoffMin)
		}
	}
}
