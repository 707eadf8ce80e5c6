package dispatch_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/protocol"
)

const (
	backoffMin = 20 * time.Millisecond
	backoffMax = 100 * time.Millisecond
)

// fakeSink is a Deliverer whose answer per call the test scripts. It records
// every batch it received, and when each call started and returned.
type fakeSink struct {
	// answer is called for call 1, 2, ...; nil answers (nil, nil): all delivered.
	answer func(call int, batch []sdk.Event) ([]sdk.Result, error)

	mu         sync.Mutex
	batches    [][]sdk.Event
	startedAt  []time.Time
	returnedAt []time.Time
	ctxErrs    []error // the call's ctx.Err() when the answer was made
}

func (f *fakeSink) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	f.mu.Lock()
	f.batches = append(f.batches, slices.Clone(batch))
	f.startedAt = append(f.startedAt, time.Now())
	call := len(f.batches)
	f.mu.Unlock()
	var res []sdk.Result
	var err error
	if f.answer != nil {
		res, err = f.answer(call, batch)
	}
	f.mu.Lock()
	f.ctxErrs = append(f.ctxErrs, ctx.Err())
	f.returnedAt = append(f.returnedAt, time.Now())
	f.mu.Unlock()
	return res, err
}

// calls returns the batches received so far.
func (f *fakeSink) calls() [][]sdk.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.batches)
}

// returned reports how many calls have returned.
func (f *fakeSink) returned() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.returnedAt)
}

// each answers every event of a batch with r.
func each(r sdk.Result) func(int, []sdk.Event) ([]sdk.Result, error) {
	return func(_ int, batch []sdk.Event) ([]sdk.Result, error) {
		out := make([]sdk.Result, len(batch))
		for i := range out {
			out[i] = r
		}
		return out, nil
	}
}

// startingSink is a fakeSink that also implements dispatch.Starter.
type startingSink struct {
	fakeSink
	mu     sync.Mutex
	up     bool
	starts int
}

func (s *startingSink) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.starts++
	if !s.up {
		return errors.New("plugin exited: exit status 1")
	}
	return nil
}

func (s *startingSink) set(up bool) {
	s.mu.Lock()
	s.up = up
	s.mu.Unlock()
}

func (s *startingSink) startCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts
}

// spyQueue records what passes through a real queue.
type spyQueue struct {
	pipeline.Queue

	mu      sync.Mutex
	calls   int // Fetch calls started
	fetches int // Fetch calls that returned entries
	fetched []pipeline.Delivery
	settles []settleCall
}

type settleCall struct {
	at time.Time // when Settle was called
	s  []pipeline.Settlement
}

func (q *spyQueue) Fetch(ctx context.Context, max int) ([]pipeline.Delivery, error) {
	q.mu.Lock()
	q.calls++
	q.mu.Unlock()
	ds, err := q.Queue.Fetch(ctx, max)
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(ds) > 0 {
		q.fetches++
		q.fetched = append(q.fetched, ds...)
	}
	return ds, err
}

func (q *spyQueue) Settle(ctx context.Context, s []pipeline.Settlement) error {
	at := time.Now()
	err := q.Queue.Settle(ctx, s)
	q.mu.Lock()
	defer q.mu.Unlock()
	q.settles = append(q.settles, settleCall{at: at, s: slices.Clone(s)})
	return err
}

// fetchCalls counts the Fetch calls started.
func (q *spyQueue) fetchCalls() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.calls
}

func (q *spyQueue) snapshot() (fetches int, fetched []pipeline.Delivery, settles []settleCall) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.fetches, slices.Clone(q.fetched), slices.Clone(q.settles)
}

// appendEvents appends n events routed to every sink and returns their ids
// in log order.
func appendEvents(t testing.TB, l *memlog.Log, prefix string, n int, sinks ...string) []string {
	t.Helper()
	var ids []string
	var entries []pipeline.Entry
	for i := range n {
		id := fmt.Sprintf("%s-%03d", prefix, i)
		ids = append(ids, id)
		e := pipeline.Entry{Event: pipeline.Event{ID: id, Source: "src", ReceivedAt: time.Now(), Body: []byte(`{"n":` + fmt.Sprint(i) + `}`)}}
		for _, s := range sinks {
			e.Targets = append(e.Targets, pipeline.Target{Sink: s, Route: "r"})
		}
		entries = append(entries, e)
	}
	if _, err := l.Append(context.Background(), entries); err != nil {
		t.Fatalf("Append(%d entries) = %v, want nil", n, err)
	}
	return ids
}

// run starts a dispatcher and returns a function that cancels it and returns
// Run's result. The dispatcher is stopped at cleanup if the test did not.
func run(t testing.TB, o dispatch.Options) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	d := dispatch.New(o)
	go func() { done <- d.Run(ctx) }()
	stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("Run did not return within 10s of cancel")
		}
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	return stop
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	waitWithin(t, 5*time.Second, what, cond)
}

// waitWithin is waitFor with a deadline of d, for the tests that move
// thousands of events through a real log (slow under -race on 2 cores).
func waitWithin(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func stats(t testing.TB, q pipeline.Queue) pipeline.QueueStats {
	t.Helper()
	st, err := q.Stats(context.Background())
	if err != nil {
		t.Fatalf("Stats() error = %v", err)
	}
	return st
}

// waitSettled waits until the queue holds only want.
func waitStats(t testing.TB, q pipeline.Queue, want pipeline.QueueStats) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := stats(t, q)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Stats() = %+v, want %+v (after 5s)", got, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func ids(batch []sdk.Event) []string {
	out := make([]string, len(batch))
	for i, e := range batch {
		out[i] = e.ID
	}
	return out
}

func options(q pipeline.Queue, d dispatch.Deliverer) dispatch.Options {
	return dispatch.Options{
		Sink:        "s",
		Queue:       q,
		Deliverer:   d,
		BatchMax:    100,
		MaxAttempts: 5,
		BackoffMin:  backoffMin,
		BackoffMax:  backoffMax,
	}
}

// TestBatchesInLogOrder checks that batches hold at most BatchMax entries,
// that they come in log order (P5), and that delivered entries are acked.
func TestBatchesInLogOrder(t *testing.T) {
	const n = 7
	tests := []struct {
		name      string
		batchMax  int
		wantSizes []int
	}{
		{"one per batch", 1, []int{1, 1, 1, 1, 1, 1, 1}},
		{"three per batch", 3, []int{3, 3, 1}},
		{"exactly all", 7, []int{7}},
		{"more than all", 100, []int{7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := memlog.New()
			want := appendEvents(t, l, "ev", n, "s")
			q := &spyQueue{Queue: l.Queue("s")}
			sink := &fakeSink{}
			o := options(q, sink)
			o.BatchMax = tt.batchMax
			run(t, o)

			waitStats(t, q, pipeline.QueueStats{})
			var sizes []int
			var got []string
			for _, b := range sink.calls() {
				sizes = append(sizes, len(b))
				got = append(got, ids(b)...)
				for _, e := range b {
					if e.Attempt != 1 {
						t.Errorf("event %s: Attempt = %d, want 1", e.ID, e.Attempt)
					}
				}
			}
			if !slices.Equal(sizes, tt.wantSizes) {
				t.Errorf("batch sizes = %v, want %v", sizes, tt.wantSizes)
			}
			if !slices.Equal(got, want) {
				t.Errorf("delivered ids = %v, want %v (log order)", got, want)
			}
			_, fetched, _ := q.snapshot()
			for i := 1; i < len(fetched); i++ {
				if fetched[i].Seq <= fetched[i-1].Seq {
					t.Errorf("fetched Seq %d after %d, want increasing", fetched[i].Seq, fetched[i-1].Seq)
				}
			}
		})
	}
}

// TestBatchWait checks that entries appended shortly after the first one
// join its batch, and that a batch that does not fill is still sent.
func TestBatchWait(t *testing.T) {
	t.Run("later entries join the batch", func(t *testing.T) {
		l := memlog.New()
		q := &spyQueue{Queue: l.Queue("s")}
		sink := &fakeSink{}
		o := options(q, sink)
		// The batch is sent when full, so the long wait costs nothing.
		o.BatchMax, o.BatchWait = 3, 5*time.Second
		run(t, o)

		first := appendEvents(t, l, "a", 1, "s")
		waitFor(t, "the first entry to be fetched", func() bool { n, _, _ := q.snapshot(); return n >= 1 })
		more := appendEvents(t, l, "b", 2, "s")
		waitStats(t, q, pipeline.QueueStats{})

		calls := sink.calls()
		want := append(first, more...)
		if len(calls) != 1 || !slices.Equal(ids(calls[0]), want) {
			t.Errorf("batches = %v, want one batch %v", batchIDs(calls), want)
		}
	})
	t.Run("a batch that does not fill is sent", func(t *testing.T) {
		l := memlog.New()
		q := l.Queue("s")
		sink := &fakeSink{}
		o := options(q, sink)
		o.BatchMax, o.BatchWait = 100, 20*time.Millisecond
		run(t, o)

		want := appendEvents(t, l, "a", 2, "s")
		waitStats(t, q, pipeline.QueueStats{})
		if calls := sink.calls(); len(calls) != 1 || !slices.Equal(ids(calls[0]), want) {
			t.Errorf("batches = %v, want one batch %v", batchIDs(calls), want)
		}
	})
}

func batchIDs(calls [][]sdk.Event) [][]string {
	var out [][]string
	for _, b := range calls {
		out = append(out, ids(b))
	}
	return out
}

// TestRetryDelay checks that a retried entry comes back after the backoff
// (or the delay the sink asked for), with Attempt incremented and the
// attempt's error as LastError on the queue entry.
func TestRetryDelay(t *testing.T) {
	tests := []struct {
		name          string
		first         sdk.Result
		wantLastError string
		// the delay before the retry must lie in [min, max]
		min, max time.Duration
	}{
		{"backoff", sdk.Retry(0, errors.New("sink busy")), "sink busy", backoffMin, 2 * backoffMin},
		{"after", sdk.Retry(250*time.Millisecond, errors.New("rate limited")), "rate limited", 250 * time.Millisecond, 250 * time.Millisecond},
		{"after below the backoff", sdk.Retry(5*time.Millisecond, errors.New("again")), "again", 5 * time.Millisecond, 5 * time.Millisecond},
		{"retry without error", sdk.Retry(0, nil), "no reason given", backoffMin, 2 * backoffMin},
		{"zero result", sdk.Result{}, "plugin gave an invalid result: invalid result (zero Result)", backoffMin, 2 * backoffMin},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := memlog.New()
			appendEvents(t, l, "ev", 1, "s")
			q := &spyQueue{Queue: l.Queue("s")}
			sink := &fakeSink{answer: func(call int, b []sdk.Event) ([]sdk.Result, error) {
				if call == 1 {
					return []sdk.Result{tt.first}, nil
				}
				return nil, nil
			}}
			run(t, options(q, sink))
			waitFor(t, "the retry to be delivered", func() bool { return sink.returned() >= 2 })
			waitStats(t, q, pipeline.QueueStats{})

			calls := sink.calls()
			if len(calls) != 2 {
				t.Fatalf("Deliver calls = %d, want 2", len(calls))
			}
			if got := calls[1][0].Attempt; got != 2 {
				t.Errorf("second delivery: Attempt = %d, want 2", got)
			}
			_, fetched, settles := q.snapshot()
			if len(fetched) != 2 || fetched[1].LastError != tt.wantLastError {
				t.Errorf("second fetch: LastError = %q, want %q (fetched %+v)", lastError(fetched), tt.wantLastError, fetched)
			}
			s := settles[0].s[0]
			if s.Outcome != pipeline.Retry {
				t.Fatalf("first settlement: Outcome = %v, want Retry", s.Outcome)
			}
			// The dispatcher computed RetryAt from a time between the
			// return of Deliver and the call of Settle.
			sink.mu.Lock()
			returned, restarted := sink.returnedAt[0], sink.startedAt[1]
			sink.mu.Unlock()
			if got := s.RetryAt.Sub(returned); got < tt.min {
				t.Errorf("RetryAt - Deliver return = %v, want >= %v", got, tt.min)
			}
			if got := s.RetryAt.Sub(settles[0].at); got > tt.max {
				t.Errorf("RetryAt - Settle call = %v, want <= %v", got, tt.max)
			}
			if restarted.Before(s.RetryAt) {
				t.Errorf("retry delivered at %v, before RetryAt %v", restarted, s.RetryAt)
			}
		})
	}
}

func lastError(ds []pipeline.Delivery) string {
	if len(ds) < 2 {
		return ""
	}
	return ds[1].LastError
}

// TestBackoffGrows checks each retry's delay against the ceiling of its
// attempt: 2×min, 4×min, ... up to BackoffMax.
func TestBackoffGrows(t *testing.T) {
	l := memlog.New()
	appendEvents(t, l, "ev", 1, "s")
	q := &spyQueue{Queue: l.Queue("s")}
	sink := &fakeSink{answer: each(sdk.Retry(0, errors.New("down")))}
	o := options(q, sink)
	o.MaxAttempts = 4
	run(t, o)
	waitStats(t, q, pipeline.QueueStats{Dead: 1})

	_, fetched, settles := q.snapshot()
	sink.mu.Lock()
	returned := slices.Clone(sink.returnedAt)
	sink.mu.Unlock()
	for i, sc := range settles[:3] {
		attempt := i + 1
		ceiling := min(backoffMin<<attempt, backoffMax)
		s := sc.s[0]
		if lo := s.RetryAt.Sub(returned[i]); lo < backoffMin {
			t.Errorf("attempt %d: delay >= %v, want >= %v", attempt, lo, backoffMin)
		}
		if hi := s.RetryAt.Sub(sc.at); hi > ceiling {
			t.Errorf("attempt %d: delay <= %v, want <= %v", attempt, hi, ceiling)
		}
	}
	for i, d := range fetched {
		if d.Attempt != i+1 {
			t.Errorf("fetch %d: Attempt = %d, want %d", i+1, d.Attempt, i+1)
		}
	}
}

// TestDeadLetters checks the two ways into the dead-letter queue.
func TestDeadLetters(t *testing.T) {
	tests := []struct {
		name        string
		answer      sdk.Result
		maxAttempts int
		wantCalls   int
		wantErr     []string // substrings of DeadLetter.Err
	}{
		{"permanent", sdk.Permanent(errors.New("payload rejected: no field text")), 5, 1,
			[]string{"permanent failure", "payload rejected: no field text"}},
		{"permanent without error", sdk.Permanent(nil), 5, 1,
			[]string{"permanent failure", "no reason given"}},
		{"out of attempts", sdk.Retry(0, errors.New("connection refused")), 3, 3,
			[]string{"gave up after 3 attempts", "connection refused"}},
		{"one attempt only", sdk.Retry(0, errors.New("connection refused")), 1, 1,
			[]string{"gave up after 1 attempts", "connection refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := memlog.New()
			want := appendEvents(t, l, "ev", 2, "s")
			q := l.Queue("s")
			sink := &fakeSink{answer: each(tt.answer)}
			o := options(q, sink)
			o.MaxAttempts = tt.maxAttempts
			run(t, o)
			waitStats(t, q, pipeline.QueueStats{Dead: 2})

			dl, err := q.DeadLetters(context.Background(), 0, 10)
			if err != nil {
				t.Fatalf("DeadLetters() error = %v", err)
			}
			if len(dl) != 2 {
				t.Fatalf("DeadLetters() = %d entries, want 2", len(dl))
			}
			for i, d := range dl {
				if d.Event.ID != want[i] {
					t.Errorf("DeadLetters()[%d].Event.ID = %q, want %q", i, d.Event.ID, want[i])
				}
				if d.Attempts != tt.wantCalls {
					t.Errorf("DeadLetters()[%d].Attempts = %d, want %d", i, d.Attempts, tt.wantCalls)
				}
				for _, sub := range tt.wantErr {
					if !strings.Contains(d.Err, sub) {
						t.Errorf("DeadLetters()[%d].Err = %q, want it to contain %q", i, d.Err, sub)
					}
				}
			}
			// Retries are jittered per entry, so they may come back in
			// separate batches: count deliveries, not calls.
			var n int
			for _, b := range sink.calls() {
				n += len(b)
			}
			if n != 2*tt.wantCalls {
				t.Errorf("events delivered = %d, want %d (2 events × %d attempts)", n, 2*tt.wantCalls, tt.wantCalls)
			}
		})
	}
}

// TestBatchErrorLogSaysWhatBecameOfIt: a call that fails as a whole is
// logged as "will retry" only for the events that are retried; at their
// last attempt, the events' own lines say they went to the dead-letter
// queue, and no line says they will be retried.
func TestBatchErrorLogSaysWhatBecameOfIt(t *testing.T) {
	for _, tt := range []struct {
		name        string
		maxAttempts int
		want        string
		wantNot     string
	}{
		{"retried", 2, `msg="delivery failed, will retry" sink=s events=2 err="connection refused"`, "dead-letter"},
		{"last attempt", 1, `msg="delivery failed" sink=s events=2 err="connection refused"`, "will retry"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			buf := &testlog.Buffer{}
			l := memlog.New()
			appendEvents(t, l, "ev", 2, "s")
			q := l.Queue("s")
			sink := &fakeSink{answer: func(int, []sdk.Event) ([]sdk.Result, error) { return nil, errors.New("connection refused") }}
			o := options(q, sink)
			o.MaxAttempts = tt.maxAttempts
			o.BackoffMin, o.BackoffMax = time.Hour, time.Hour // one call
			o.Logger = slog.New(slog.NewTextHandler(buf, nil))
			run(t, o)
			waitFor(t, "the call to be logged", func() bool { return strings.Contains(buf.String(), "delivery failed") })
			log := buf.String()
			if !strings.Contains(log, tt.want) || strings.Contains(log, tt.wantNot) {
				t.Errorf("log of the first call:\n%s\nwant %s, and not %q", log, tt.want, tt.wantNot)
			}
		})
	}
}

// TestRetriesLoggedOnceAMinute: events that fail on their own (the sink
// answers, each event a 503) are not logged one by one, and the breaker
// says nothing until it opens: one line says the sink is failing, with
// why, and no more than one a minute however many calls fail.
func TestRetriesLoggedOnceAMinute(t *testing.T) {
	buf := &testlog.Buffer{}
	l := memlog.New()
	appendEvents(t, l, "ev", 3, "s")
	sink := &fakeSink{answer: each(sdk.Retry(0, errors.New("POST https://crm.example/hook answered 503 Service Unavailable")))}
	o := options(l.Queue("s"), sink)
	o.MaxAttempts = 0           // retried for ever
	o.BreakerFailures = 1000000 // never opens: only the new line can say it
	o.Logger = slog.New(slog.NewTextHandler(buf, nil))
	run(t, o)
	waitFor(t, "four failed calls", func() bool { return sink.returned() >= 4 })
	const line = `msg="deliveries failed, will retry (logged at most once a minute per sink)" sink=s events=3 batch=3 last_error="POST https://crm.example/hook answered 503 Service Unavailable"`
	waitFor(t, "the line", func() bool { return strings.Contains(buf.String(), line) })
	if n := strings.Count(buf.String(), "deliveries failed, will retry"); n != 1 {
		t.Errorf("%d lines for %d failed calls within a minute, want 1:\n%s", n, sink.returned(), buf.String())
	}
}

// TestFailedBatch checks that a batch the sink did not answer properly is
// retried whole, and nothing is lost.
func TestFailedBatch(t *testing.T) {
	tests := []struct {
		name    string
		answer  func(batch []sdk.Event) ([]sdk.Result, error)
		wantErr string // in the Report and the LastError
	}{
		{"batch error", func([]sdk.Event) ([]sdk.Result, error) {
			return nil, errors.New("connection refused")
		}, "connection refused"},
		{"batch error with results", func(b []sdk.Event) ([]sdk.Result, error) {
			return make([]sdk.Result, len(b)), errors.New("half written")
		}, "half written"},
		{"too few results", func(b []sdk.Event) ([]sdk.Result, error) {
			return []sdk.Result{sdk.Delivered(), sdk.Delivered()}, nil
		}, "plugin answered 2 results for a batch of 3 events"},
		{"too many results", func(b []sdk.Event) ([]sdk.Result, error) {
			return []sdk.Result{sdk.Delivered(), sdk.Delivered(), sdk.Delivered(), sdk.Delivered()}, nil
		}, "plugin answered 4 results for a batch of 3 events"},
		{"empty results", func(b []sdk.Event) ([]sdk.Result, error) {
			return []sdk.Result{}, nil
		}, "plugin answered 0 results for a batch of 3 events"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := memlog.New()
			want := appendEvents(t, l, "ev", 3, "s")
			q := &spyQueue{Queue: l.Queue("s")}
			sink := &fakeSink{answer: func(call int, b []sdk.Event) ([]sdk.Result, error) {
				if call == 1 {
					return tt.answer(b)
				}
				return nil, nil
			}}
			var mu sync.Mutex
			var reports []dispatch.Report
			o := options(q, sink)
			// No BatchWait: entries that failed together must come back
			// together, in log order, not scattered by jitter.
			o.Observe = func(r dispatch.Report) { mu.Lock(); reports = append(reports, r); mu.Unlock() }
			run(t, o)
			waitFor(t, "two batches", func() bool { return sink.returned() >= 2 })
			waitStats(t, q, pipeline.QueueStats{})

			calls := sink.calls()
			if len(calls) != 2 {
				t.Fatalf("Deliver calls = %d, want 2", len(calls))
			}
			for i, b := range calls {
				if got := ids(b); !slices.Equal(got, want) {
					t.Errorf("batch %d = %v, want %v", i+1, got, want)
				}
			}
			for _, e := range calls[1] {
				if e.Attempt != 2 {
					t.Errorf("second batch: event %s Attempt = %d, want 2", e.ID, e.Attempt)
				}
			}
			_, fetched, _ := q.snapshot()
			for _, d := range fetched[3:] {
				if !strings.Contains(d.LastError, tt.wantErr) {
					t.Errorf("retry of %s: LastError = %q, want it to contain %q", d.Event.ID, d.LastError, tt.wantErr)
				}
			}
			waitFor(t, "two reports", func() bool { mu.Lock(); defer mu.Unlock(); return len(reports) >= 2 })
			mu.Lock()
			r := reports[0]
			mu.Unlock()
			if r.Retried != 3 || r.Delivered != 0 || r.Dead != 0 || r.Err == nil || !strings.Contains(r.Err.Error(), tt.wantErr) {
				t.Errorf("first Report = %+v, want Retried 3 and Err containing %q", r, tt.wantErr)
			}
		})
	}
}

// TestObserve checks the counts of a batch with every outcome.
func TestObserve(t *testing.T) {
	l := memlog.New()
	appendEvents(t, l, "ev", 4, "s")
	q := l.Queue("s")
	sink := &fakeSink{answer: func(call int, b []sdk.Event) ([]sdk.Result, error) {
		if call == 1 {
			return []sdk.Result{sdk.Delivered(), sdk.Retry(time.Hour, errors.New("later")), sdk.Permanent(errors.New("no")), sdk.Delivered()}, nil
		}
		return nil, nil
	}}
	reports := make(chan dispatch.Report, 10)
	o := options(q, sink)
	o.BatchMax = 4
	o.Observe = func(r dispatch.Report) { reports <- r }
	run(t, o)

	select {
	case r := <-reports:
		if r.Delivered != 2 || r.Retried != 1 || r.Dead != 1 || r.Err != nil || r.Duration <= 0 {
			t.Errorf("Report = %+v, want Delivered 2, Retried 1, Dead 1, no Err, a Duration", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no Report after 5s")
	}
	waitStats(t, q, pipeline.QueueStats{Retrying: 1, Dead: 1})
}

// TestStartFails checks that no entry is fetched, nor charged an attempt,
// while the plugin cannot start, and that delivery proceeds once it can.
func TestStartFails(t *testing.T) {
	l := memlog.New()
	want := appendEvents(t, l, "ev", 2, "s")
	q := &spyQueue{Queue: l.Queue("s")}
	sink := &startingSink{}
	run(t, options(q, sink))

	// The dispatcher waits a second between two Start calls.
	waitFor(t, "two failed Start calls", func() bool { return sink.startCalls() >= 2 })
	if n, _, _ := q.snapshot(); n != 0 {
		t.Errorf("Fetch calls while Start fails = %d, want 0", n)
	}
	if n := len(sink.calls()); n != 0 {
		t.Errorf("Deliver calls while Start fails = %d, want 0", n)
	}
	if got := stats(t, q); got != (pipeline.QueueStats{Ready: 2}) {
		t.Errorf("Stats() while Start fails = %+v, want Ready 2", got)
	}

	sink.set(true)
	waitStats(t, q, pipeline.QueueStats{})
	calls := sink.calls()
	if len(calls) != 1 || !slices.Equal(ids(calls[0]), want) {
		t.Fatalf("batches = %v, want one batch %v", batchIDs(calls), want)
	}
	for _, e := range calls[0] {
		if e.Attempt != 1 {
			t.Errorf("event %s: Attempt = %d, want 1 (no attempt charged while Start failed)", e.ID, e.Attempt)
		}
	}
}

// TestCancelSettlesBatchInFlight checks that Run returns nil after its ctx
// ends, and that a batch in the plugin at that moment is still settled.
func TestCancelSettlesBatchInFlight(t *testing.T) {
	l := memlog.New()
	appendEvents(t, l, "ev", 1, "s")
	q := l.Queue("s")
	entered := make(chan struct{})
	release := make(chan struct{})
	sink := &fakeSink{answer: func(call int, b []sdk.Event) ([]sdk.Result, error) {
		close(entered)
		<-release
		return []sdk.Result{sdk.Delivered()}, nil
	}}
	stop := run(t, options(q, sink))

	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// Run must wait for the call: it cannot have returned yet.
	select {
	case err := <-stopped:
		t.Fatalf("Run() = %v while a batch was in flight, want it to wait", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	if got := stats(t, q); got != (pipeline.QueueStats{}) {
		t.Errorf("Stats() after Run returned = %+v, want all zero (acked)", got)
	}
	sink.mu.Lock()
	ctxErr := sink.ctxErrs[0]
	sink.mu.Unlock()
	if ctxErr != nil {
		t.Errorf("Deliver ctx.Err() after Run's ctx ended = %v, want nil", ctxErr)
	}
}

// TestRunEnds checks Run's result when it stops.
func TestRunEnds(t *testing.T) {
	t.Run("ctx cancelled while idle", func(t *testing.T) {
		l := memlog.New()
		stop := run(t, options(l.Queue("s"), &fakeSink{}))
		if err := stop(); err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	t.Run("ctx cancelled while Start fails", func(t *testing.T) {
		l := memlog.New()
		sink := &startingSink{}
		stop := run(t, options(l.Queue("s"), sink))
		waitFor(t, "a Start call", func() bool { return sink.startCalls() >= 1 })
		if err := stop(); err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	t.Run("log closed", func(t *testing.T) {
		l := memlog.New()
		done := make(chan error, 1)
		go func() { done <- dispatch.New(options(l.Queue("s"), &fakeSink{})).Run(context.Background()) }()
		l.Close()
		select {
		case err := <-done:
			if !errors.Is(err, pipeline.ErrClosed) {
				t.Errorf("Run() = %v, want an error wrapping ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return within 5s of Close")
		}
	})
	t.Run("log halted", func(t *testing.T) {
		l := memlog.New()
		q := &haltedQueue{Queue: l.Queue("s")}
		var logs testlog.Buffer
		o := options(q, &fakeSink{})
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		_, done := start(t, o)
		q.halted.Store(true)
		if _, err := l.Append(context.Background(), []pipeline.Entry{{Event: pipeline.Event{ID: "e1", Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "s", Route: "r"}}}}); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run() after the log halted = %v, want nil: the daemon stops, not this sink alone", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return within 5s of its log's halt")
		}
		if !strings.Contains(logs.String(), "no more deliveries until the restart") {
			t.Errorf("the dispatcher's log does not say it stopped:\n%s", logs.String())
		}
	})
}

// haltedQueue is a real queue whose Fetch, once halted is set, fails as a
// Badger log's does after a halt (see pipeline.Halter).
type haltedQueue struct {
	pipeline.Queue
	halted atomic.Bool
}

func (q *haltedQueue) Fetch(ctx context.Context, max int) ([]pipeline.Delivery, error) {
	if q.halted.Load() {
		return nil, fmt.Errorf("%w after a failed write: input/output error", pipeline.ErrHalted)
	}
	return q.Queue.Fetch(ctx, max)
}

// TestFailingSinkDoesNotBlockOthers runs two dispatchers on one log: one
// sink fails (or hangs), the other gets everything.
func TestFailingSinkDoesNotBlockOthers(t *testing.T) {
	tests := []struct {
		name string
		bad  func(release <-chan struct{}) func(int, []sdk.Event) ([]sdk.Result, error)
	}{
		{"always retrying", func(<-chan struct{}) func(int, []sdk.Event) ([]sdk.Result, error) {
			return each(sdk.Retry(0, errors.New("down")))
		}},
		{"batch error", func(<-chan struct{}) func(int, []sdk.Event) ([]sdk.Result, error) {
			return func(int, []sdk.Event) ([]sdk.Result, error) { return nil, errors.New("down") }
		}},
		{"hanging", func(release <-chan struct{}) func(int, []sdk.Event) ([]sdk.Result, error) {
			return func(_ int, b []sdk.Event) ([]sdk.Result, error) {
				<-release
				return nil, errors.New("cancelled")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := memlog.New()
			release := make(chan struct{})
			bad := &fakeSink{answer: tt.bad(release)}
			good := &fakeSink{}
			ob := options(l.Queue("bad"), bad)
			ob.Sink, ob.BatchMax, ob.MaxAttempts = "bad", 2, 1000
			og := options(l.Queue("good"), good)
			og.Sink, og.BatchMax = "good", 2
			run(t, ob)
			run(t, og)
			t.Cleanup(func() { close(release) }) // runs before the dispatchers stop

			var want []string
			for i := range 5 {
				want = append(want, appendEvents(t, l, fmt.Sprintf("ev%d", i), 2, "bad", "good")...)
			}
			waitStats(t, l.Queue("good"), pipeline.QueueStats{})
			var got []string
			for _, b := range good.calls() {
				got = append(got, ids(b)...)
			}
			if !slices.Equal(got, want) {
				t.Errorf("good sink got %v, want %v", got, want)
			}
			// The bad sink's first call may come after the good sink is
			// done: the two dispatchers do not wait for each other.
			waitFor(t, "a Deliver call to the bad sink", func() bool { return len(bad.calls()) > 0 })
			if st := stats(t, l.Queue("bad")); st.Ready+st.Retrying != len(want) {
				t.Errorf("bad queue Stats() = %+v, want all %d entries still queued", st, len(want))
			}
		})
	}
}

// refusingQueue is a real queue whose Settle always fails, as a log on a
// full disk does; it counts the refusals.
type refusingQueue struct {
	pipeline.Queue

	mu       sync.Mutex
	refusals int
}

func (q *refusingQueue) Settle(ctx context.Context, s []pipeline.Settlement) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.refusals++
	return errors.New("write event log: no space left on device")
}

func (q *refusingQueue) refused() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.refusals
}

// start runs a dispatcher until the test stops it with Stop; done yields
// Run's result. At cleanup the dispatcher is stopped if the test did not.
func start(t testing.TB, o dispatch.Options) (d *dispatch.Dispatcher, done <-chan error) {
	t.Helper()
	d = dispatch.New(o)
	ch := make(chan error, 1)
	go func() { ch <- d.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.Stop(ctx)
	})
	return d, ch
}

// stopWithin calls Stop with a deadline of limit and reports its result
// and how long it took.
func stopWithin(d *dispatch.Dispatcher, limit time.Duration) (error, time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	t0 := time.Now()
	err := d.Stop(ctx)
	return err, time.Since(t0)
}

// wantRunReturns waits for Run's result: nil, soon.
func wantRunReturns(t testing.TB, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of Stop")
	}
}

// TestStop checks that Stop waits for the batch in flight to be settled,
// and that its ctx bounds that wait: a log that keeps refusing the
// settlement, or a plugin call that does not return, is given up at the
// deadline.
func TestStop(t *testing.T) {
	const deadline = 300 * time.Millisecond
	// slack covers scheduling; a Stop that waited for the refusing log's
	// retries (100 ms, 200 ms, 400 ms, ... up to 10 s each) or for the
	// hanging call would take far longer.
	const slack = 2 * time.Second

	t.Run("waits for the batch in flight", func(t *testing.T) {
		l := memlog.New()
		appendEvents(t, l, "ev", 1, "s")
		entered, release := make(chan struct{}), make(chan struct{})
		sink := &fakeSink{answer: func(int, []sdk.Event) ([]sdk.Result, error) {
			close(entered)
			<-release
			return []sdk.Result{sdk.Delivered()}, nil
		}}
		d, done := start(t, options(l.Queue("s"), sink))
		<-entered
		stopped := make(chan error, 1)
		go func() { err, _ := stopWithin(d, 10*time.Second); stopped <- err }()
		select {
		case err := <-stopped:
			t.Fatalf("Stop() = %v while a batch was in flight, want it to wait", err)
		case <-time.After(20 * time.Millisecond):
		}
		close(release)
		if err := <-stopped; err != nil {
			t.Fatalf("Stop() = %v, want nil", err)
		}
		wantRunReturns(t, done)
		if got := stats(t, l.Queue("s")); got != (pipeline.QueueStats{}) {
			t.Errorf("Stats() after Stop = %+v, want all zero (acked)", got)
		}
	})

	t.Run("gives up on a log that refuses settlements", func(t *testing.T) {
		l := memlog.New()
		appendEvents(t, l, "ev", 3, "s")
		q := &refusingQueue{Queue: l.Queue("s")}
		sink := &fakeSink{}
		d, done := start(t, options(q, sink))
		// The premise: the batch was delivered and the log refused its
		// outcomes, and the dispatcher is retrying them.
		waitFor(t, "two refused settlements", func() bool { return q.refused() >= 2 })
		if got := len(sink.calls()); got != 1 {
			t.Fatalf("Deliver calls before Stop = %d, want 1", got)
		}

		err, took := stopWithin(d, deadline)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Stop() = %v, want an error wrapping context.DeadlineExceeded", err)
		}
		if took > deadline+slack {
			t.Errorf("Stop() took %v, want at most %v past its %v deadline", took, slack, deadline)
		}
		wantRunReturns(t, done)
		// Not acked: after a restart the entries are delivered again.
		if got, want := stats(t, l.Queue("s")), (pipeline.QueueStats{Ready: 3}); got != want {
			t.Errorf("Stats() after Stop = %+v, want %+v (nothing acked)", got, want)
		}
	})

	t.Run("cancels a plugin call that does not return", func(t *testing.T) {
		l := memlog.New()
		appendEvents(t, l, "ev", 1, "s")
		entered := make(chan struct{})
		sink := &ctxSink{entered: entered}
		d, done := start(t, options(l.Queue("s"), sink))
		<-entered

		err, took := stopWithin(d, deadline)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Stop() = %v, want an error wrapping context.DeadlineExceeded", err)
		}
		if took > deadline+slack {
			t.Errorf("Stop() took %v, want at most %v past its %v deadline", took, slack, deadline)
		}
		wantRunReturns(t, done)
		if cause := sink.cause(); cause == nil || !strings.Contains(cause.Error(), "stop deadline") {
			t.Errorf("Deliver ctx cause = %v, want the stop deadline", cause)
		}
	})
}

// TestStatusInFlight checks that Status reports the batch in flight, its
// size and since when, from the call until its outcomes are recorded, and
// that a Stop that gives up on it says how many events it held: what a
// shutdown tells the operator.
func TestStatusInFlight(t *testing.T) {
	l := memlog.New()
	appendEvents(t, l, "ev", 3, "s")
	entered := make(chan struct{})
	sink := &ctxSink{entered: entered}
	d, done := start(t, options(l.Queue("s"), sink))
	if st := d.Status(); st.InFlight != 0 && st.InFlight != 3 {
		t.Errorf("Status().InFlight before the call = %d, want 0 or 3", st.InFlight)
	}
	t0 := time.Now()
	<-entered
	st := d.Status()
	if st.InFlight != 3 {
		t.Errorf("Status().InFlight during the call = %d, want 3", st.InFlight)
	}
	if st.InFlightSince.IsZero() || st.InFlightSince.After(time.Now()) || st.InFlightSince.Before(t0.Add(-time.Minute)) {
		t.Errorf("Status().InFlightSince = %v, want the call's start", st.InFlightSince)
	}

	err, _ := stopWithin(d, 100*time.Millisecond)
	var se *dispatch.StopError
	if !errors.As(err, &se) {
		t.Fatalf("Stop() = %v, want a *dispatch.StopError", err)
	}
	if se.Sink != "s" || se.Events != 3 || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop() = %#v, want sink s, 3 events, wrapping context.DeadlineExceeded", se)
	}
	if msg := err.Error(); !strings.Contains(msg, "sink s") || !strings.Contains(msg, "3 events") {
		t.Errorf("Stop() error = %q, want it to name the sink and the events", msg)
	}
	wantRunReturns(t, done)
	if st := d.Status(); st.InFlight != 0 || !st.InFlightSince.IsZero() {
		t.Errorf("Status() after Run returned = %+v, want no batch in flight", st)
	}
}

// ctxSink is a Deliverer whose call returns only when its ctx ends, as a
// stuck plugin's does; it keeps the ctx's cause.
type ctxSink struct {
	entered chan struct{}

	mu  sync.Mutex
	err error
}

func (s *ctxSink) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	close(s.entered)
	<-ctx.Done()
	s.mu.Lock()
	s.err = context.Cause(ctx)
	s.mu.Unlock()
	return nil, ctx.Err()
}

func (s *ctxSink) cause() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// TestSplitsBatchTooLarge checks that a batch the plugin protocol refuses
// as too large (protocol.ErrBatchTooLarge, wrapped as pluginhost does) is
// split in halves until the parts fit: the events around an oversized one
// are delivered, and the oversized event alone goes to the dead-letter
// queue with the reason.
func TestSplitsBatchTooLarge(t *testing.T) {
	l := memlog.New()
	want := appendEvents(t, l, "ev", 5, "s")
	big := want[3]
	q := l.Queue("s")
	sink := &fakeSink{answer: func(_ int, b []sdk.Event) ([]sdk.Result, error) {
		if slices.Contains(ids(b), big) {
			return nil, fmt.Errorf("sink %q: deliver: grpc: received message larger than max: %w", "s", protocol.ErrBatchTooLarge)
		}
		return nil, nil
	}}
	var mu sync.Mutex
	var reports []dispatch.Report
	o := options(q, sink)
	o.Observe = func(r dispatch.Report) { mu.Lock(); reports = append(reports, r); mu.Unlock() }
	run(t, o)
	waitStats(t, q, pipeline.QueueStats{Dead: 1})

	wantCalls := [][]string{
		want,      // refused: split
		want[:2],  // delivered
		want[2:],  // refused: split
		want[2:3], // delivered
		want[3:],  // refused: split
		want[3:4], // refused alone: dead
		want[4:],  // delivered
	}
	if got := batchIDs(sink.calls()); !reflect.DeepEqual(got, wantCalls) {
		t.Errorf("Deliver calls = %v, want %v", got, wantCalls)
	}
	dl, err := q.DeadLetters(context.Background(), 0, 10)
	if err != nil {
		t.Fatalf("DeadLetters() error = %v", err)
	}
	if len(dl) != 1 || dl[0].Event.ID != big || !strings.Contains(dl[0].Err, "too large for the plugin protocol") {
		t.Errorf("DeadLetters() = %+v, want only %s, with an error saying it is too large for the plugin protocol", dl, big)
	}
	waitFor(t, "a report", func() bool { mu.Lock(); defer mu.Unlock(); return len(reports) >= 1 })
	mu.Lock()
	r := reports[0]
	mu.Unlock()
	if r.Delivered != 4 || r.Dead != 1 || r.Retried != 0 || r.Err != nil {
		t.Errorf("Report = %+v, want 4 delivered and 1 dead, no batch error", r)
	}
}

// TestSinkErrorsAreBounded: a sink that answers every attempt with a
// megabyte of error text and a retry ten years away does not get either
// into the log: the record keeps at most a few KiB of text per failure, cut
// on a rune's boundary and saying so, and the retry is due within a day.
func TestSinkErrorsAreBounded(t *testing.T) {
	l := memlog.New()
	ids := appendEvents(t, l, "ev", 1, "s")
	q := l.Queue("s")
	huge := strings.Repeat("é", 512<<10) // 1 MiB, two bytes a rune
	sink := &fakeSink{answer: each(sdk.Retry(10*365*24*time.Hour, errors.New(huge)))}
	o := options(q, sink)
	o.MaxAttempts = 0
	start(t, o)
	waitStats(t, q, pipeline.QueueStats{Retrying: 1})

	rs, err := l.Deliveries(context.Background(), ids[0])
	if err != nil || len(rs) != 1 {
		t.Fatalf("Deliveries = %v, %v", rs, err)
	}
	r := rs[0]
	if r.Attempts != 1 || len(r.Failures) != 1 { // the premise: the attempt failed and was recorded
		t.Fatalf("record = %d attempts, %d failures; want 1 and 1", r.Attempts, len(r.Failures))
	}
	for _, text := range []string{r.LastError, r.Failures[0].Err} {
		if len(text) > 5<<10 || !utf8.ValidString(text) || !strings.HasSuffix(text, "(1048576 bytes, cut)") {
			t.Errorf("error kept = %d bytes (valid UTF-8: %v), ending %q; want at most 5 KiB, valid, saying it was cut",
				len(text), utf8.ValidString(text), text[max(0, len(text)-40):])
		}
	}
	if due := time.Until(r.NextAttemptAt); due > 24*time.Hour || due < 23*time.Hour {
		t.Errorf("next attempt in %v, want the plugin's ten years cut to a day", due)
	}
}

// TestDeadLettersLoggedInBursts: a receiver that refuses every event (a
// 400 for a schema it changed) dead-letters each: the first few get a line
// each, the last of them saying that further ones are bounded and where
// they all are, and the rest of the burst none. (The count left out, on
// the next line let through, is lograte's TestBurst.)
func TestDeadLettersLoggedInBursts(t *testing.T) {
	buf := &testlog.Buffer{}
	l := memlog.New()
	appendEvents(t, l, "refused", 30, "s")
	sink := &fakeSink{answer: each(sdk.Permanent(errors.New("POST https://crm.example/hook answered 400 Bad Request")))}
	o := options(l.Queue("s"), sink)
	o.Logger = slog.New(slog.NewTextHandler(buf, nil))
	run(t, o)
	waitFor(t, "30 dead letters", func() bool { return stats(t, l.Queue("s")).Dead == 30 })
	const line = "event failed permanently, moved to the dead-letter queue"
	if n := strings.Count(buf.String(), line); n != 10 {
		t.Errorf("%d lines for 30 dead letters at once, want the burst of 10:\n%s", n, buf.String())
	}
	if n := strings.Count(buf.String(), `further="at most one line a second; pipelined dlq list s lists every one"`); n != 1 {
		t.Errorf("%d lines say further dead letters are bounded, want the last of the burst:\n%s", n, buf.String())
	}
}
