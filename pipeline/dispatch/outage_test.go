package dispatch_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/stacks"
	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/sdk"
)

// switchSink is a fakeSink that is down (every call fails as a whole)
// until set up.
type switchSink struct {
	fakeSink
	up atomic.Bool
}

func newSwitchSink() *switchSink {
	s := &switchSink{}
	s.answer = func(int, []sdk.Event) ([]sdk.Result, error) {
		if !s.up.Load() {
			return nil, errors.New("dial tcp 127.0.0.1:443: connection refused")
		}
		return nil, nil
	}
	return s
}

// breakerLog records OnBreaker calls.
type breakerLog struct {
	mu      sync.Mutex
	changes []bool
	at      []time.Time
}

func (b *breakerLog) record(open bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.changes = append(b.changes, open)
	b.at = append(b.at, time.Now())
}

func (b *breakerLog) get() []bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.changes)
}

// delivered returns the ids of the events of successful calls, in the
// order the sink got them, each once.
func delivered(s *switchSink, upFrom int) []string {
	var out []string
	seen := map[string]bool{}
	for _, b := range s.calls()[upFrom:] {
		for _, e := range b {
			if !seen[e.ID] {
				seen[e.ID] = true
				out = append(out, e.ID)
			}
		}
	}
	return out
}

// TestMaxAge checks that with no attempt limit an event that keeps failing
// goes to the dead-letter queue once it has been failing for MaxAge, with
// a reason that says so, and not before.
func TestMaxAge(t *testing.T) {
	const maxAge = 500 * time.Millisecond
	l := memlog.New()
	appendEvents(t, l, "ev", 1, "s")
	q := &spyQueue{Queue: l.Queue("s")}
	sink := &fakeSink{answer: each(sdk.Retry(0, errors.New("503 from the CRM")))}
	o := options(q, sink)
	o.MaxAttempts = 0
	o.MaxAge = maxAge
	run(t, o)
	waitStats(t, q, pipeline.QueueStats{Dead: 1})

	sink.mu.Lock()
	first, last := sink.returnedAt[0], sink.returnedAt[len(sink.returnedAt)-1]
	sink.mu.Unlock()
	if got := last.Sub(first); got < maxAge {
		t.Errorf("dead-lettered %v after the first failure, want >= MaxAge %v", got, maxAge)
	}
	dl, err := q.DeadLetters(context.Background(), 0, 10)
	if err != nil || len(dl) != 1 {
		t.Fatalf("DeadLetters() = %d entries, %v, want 1", len(dl), err)
	}
	if dl[0].Attempts <= 5 {
		t.Errorf("DeadLetters()[0].Attempts = %d, want more than the old 5 of options (MaxAttempts 0 is no limit)", dl[0].Attempts)
	}
	for _, sub := range []string{"gave up after failing for", "503 from the CRM"} {
		if !strings.Contains(dl[0].Err, sub) {
			t.Errorf("DeadLetters()[0].Err = %q, want it to contain %q", dl[0].Err, sub)
		}
	}
}

// TestBreakerOpensAndProbes checks that BreakerFailures failed calls in a
// row open the breaker; that while open the dispatcher sends one probe of
// one event at a time, at growing intervals, and that probes cost no
// attempt toward MaxAttempts; and that the first good probe closes it.
func TestBreakerOpensAndProbes(t *testing.T) {
	const probe = 40 * time.Millisecond
	l := memlog.New()
	appendEvents(t, l, "ev", 1, "s")
	q := l.Queue("s")
	sink := newSwitchSink()
	var bl breakerLog
	o := options(q, sink)
	// One event: the five failed calls are its attempts 1..5, and every
	// probe is attempt 6, which would be its last if probes counted.
	o.MaxAttempts = 6
	o.BackoffMin, o.BackoffMax = time.Millisecond, 4*probe
	o.BreakerFailures = 5
	o.BreakerProbe = probe
	o.OnBreaker = bl.record
	d, _ := start(t, o)

	waitFor(t, "the breaker to open", func() bool { return d.Status().Open })
	if got := len(sink.calls()); got != 5 {
		t.Errorf("Deliver calls when the breaker opened = %d, want 5 (breaker_failures)", got)
	}
	waitFor(t, "four probes", func() bool { return len(sink.calls()) >= 9 })
	calls := sink.calls()
	sink.mu.Lock()
	started := slices.Clone(sink.startedAt)
	sink.mu.Unlock()
	for i, want := range []time.Duration{probe, 2 * probe, 4 * probe, 4 * probe} {
		call := 5 + i
		if gap := started[call].Sub(started[call-1]); gap < want {
			t.Errorf("probe %d came %v after the call before, want >= %v", i+1, gap, want)
		}
	}
	if got := calls[8][0].Attempt; got != 6 {
		t.Fatalf("fourth probe: Attempt = %d, want 6: the probes cost no attempt", got)
	}
	if st := stats(t, q); st.Dead != 0 {
		t.Errorf("Stats().Dead = %d while the breaker is open, want 0 (probes spend no attempts)", st.Dead)
	}

	sink.up.Store(true)
	waitStats(t, q, pipeline.QueueStats{})
	// The probe's event is settled before its breaker closes, and Status
	// says closed before OnBreaker is called: wait for both.
	waitFor(t, "the breaker to close after the sink came back", func() bool { return !d.Status().Open && len(bl.get()) >= 2 })
	if got, want := bl.get(), []bool{true, false}; !slices.Equal(got, want) {
		t.Errorf("OnBreaker calls = %v, want %v (open once, closed once)", got, want)
	}
}

// TestBreakerProbeMax: the wait between probes doubles up to
// BreakerProbeMax even when BackoffMax is far longer (the defaults: 5m
// against 1h), so that a sink back after a long outage waits at most
// BreakerProbeMax for the probe that closes the breaker; Status says when
// the next probe goes while one is awaited.
func TestBreakerProbeMax(t *testing.T) {
	const probe, probeMax = 20 * time.Millisecond, 40 * time.Millisecond
	l := memlog.New()
	appendEvents(t, l, "ev", 1, "s")
	q := l.Queue("s")
	sink := newSwitchSink()
	o := options(q, sink)
	o.MaxAttempts = 0
	o.BackoffMin, o.BackoffMax = time.Millisecond, time.Hour
	o.BreakerFailures = 1
	o.BreakerProbe, o.BreakerProbeMax = probe, probeMax
	d, _ := start(t, o)

	waitFor(t, "the breaker to open", func() bool { return d.Status().Open })
	waitFor(t, "the next probe in Status", func() bool { return !d.Status().NextProbe.IsZero() })
	if in := time.Until(d.Status().NextProbe); in > probeMax {
		t.Errorf("Status().NextProbe is %v away, want at most BreakerProbeMax %v", in, probeMax)
	}
	// Without the bound the gaps would be 20, 40, 80, ... 2560 ms, the
	// ninth probe 5 s after the first failed call.
	waitWithin(t, 3*time.Second, "nine probes", func() bool { return len(sink.calls()) >= 10 })
	sink.mu.Lock()
	started := slices.Clone(sink.startedAt)
	sink.mu.Unlock()
	for i := 2; i < 10; i++ {
		if gap := started[i].Sub(started[i-1]); gap > probeMax+250*time.Millisecond {
			t.Errorf("probe %d came %v after the one before, want about BreakerProbeMax %v (BackoffMax is 1h)", i, gap, probeMax)
		}
	}

	sink.up.Store(true)
	waitStats(t, q, pipeline.QueueStats{})
	if st := d.Status(); st.Open || !st.NextProbe.IsZero() {
		t.Errorf("Status() after the sink came back = %+v, want closed with no next probe", st)
	}
}

// TestBreakerClosingHastensTheFailedRun: a sink down with a Retry-After
// of an hour (a 429, a 503 in maintenance) fails the calls that open the
// breaker, and their events are scheduled an hour ahead. New events come
// meanwhile; a probe of one fails, the sink comes back, the next probe
// closes the breaker, and every event is delivered at once: the retries
// scheduled by the failed run are brought forward, not left an hour
// behind a sink that is back.
func TestBreakerClosingHastensTheFailedRun(t *testing.T) {
	l := memlog.New()
	appendEvents(t, l, "ev", 10, "s")
	q := l.Queue("s")
	var up atomic.Bool
	sink := &fakeSink{}
	throttled := each(sdk.Retry(time.Hour, errors.New("429 Too Many Requests, Retry-After: 3600")))
	sink.answer = func(call int, batch []sdk.Event) ([]sdk.Result, error) {
		if up.Load() {
			return nil, nil
		}
		return throttled(call, batch)
	}
	var bl breakerLog
	o := options(q, sink)
	o.MaxAttempts = 0
	o.BatchMax = 5
	o.BackoffMin, o.BackoffMax = time.Millisecond, time.Hour
	o.BreakerFailures = 2
	o.BreakerProbe = 20 * time.Millisecond
	o.OnBreaker = bl.record
	d, _ := start(t, o)
	waitFor(t, "the breaker to open", func() bool { return d.Status().Open })
	if st := stats(t, q); st.Retrying != 10 {
		t.Fatalf("Stats() when the breaker opened = %+v, want the 10 events retrying (in an hour)", st)
	}
	// Traffic goes on during the outage: the probes take it.
	appendEvents(t, l, "new", 3, "s")
	waitFor(t, "a failed probe", func() bool { return len(sink.calls()) >= 3 })
	up.Store(true)
	waitStats(t, q, pipeline.QueueStats{})
	if got, want := bl.get(), []bool{true, false}; !slices.Equal(got, want) {
		t.Errorf("OnBreaker calls = %v, want %v", got, want)
	}
}

// TestBreakerFirstProbeKeepsBackoff: when the first probe of an open
// breaker succeeds, the failed calls that opened it may have been events
// failing on their own while little else flowed: their retries keep their
// time (they are not hastened).
func TestBreakerFirstProbeKeepsBackoff(t *testing.T) {
	l := memlog.New()
	appendEvents(t, l, "bad", 4, "s")
	q := l.Queue("s")
	sink := &fakeSink{}
	sink.answer = func(_ int, batch []sdk.Event) ([]sdk.Result, error) {
		out := make([]sdk.Result, len(batch))
		for i, e := range batch {
			out[i] = sdk.Delivered()
			if strings.HasPrefix(e.ID, "bad") {
				out[i] = sdk.Retry(time.Hour, errors.New("500 for this row"))
			}
		}
		return out, nil
	}
	o := options(q, sink)
	o.MaxAttempts = 0
	o.BatchMax = 2
	o.BackoffMin, o.BackoffMax = time.Millisecond, time.Hour
	o.BreakerFailures = 2
	o.BreakerProbe = 20 * time.Millisecond
	d, _ := start(t, o)
	waitFor(t, "the breaker to open", func() bool { return d.Status().Open })
	appendEvents(t, l, "good", 1, "s")
	waitFor(t, "the breaker to close", func() bool { return !d.Status().Open && len(sink.calls()) >= 3 })
	time.Sleep(100 * time.Millisecond)
	if st := stats(t, q); st.Retrying != 4 {
		t.Errorf("Stats() after the good probe = %+v, want the 4 bad events still retrying (in an hour)", st)
	}
	if n := len(sink.calls()); n != 3 {
		t.Errorf("the sink got %d calls, want 3 (two failed, one probe): the bad events keep their hour", n)
	}
}

// TestBreakerProbeGetsPastAFailingEvent: events that fail on their own
// (one tenant's endpoint, a row the database refuses for a while) open
// the breaker when nothing else is flowing; an event that the sink takes,
// appended while it is open, is delivered by a probe, which closes the
// breaker, and the failing events then go to the dead-letter queue. The
// probe used to be the oldest ready entry, retries first, every time: the
// failing events in turn, for up to max_age, with every other event behind
// them.
func TestBreakerProbeGetsPastAFailingEvent(t *testing.T) {
	const probe = 20 * time.Millisecond
	l := memlog.New()
	appendEvents(t, l, "poison", 2, "s")
	q := l.Queue("s")
	sink := &fakeSink{answer: func(_ int, batch []sdk.Event) ([]sdk.Result, error) {
		out := make([]sdk.Result, len(batch))
		for i, e := range batch {
			out[i] = sdk.Delivered()
			if strings.HasPrefix(e.ID, "poison") {
				out[i] = sdk.Retry(0, errors.New("503 from this tenant's endpoint"))
			}
		}
		return out, nil
	}}
	var bl breakerLog
	o := options(q, sink)
	o.MaxAttempts = 3
	o.BackoffMin, o.BackoffMax = time.Millisecond, 2*probe
	o.BreakerFailures = 2
	o.BreakerProbe = probe
	o.OnBreaker = bl.record
	d, _ := start(t, o)

	waitFor(t, "the breaker to open on the failing events", func() bool { return d.Status().Open })
	ok := appendEvents(t, l, "ok", 1, "s")[0]
	if !d.Status().Open {
		t.Fatal("premise: the breaker closed before the good event was appended")
	}
	waitStats(t, q, pipeline.QueueStats{Dead: 2})

	var okCalls [][]string
	for _, b := range sink.calls() {
		if slices.Contains(ids(b), ok) {
			okCalls = append(okCalls, ids(b))
		}
	}
	if len(okCalls) != 1 || len(okCalls[0]) != 1 {
		t.Errorf("calls with %s = %v, want one, a probe of that event alone", ok, okCalls)
	}
	if got := bl.get(); len(got) < 2 || !got[0] || got[1] {
		t.Errorf("OnBreaker calls = %v, want it opened and then closed", got)
	}
	// The probes cost the failing events no attempt: attempts 1 and 2
	// opened the breaker, and 3, after it closed, was their last.
	dl, err := q.DeadLetters(context.Background(), 0, 10)
	if err != nil || len(dl) != 2 {
		t.Fatalf("DeadLetters() = %d entries, %v, want 2", len(dl), err)
	}
	for _, e := range dl {
		if e.Attempts != o.MaxAttempts || !strings.Contains(e.Err, "gave up after 3 attempts") {
			t.Errorf("dead letter %s: %d attempts, %q; want %d", e.Event.ID, e.Attempts, e.Err, o.MaxAttempts)
		}
	}
}

// TestProbesRotateThroughADownSink: while a sink is down, the probes take
// one event at a time, each a different one until every event waiting has
// been tried, then again from the oldest; a failed probe costs its event
// no attempt, and all of them are delivered, none left held, once the sink
// returns.
func TestProbesRotateThroughADownSink(t *testing.T) {
	l := memlog.New()
	evs := appendEvents(t, l, "ev", 3, "s")
	q := l.Queue("s")
	sink := newSwitchSink()
	o := options(q, sink)
	o.MaxAttempts = 0
	o.BackoffMin, o.BackoffMax = time.Millisecond, 10*time.Millisecond
	o.BreakerFailures = 1
	o.BreakerProbe = 5 * time.Millisecond
	d, _ := start(t, o)
	waitFor(t, "the breaker to open", func() bool { return d.Status().Open })
	waitFor(t, "eight probes", func() bool { return len(sink.calls()) >= 9 })
	probes := sink.calls()[1:9]
	var got []string
	for i, b := range probes {
		if len(b) != 1 {
			t.Fatalf("probe %d: %d events, want 1", i+1, len(b))
		}
		got = append(got, b[0].ID)
	}
	// Each round tries the three events once, in the order Fetch gives
	// them (retries by due time); a round ends when none is left untried.
	for r := 0; r+3 <= len(got); r += 3 {
		if round := slices.Sorted(slices.Values(got[r : r+3])); !slices.Equal(round, evs) {
			t.Errorf("probes %d-%d = %v, want each event once (all probes: %v)", r+1, r+3, got[r:r+3], got)
		}
	}
	sink.up.Store(true)
	waitStats(t, q, pipeline.QueueStats{})
	if d.Status().Open {
		t.Error("Status().Open = true after the sink came back, want false")
	}
	calls := sink.calls()
	for _, b := range calls[len(calls)-2:] {
		for _, e := range b {
			if e.Attempt != 2 {
				t.Errorf("%s delivered at attempt %d, want 2: the first call was 1, and the probes count none", e.ID, e.Attempt)
			}
		}
	}
}

// TestOutageLongerThanRetryBudget runs the defaults' shape scaled down (no
// attempt limit, MaxAge far away, backoff up to BackoffMax, breaker after
// 5 failed calls) against a sink that is down for longer than the old
// budget of 12 attempts from BackoffMin to BackoffMax: nothing is
// dead-lettered, the calls during the outage are few, and everything is
// delivered once the sink returns, new events in log order (P5).
func TestOutageLongerThanRetryBudget(t *testing.T) {
	const (
		bmin, bmax = 5 * time.Millisecond, 50 * time.Millisecond
		// The old budget: 12 attempts, each waiting at most bmax.
		oldBudget = 12 * bmax
	)
	l := memlog.New()
	before := appendEvents(t, l, "before", 20, "s")
	q := l.Queue("s")
	sink := newSwitchSink()
	o := options(q, sink)
	o.BatchMax = 8
	o.MaxAttempts = 0
	o.MaxAge = time.Hour
	o.BackoffMin, o.BackoffMax = bmin, bmax
	o.BreakerFailures = 5
	o.BreakerProbe = 10 * time.Millisecond
	d, _ := start(t, o)

	waitFor(t, "the breaker to open", func() bool { return d.Status().Open })
	during := appendEvents(t, l, "during", 20, "s")
	down := time.Now()
	waitFor(t, "an outage twice the old retry budget", func() bool { return time.Since(down) > 2*oldBudget })
	if st := stats(t, q); st.Dead != 0 {
		t.Fatalf("Stats().Dead = %d after an outage of %v, want 0", st.Dead, time.Since(down))
	}
	calls := sink.calls()
	outageCalls := len(calls)
	for i, b := range calls[5:] {
		if len(b) != 1 {
			t.Errorf("probe %d: batch of %d events, want 1", i+1, len(b))
		}
	}
	// 5 failed calls, then probes at 10, 20, 40, 50, 50 ms...: far fewer
	// than the 40 events × 12 attempts the old defaults would have spent.
	if outageCalls > 5+int(2*oldBudget/(10*time.Millisecond)) {
		t.Errorf("Deliver calls during the outage = %d, want few (one probe per interval)", outageCalls)
	}

	sink.up.Store(true)
	waitStats(t, q, pipeline.QueueStats{})
	got := delivered(sink, outageCalls)
	if len(got) != len(before)+len(during) {
		t.Fatalf("events delivered after the sink returned = %d, want %d", len(got), len(before)+len(during))
	}
	// P5: events delivered at their first try arrive in log order (a probe
	// may have tried some of those appended during the outage: they are
	// retried events, which may come after later ones).
	tries := map[string]int{} // an event in more than one call was tried before
	for _, b := range sink.calls() {
		for _, e := range b {
			tries[e.ID]++
		}
	}
	first := func(id string) bool { return tries[id] == 1 }
	var gotDuring, wantDuring []string
	for _, id := range got {
		if strings.HasPrefix(id, "during") && first(id) {
			gotDuring = append(gotDuring, id)
		}
	}
	for _, id := range during {
		if first(id) {
			wantDuring = append(wantDuring, id)
		}
	}
	if len(wantDuring) < len(during)/2 || !slices.Equal(gotDuring, wantDuring) {
		t.Errorf("events appended during the outage, at their first attempt, arrived in order %v, want log order %v (of %d)", gotDuring, wantDuring, len(during))
	}
}

// TestPause checks that a paused dispatcher takes nothing, also when Pause
// came while it waited for entries, and that Resume delivers everything.
func TestPause(t *testing.T) {
	tests := []struct {
		name        string
		startPaused bool
	}{
		{"paused at start", true},
		{"paused while waiting for entries", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := memlog.New()
			q := &spyQueue{Queue: l.Queue("s")}
			sink := &fakeSink{}
			o := options(q, sink)
			o.BatchWait = time.Millisecond
			o.Paused = tt.startPaused
			d, _ := start(t, o)
			if !tt.startPaused {
				// The queue is empty: the dispatcher waits in Fetch.
				waitFor(t, "the dispatcher to wait for entries", func() bool { return q.fetchCalls() > 0 })
				if !d.Pause() {
					t.Fatalf("Pause() = false on a running dispatcher, want true")
				}
			}
			if d.Pause() {
				t.Errorf("Pause() = true on a paused dispatcher, want false")
			}
			if st := d.Status(); !st.Paused {
				t.Fatalf("Status() = %+v, want Paused", st)
			}
			want := appendEvents(t, l, "ev", 5, "s")
			// The dispatcher waits for Resume, with the events ready: only
			// setPaused wakes it there, so from now on it takes nothing, and
			// whatever it took before it got there is counted already.
			stacks.WaitBlocked(t, "dispatch.(*Dispatcher).waitResumed", 1)
			if fetches, _, _ := q.snapshot(); fetches != 0 || len(sink.calls()) != 0 {
				t.Fatalf("paused: %d fetches, %d Deliver calls, want none", fetches, len(sink.calls()))
			}
			if !d.Resume() {
				t.Fatalf("Resume() = false on a paused dispatcher, want true")
			}
			waitStats(t, q, pipeline.QueueStats{})
			var got []string
			for _, b := range sink.calls() {
				got = append(got, ids(b)...)
			}
			if !slices.Equal(got, want) {
				t.Errorf("delivered after Resume = %v, want %v", got, want)
			}
		})
	}
}

// TestRate checks that Rate cuts batches to one second's worth and spaces
// deliveries so that no more than Rate events per second (after the
// initial bucket) reach the sink.
func TestRate(t *testing.T) {
	const rate = 100.0
	l := memlog.New()
	appendEvents(t, l, "ev", 150, "s")
	q := l.Queue("s")
	sink := &fakeSink{}
	o := options(q, sink)
	o.BatchMax = 500
	o.Rate = rate
	begin := time.Now()
	run(t, o)
	waitStats(t, q, pipeline.QueueStats{})
	elapsed := time.Since(begin)

	n := 0
	for i, b := range sink.calls() {
		if len(b) > int(rate) {
			t.Errorf("call %d: batch of %d, want <= %v (one second's worth)", i+1, len(b), rate)
		}
		n += len(b)
	}
	if n != 150 {
		t.Errorf("events delivered = %d, want 150", n)
	}
	// A full bucket (100) goes at once; the other 50 take 0.5 s at 100/s.
	if want := 450 * time.Millisecond; elapsed < want {
		t.Errorf("150 events at %v/s took %v, want >= %v", rate, elapsed, want)
	}
}

// TestBreakerClosesWithNothingToProbe: when the events that opened the
// breaker leave without a probe that succeeds, and nothing else waits to
// be probed, the breaker closes at once (no new event needed) and the log
// says why; the next event is delivered as usual. On every log that holds.
func TestBreakerClosesWithNothingToProbe(t *testing.T) {
	const closedMsg = "sink circuit breaker closed: nothing is left to probe (no event ready or retrying); deliveries resume with the next event"
	tests := []struct {
		name string
		n    int // events of key "a" appended at first
		opts func(o *dispatch.Options)
		// act makes the events leave once the breaker is open.
		act func(t *testing.T, l pipeline.Log, g *dispatch.GiveUps)
		// want is the queue once they left; the breaker must then close.
		want pipeline.QueueStats
	}{{
		name: "given up on by an operator",
		n:    1,
		act:  func(t *testing.T, l pipeline.Log, g *dispatch.GiveUps) { giveUp(t, g, l, "stale", "ev-00000") },
		want: pipeline.QueueStats{Dead: 1},
	}, {
		name: "out of max_attempts as the breaker opens",
		n:    1,
		opts: func(o *dispatch.Options) { o.MaxAttempts = 2 }, // its 2nd failed call opens the breaker
		want: pipeline.QueueStats{Dead: 1},
	}, {
		name: "out of max_age as a probe",
		n:    1,
		opts: func(o *dispatch.Options) { o.MaxAge = 300 * time.Millisecond },
		want: pipeline.QueueStats{Dead: 1},
	}, {
		// The two later events of the key are held behind its dead head,
		// counted as retrying, but no probe can take them.
		name: "order_on_dead block: the key's later events held behind its dead head",
		n:    3,
		opts: func(o *dispatch.Options) { o.OrderKey, o.OrderBlockOnDead = bodyKey, true },
		act:  func(t *testing.T, l pipeline.Log, g *dispatch.GiveUps) { giveUp(t, g, l, "stale", "ev-00000") },
		want: pipeline.QueueStats{Retrying: 2, Dead: 1},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for name, open := range orderLogs(t) {
				t.Run(name, func(t *testing.T) {
					l := open(t)
					appendKeyed(t, l, 0, tt.n, func(int) string { return "a" })
					q := l.Queue("s")
					sink := newSwitchSink()
					var g dispatch.GiveUps
					var bl breakerLog
					buf := &testlog.Buffer{}
					o := options(q, sink)
					o.MaxAttempts, o.BreakerFailures, o.BreakerProbe = 0, 2, 20*time.Millisecond
					o.BackoffMin, o.BackoffMax = time.Millisecond, 40*time.Millisecond
					o.GiveUps, o.OnBreaker = &g, bl.record
					o.Logger = slog.New(slog.NewJSONHandler(buf, nil))
					if tt.opts != nil {
						tt.opts(&o)
					}
					d, _ := start(t, o)
					waitFor(t, "the breaker to open", func() bool { return len(bl.get()) > 0 })
					if tt.act != nil {
						// Probes that fail keep the breaker open meanwhile.
						calls := len(sink.calls())
						waitFor(t, "two probes", func() bool { return len(sink.calls()) >= calls+2 })
						if !d.Status().Open {
							t.Fatalf("the breaker closed while its event was still failing (breaker changes %v)", bl.get())
						}
						tt.act(t, l, &g)
					}
					waitStats(t, q, tt.want)
					waitFor(t, "the breaker to close", func() bool { return len(bl.get()) >= 2 })
					if got := bl.get(); !slices.Equal(got, []bool{true, false}) || d.Status().Open {
						t.Errorf("breaker changes = %v, Status().Open = %v; want [true false], false", got, d.Status().Open)
					}
					if got := buf.Lines(t, closedMsg); len(got) != 1 {
						t.Errorf("log has %d lines %q, want 1; log:\n%s", len(got), closedMsg, buf)
					}

					sink.up.Store(true)
					calls := len(sink.calls())
					appendKeyed(t, l, tt.n, 1, func(int) string { return "b" })
					want := tt.want
					waitFor(t, "the next event delivered", func() bool { return stats(t, q) == want && len(sink.calls()) > calls })
					if got := bl.get(); !slices.Equal(got, []bool{true, false}) {
						t.Errorf("breaker changes after the next event = %v, want [true false]", got)
					}
				})
			}
		})
	}
}

// walkCounting is a badgerlog queue that counts its whole-queue walks
// (Stats: every retry and dead entry, 60 ms per 200,000).
type walkCounting struct {
	pipeline.Queue
	walks atomic.Int64
}

func (q *walkCounting) Stats(ctx context.Context) (pipeline.QueueStats, error) {
	q.walks.Add(1)
	return q.Queue.Stats(ctx)
}

func (q *walkCounting) CountWaiting(ctx context.Context, maxRetrying int) (int, int, error) {
	return q.Queue.(dispatch.WaitingCounter).CountWaiting(ctx, maxRetrying)
}

// TestOpenBreakerDoesNotWalkTheQueue: while the breaker is open the
// dispatcher looks after every batch whether anything is left to probe,
// and a batch given up on goes on to the next at once: an operator's
// give-ups of 1,000 events were 1,000 walks of every retry and dead entry
// of the queue (a million after a day's outage: a second each). It now
// asks the queue to count the retrying entries only as far as it needs,
// and the breaker still closes when nothing is left.
func TestOpenBreakerDoesNotWalkTheQueue(t *testing.T) {
	for name, open := range orderLogs(t) {
		if name != "badgerlog" {
			continue
		}
		l := open(t)
		const n = 60
		appendKeyed(t, l, 0, n, func(i int) string { return "k" })
		q := &walkCounting{Queue: l.Queue("s")}
		sink := newSwitchSink()
		var g dispatch.GiveUps
		var bl breakerLog
		o := options(q, sink)
		o.MaxAttempts, o.BreakerFailures, o.BreakerProbe = 0, 2, 20*time.Millisecond
		o.BackoffMin, o.BackoffMax = time.Millisecond, 40*time.Millisecond
		o.GiveUps, o.OnBreaker = &g, bl.record
		start(t, o)
		waitFor(t, "the breaker to open", func() bool { return len(bl.get()) > 0 })
		var ids []string
		for i := range n {
			ids = append(ids, fmt.Sprintf("ev-%05d", i))
		}
		giveUp(t, &g, l, "stale", ids...)
		waitStats(t, l.Queue("s"), pipeline.QueueStats{Dead: n})
		waitFor(t, "the breaker to close", func() bool { return len(bl.get()) >= 2 })
		if w := q.walks.Load(); w > 0 {
			t.Errorf("the open breaker walked the whole queue %d times for %d events given up on, want none", w, n)
		}
	}
}

// TestProbeNow: a sink down with a Retry-After of an hour opens the
// breaker, whose next probe is an hour away; it comes back, and an
// operator (pipelined sinks retry-now) makes the queue's retries due now
// and asks for a probe: the probe goes at once, closes the breaker, and
// every event is delivered, none an hour later. ProbeNow on a closed
// breaker does nothing; on a paused dispatcher the probe waits for
// Resume.
func TestProbeNow(t *testing.T) {
	l := memlog.New()
	appendEvents(t, l, "ev", 10, "s")
	q := l.Queue("s")
	var up atomic.Bool
	sink := &fakeSink{}
	throttled := each(sdk.Retry(time.Hour, errors.New("503 Service Unavailable, Retry-After: 3600")))
	sink.answer = func(call int, batch []sdk.Event) ([]sdk.Result, error) {
		if up.Load() {
			return nil, nil
		}
		return throttled(call, batch)
	}
	o := options(q, sink)
	o.MaxAttempts = 0
	o.BatchMax = 5
	o.BackoffMin, o.BackoffMax = time.Millisecond, time.Hour
	o.BreakerFailures = 2
	o.BreakerProbe = time.Hour
	d, _ := start(t, o)
	waitFor(t, "the breaker to open", func() bool { return d.Status().Open })
	waitFor(t, "the next probe in Status", func() bool { return !d.Status().NextProbe.IsZero() })
	if st := stats(t, q); st.Retrying != 10 {
		t.Fatalf("Stats() when the breaker opened = %+v, want the 10 events retrying (in an hour)", st)
	}
	d.Pause()
	up.Store(true)
	if !d.ProbeNow() {
		t.Fatal("ProbeNow() on an open breaker = false, want true")
	}
	n, err := q.(pipeline.RetryHastener).HastenRetries(context.Background(), &pipeline.RetryWalk{}, 100)
	if err != nil || n != 10 {
		t.Fatalf("HastenRetries = %d, %v; want 10, nil", n, err)
	}
	calls := len(sink.calls())
	if !sleepCheck(200*time.Millisecond, func() bool { return len(sink.calls()) == calls }) {
		t.Fatal("a paused dispatcher called its sink after ProbeNow")
	}
	d.Resume()
	waitWithin(t, 5*time.Second, "every event delivered after ProbeNow", func() bool {
		st := stats(t, q)
		return st == pipeline.QueueStats{}
	})
	if d.Status().Open {
		t.Error("Status().Open after the probe delivered, want false")
	}
	if d.ProbeNow() {
		t.Error("ProbeNow() on a closed breaker = true, want false")
	}
}

// sleepCheck reports whether ok stays true for d.
func sleepCheck(d time.Duration, ok func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if !ok() {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return ok()
}

// parkingSink answers as an http receiver with a Retry-After of an hour
// does until back is set: the batch's first event retried, the rest not
// attempted, all an hour ahead (parked); then it delivers every event.
func parkingSink(back *atomic.Bool) *fakeSink {
	return &fakeSink{answer: func(_ int, batch []sdk.Event) ([]sdk.Result, error) {
		out := make([]sdk.Result, len(batch))
		for i := range out {
			switch {
			case back.Load():
				out[i] = sdk.Delivered()
			case i == 0:
				out[i] = sdk.Retry(time.Hour, errors.New("POST https://crm.example/hook answered 503 Service Unavailable"))
			default:
				out[i] = sdk.NotAttempted(time.Hour, errors.New("not sent: the receiver answered 503 with Retry-After"))
			}
		}
		return out, nil
	}}
}

// parkTen appends ten events for sink s to l and starts a dispatcher of q
// (l's queue of s, or one wrapping it) on a parkingSink, logging to the
// returned buffer; it returns once the sink's first call parked all ten
// an hour ahead. Setting back brings the receiver back.
func parkTen(t *testing.T, l *memlog.Log, q pipeline.Queue) (sink *fakeSink, back *atomic.Bool, buf *testlog.Buffer) {
	t.Helper()
	buf, back = &testlog.Buffer{}, &atomic.Bool{}
	appendEvents(t, l, "parked", 10, "s")
	sink = parkingSink(back)
	o := options(q, sink)
	o.MaxAttempts = 0
	o.BackoffMin, o.BackoffMax = time.Millisecond, time.Minute
	o.Logger = slog.New(slog.NewTextHandler(buf, nil))
	start(t, o)
	waitFor(t, "the 10 events parked an hour ahead", func() bool {
		st := stats(t, l.Queue("s"))
		return st.Retrying == 10 && st.Ready == 0 && len(sink.calls()) == 1
	})
	return sink, back, buf
}

// TestParkedEventsGoWhenTheSinkTakesEventsAgain: a receiver down for
// maintenance answers 503 with Retry-After of an hour, and the sink sends
// no more of the batch (the rest not attempted, an hour too). The
// receiver is back in a minute: the next event is delivered at once, and
// the parked events with it, not an hour later. An event that fails on its
// own with a delay (TestBreakerFirstProbeKeepsBackoff) keeps its time.
func TestParkedEventsGoWhenTheSinkTakesEventsAgain(t *testing.T) {
	l := memlog.New()
	q := l.Queue("s")
	sink, back, buf := parkTen(t, l, q)
	back.Store(true)
	appendEvents(t, l, "new", 1, "s")
	waitFor(t, "every event delivered", func() bool { return stats(t, q) == pipeline.QueueStats{} })
	delivered := 0
	for _, b := range sink.calls()[1:] {
		delivered += len(b)
	}
	if delivered != 11 {
		t.Errorf("%d events delivered after the receiver was back, want 11 (each once)", delivered)
	}
	if !strings.Contains(buf.String(), `msg="the sink takes events again: events the sink had asked to wait brought forward" sink=s events=10`) {
		t.Errorf("no line says the parked events were brought forward:\n%s", buf.String())
	}
}

// TestParkedEventsBroughtForwardAtABackoffsPace: a receiver that takes
// some events and keeps refusing others with a Retry-After of an hour (it
// throttles one tenant) is not sent the refused ones again at each event
// it takes: one bring-forward, refused again, and the next waits
// BreakerProbe (doubling). Their attempts stay few, and none is
// dead-lettered (max_attempts = 3), as the receiver asked them to wait.
func TestParkedEventsBroughtForwardAtABackoffsPace(t *testing.T) {
	l := memlog.New()
	appendEvents(t, l, "throttled", 5, "s")
	q := l.Queue("s")
	sink := &fakeSink{answer: func(_ int, batch []sdk.Event) ([]sdk.Result, error) {
		out := make([]sdk.Result, len(batch))
		cut := false
		for i, e := range batch {
			switch {
			case cut:
				out[i] = sdk.NotAttempted(time.Hour, errors.New("not sent: the receiver answered 429 with Retry-After"))
			case strings.HasPrefix(e.ID, "throttled"):
				out[i], cut = sdk.Retry(time.Hour, errors.New("429 Too Many Requests")), true
			default:
				out[i] = sdk.Delivered()
			}
		}
		return out, nil
	}}
	o := options(q, sink)
	o.MaxAttempts = 3
	o.BackoffMin, o.BackoffMax = time.Millisecond, 2*time.Hour
	o.BreakerProbe, o.BreakerProbeMax = time.Minute, 5*time.Minute
	start(t, o)
	waitFor(t, "the 5 events parked", func() bool { return stats(t, q).Retrying == 5 })
	for i := range 6 {
		id := appendEvents(t, l, fmt.Sprintf("taken-%d", i), 1, "s")[0]
		waitFor(t, id+" delivered", func() bool {
			calls := sink.calls()
			taken := slices.ContainsFunc(calls, func(b []sdk.Event) bool {
				return slices.ContainsFunc(b, func(e sdk.Event) bool { return e.ID == id })
			})
			st := stats(t, q)
			return taken && sink.returned() == len(calls) && st.Ready == 0 && st.Retrying == 5
		})
	}
	attempts := 0
	for _, b := range sink.calls() {
		for _, e := range b {
			if strings.HasPrefix(e.ID, "throttled") {
				attempts++
				break // the first of a batch is the one attempted
			}
		}
	}
	if attempts != 2 {
		t.Errorf("the throttled events were sent in %d calls, want 2: the first, and one bring-forward (the next waits a minute)", attempts)
	}
	if st := stats(t, q); st.Dead != 0 {
		t.Errorf("Stats() = %+v, want none dead: the receiver asked them to wait", st)
	}
}

// halfHastener moves the first half of the seqs it is asked for, then
// fails, as a log that fills its disk in the middle of a Hasten does.
type halfHastener struct{ pipeline.Hastener }

func (h halfHastener) Hasten(ctx context.Context, seqs []uint64) (int, error) {
	n, err := h.Hastener.Hasten(ctx, seqs[:len(seqs)/2])
	if err != nil {
		return n, err
	}
	return n, errors.New("write event log: no space left on device")
}

// TestParkedEventsBroughtForwardInPart: when the log moves some parked
// events and then fails, the line says how many went and that the rest
// keep their time, not that none could.
func TestParkedEventsBroughtForwardInPart(t *testing.T) {
	l := memlog.New()
	mq := l.Queue("s")
	_, back, buf := parkTen(t, l, halfHastener{mq.(pipeline.Hastener)})
	back.Store(true)
	appendEvents(t, l, "new", 1, "s")
	waitFor(t, "the new event and the 5 brought forward delivered", func() bool { return stats(t, mq) == pipeline.QueueStats{Retrying: 5} })
	const want = `msg="the sink takes events again: events the sink had asked to wait brought forward in part; the rest are retried at their time" sink=s events=5 asked=10 keep_their_time=0 err="write event log: no space left on device"`
	waitFor(t, "the line", func() bool { return strings.Contains(buf.String(), want) })
	if strings.Contains(buf.String(), "could not bring forward") {
		t.Errorf("a line says none could be brought forward, when 5 were:\n%s", buf.String())
	}
}

// TestFailedProbesAreLogged: each failed probe of an open breaker says so
// with the sink's error, at information level while the sink fails as the
// opening line said, and as a warning when its failure changes (refused,
// then 503): an outage of a day is not silent after its first line.
func TestFailedProbesAreLogged(t *testing.T) {
	const probe = 10 * time.Millisecond
	buf := &testlog.Buffer{}
	l := memlog.New()
	appendEvents(t, l, "ev", 1, "s")
	q := l.Queue("s")
	var why atomic.Value
	why.Store("dial tcp 127.0.0.1:443: connection refused")
	sink := &fakeSink{answer: func(int, []sdk.Event) ([]sdk.Result, error) {
		return nil, errors.New(why.Load().(string))
	}}
	o := options(q, sink)
	o.MaxAttempts = 0
	o.BackoffMin, o.BackoffMax = time.Millisecond, probe
	o.BreakerFailures, o.BreakerProbe, o.BreakerProbeMax = 2, probe, probe
	o.Logger = slog.New(slog.NewTextHandler(buf, nil))
	d, _ := start(t, o)
	waitFor(t, "the breaker to open", func() bool { return d.Status().Open })
	const same = `level=INFO msg="sink circuit breaker: a probe failed; deliveries still wait" sink=s last_error="dial tcp 127.0.0.1:443: connection refused" next_probe_in=10ms`
	waitFor(t, "a failed probe's line", func() bool { return strings.Contains(buf.String(), same) })
	why.Store("POST https://crm.example/hook answered 503 Service Unavailable")
	const changed = `level=WARN msg="sink circuit breaker: a probe failed otherwise than before; deliveries still wait" sink=s last_error="POST https://crm.example/hook answered 503 Service Unavailable"`
	waitFor(t, "the warning that the failure changed", func() bool { return strings.Contains(buf.String(), changed) })
	after := func() string { _, rest, _ := strings.Cut(buf.String(), changed); return rest }
	waitFor(t, "the next probe's line", func() bool {
		return strings.Contains(after(), "level=INFO msg=\"sink circuit breaker: a probe failed;")
	})
	if n := strings.Count(buf.String(), "otherwise than before"); n != 1 {
		t.Errorf("%d warnings that the failure changed, want 1 (it changed once):\n%s", n, buf.String())
	}
}
