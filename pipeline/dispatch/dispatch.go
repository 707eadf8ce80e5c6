package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/internal/backoff"
	"github.com/pipelined/pipelined/pipeline/internal/lograte"
	"github.com/pipelined/pipelined/pipeline/telemetry"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/protocol"
)

// Queue is what a dispatcher uses of a sink's queue: the two methods of
// [pipeline.Queue] that take entries and record their outcomes. Every
// pipeline.Queue is one.
type Queue interface {
	// Fetch is [pipeline.Queue.Fetch].
	Fetch(ctx context.Context, max int) ([]pipeline.Delivery, error)
	// Settle is [pipeline.Queue.Settle].
	Settle(ctx context.Context, s []pipeline.Settlement) error
}

var _ Queue = pipeline.Queue(nil)

// Deliverer is the plugin side of a dispatcher: pluginhost.Supervisor.
type Deliverer interface {
	// Deliver hands a batch to the sink and returns one result per event,
	// or an error for the whole batch.
	Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error)
}

// Starter is implemented by a Deliverer that can tell whether its plugin
// is up. The dispatcher waits for Start to succeed before it takes entries
// from the queue, so a plugin that cannot start costs no event an attempt.
type Starter interface {
	Start(ctx context.Context) error
}

// Options configures a [Dispatcher].
type Options struct {
	// Sink names the sink, for logs and errors.
	Sink string
	// Queue is the sink's queue; Deliverer its plugin.
	Queue     Queue
	Deliverer Deliverer
	// BatchMax and BatchWait shape batches: a batch is sent when it holds
	// BatchMax entries, or BatchWait after its first entry was ready; with
	// OrderKey, also at once when a key of the batch has later events held
	// behind it, which can only go after this batch.
	BatchMax  int
	BatchWait time.Duration
	// MaxAttempts is how many deliveries an entry gets before it goes to
	// the dead-letter queue; an event the sink did not attempt
	// ([sdk.NotAttempted]) is not one. Zero means no limit.
	MaxAttempts int
	// MaxAge sends an entry to the dead-letter queue when it fails (or is
	// not attempted) and its first failure (or not-attempted answer) seen
	// by this dispatcher is at least MaxAge ago
	// (wall time: an open breaker or a pause does not make it age
	// faster). The first failure is remembered in memory only, so a
	// restart of the daemon, or a new dispatcher after a reload, starts
	// the clock again: it can postpone the dead-letter queue, never
	// hasten it. Zero means no limit.
	MaxAge time.Duration
	// BackoffMin and BackoffMax bound the delay before a retry.
	BackoffMin, BackoffMax time.Duration
	// CallTimeout bounds one Deliver call. Zero means 60 s.
	CallTimeout time.Duration
	// BreakerFailures is how many failed calls in a row open the circuit
	// breaker. A call fails when the plugin call fails as a whole or every
	// event of the batch that the sink attempted is to be retried (a call
	// of which it attempted nothing neither fails nor succeeds). Zero
	// means no breaker.
	BreakerFailures int
	// BreakerProbe is the wait before the first probe of an open breaker;
	// it doubles after each failed probe, up to BreakerProbeMax or
	// BackoffMax, whichever is lower, and never below BreakerProbe. Zero
	// means 30 s.
	BreakerProbe time.Duration
	// BreakerProbeMax bounds the wait between probes of an open breaker,
	// and so how long after the sink is back its queue starts to drain.
	// Zero means BackoffMax alone.
	BreakerProbeMax time.Duration
	// Rate, when more than zero, bounds the events handed to the plugin
	// per second (a token bucket holding one second's worth, at least 1);
	// batches are cut to that size.
	Rate float64
	// Paused starts the dispatcher paused (see [Dispatcher.Pause]).
	Paused bool
	// Logger receives delivery failures.
	Logger *slog.Logger
	// Observe, if set, is called after each settled batch; for metrics.
	Observe func(Report)
	// OnBreaker, if set, is called when the breaker opens (true) or closes
	// (false); for metrics. It is called from Run's goroutine.
	OnBreaker func(open bool)
	// Tracing, when not nil, makes a span of each attempt of each event
	// in the event's trace; nil is off.
	Tracing *telemetry.Tracer

	// OrderKey, if set, gives each event's order key (delivery.order_key):
	// events of one key are delivered in log order, one at a time, while
	// other keys keep flowing; the Queue must be a [pipeline.Holder]. See
	// order.go.
	OrderKey func(pipeline.Event) (string, error)
	// OrderBlockOnDead keeps a key held while its event is a dead letter
	// (delivery.order_on_dead = "block"), until it is retried or dropped.
	OrderBlockOnDead bool
	// OnOrderKeyError, if set, is called when OrderKey fails; for metrics.
	OnOrderKeyError func()

	// WrapUp, if set, asks the plugin to wrap up its Deliver in flight:
	// to answer at once for what it did, leaving the rest (not attempted).
	// [Dispatcher.Stop] calls it when its ctx's deadline is near and a
	// batch is still in flight (see wrapUpReserve), so that the answer
	// arrives and is settled before the deadline, instead of the batch
	// being given up, and delivered again whole after a restart. ctx
	// bounds the call; the answer comes on the Deliver in flight.
	WrapUp func(ctx context.Context)

	// GiveUps, if set, are the entries an operator gave up on: they go to
	// the dead-letter queue at their next turn (see [GiveUps]). Keep one
	// per sink across dispatchers, so that a reload does not forget it.
	GiveUps *GiveUps
}

// Report counts the outcomes of one batch.
type Report struct {
	Delivered, Retried, Dead int
	// NotAttempted counts the events the sink did not attempt
	// ([sdk.NotAttempted]), queued again without an attempt counted; they
	// are not in Retried.
	NotAttempted int
	Duration     time.Duration
	Err          error // the batch error, if the whole call failed
	// Failure is why the last event of the batch that was not delivered
	// failed (the batch error, or that event's own); "" when all were.
	Failure string
}

// Dispatcher delivers one sink's queue.
type Dispatcher struct {
	o Options

	stopOnce, abandonOnce sync.Once
	stopping              chan struct{} // closed by Stop: take no more entries
	abandon               chan struct{} // closed when Stop's ctx ends: give up the batch in flight
	done                  chan struct{} // closed when Run returns
	limiter               *rate.Limiter // nil: no rate

	mu     sync.Mutex    // guards the fields below
	open   bool          // the breaker is open
	paused bool          // an operator holds delivery
	wake   chan struct{} // closed and replaced when paused changes
	// cancelFetch ends the ctx of the Fetch in progress (see pausedCtx).
	cancelFetch context.CancelFunc
	// inFlight and inFlightSince describe the batch in flight (see
	// Status), set and cleared by deliver.
	inFlight      int
	inFlightSince time.Time
	// nextProbe is when the open breaker's next probe goes (see Status).
	nextProbe time.Time
	// probeNow (capacity 1) ends the wait for the open breaker's next
	// probe (see ProbeNow); emptied when the breaker closes.
	probeNow chan struct{}

	// firstFail maps the seq of an entry that is failing to the time of
	// its first failure seen; only Run's goroutine uses it. It holds at
	// most the entries waiting for a retry.
	firstFail map[uint64]time.Time

	ord *order // per-key order; nil without Options.OrderKey

	// held are the entries that failed as probes of the open breaker and
	// are held (see probeEntry), one per probe at most; only Run's
	// goroutine uses it.
	held []uint64
	// failedRun holds the seqs of the entries of the failed calls in a
	// row (at most BreakerFailures batches): when those calls opened the
	// breaker and a probe closes it, their retries are brought forward
	// (see hastenFailedRun). Only Run's goroutine uses it.
	failedRun []uint64
	// parked holds the seqs of the entries of calls that the sink cut
	// short for longer than the breaker would wait (events not
	// attempted, with a delay: a 503 or 429 with a Retry-After of an
	// hour, up to a day): once a later call delivers events and is not
	// cut short, the sink takes events again, and they are brought
	// forward (see hastenParked). At most maxParked; parkedMore counts
	// those past it, which keep their time.
	//
	// forwardAt paces the bringing forward: none before it. After one,
	// the next call that is cut short again (the receiver takes some
	// events and still throttles) doubles forwardEvery, from
	// BreakerProbe up to BackoffMax, and puts forwardAt that far ahead,
	// so that the events brought forward and refused again are attempted
	// at a backoff's pace, not at each event the receiver takes; one that
	// is not cut short resets both. forwarded says a bring-forward awaits
	// the next call's verdict.
	//
	// Only Run's goroutine uses them.
	parked       map[uint64]struct{}
	parkedMore   int
	forwardAt    time.Time
	forwardEvery time.Duration
	forwarded    bool
	// lastFailure is why the last failed call failed (a Report's
	// Failure), for the line that says the breaker opened. Only Run's
	// goroutine uses it.
	lastFailure string
	// warnedFailure is the failure the last warning of the open breaker
	// named (its opening, or a probe that failed otherwise): see
	// probeFailed. Only Run's goroutine uses it.
	warnedFailure string
	// deadLog bounds the lines that say an event went to the dead-letter
	// queue (see deadLetter).
	deadLog *lograte.Burst
	// retriesLogged is when the last line that said events failed on
	// their own was logged (see retriesLogEvery). Only Run's goroutine
	// uses it.
	retriesLogged time.Time
}

// retriesLogEvery bounds the lines that say a call's events failed on
// their own, which the breaker's lines say nothing of until it opens: one
// per sink and minute, not one per call (or per event) in an outage.
const retriesLogEvery = time.Minute

// deadLetter logs msg, a line that says an event went to the dead-letter
// queue, with args: deadLogBurst of them at once, then one a second per
// sink, the next after a gap saying how many were left out and where they
// are (pipelined dlq list). A receiver that refuses every event (a 400 for
// a schema it changed) dead-letters thousands in a minute: one line each
// would flood the journal, and the dead-letter queue lists them all.
func (d *Dispatcher) deadLetter(log *slog.Logger, msg string, args ...any) {
	now := time.Now()
	ok, n := d.deadLog.AllowAt(now)
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, "suppressed", n, "see", "pipelined dlq list "+d.o.Sink)
	}
	if d.deadLog.Spent(now) { // said now, not at the next dead letter, which may be days away
		args = append(args, "further", "at most one line a second; pipelined dlq list "+d.o.Sink+" lists every one")
	}
	log.Warn(msg, args...)
}

// deadLogBurst is how many dead-letter lines a sink writes at once.
const deadLogBurst = 10

// New returns a dispatcher; start it with Run.
func New(o Options) *Dispatcher {
	if o.BatchMax <= 0 {
		o.BatchMax = 500
	}
	if o.MaxAttempts < 0 {
		o.MaxAttempts = 0
	}
	if o.BreakerProbe <= 0 {
		o.BreakerProbe = 30 * time.Second
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = time.Second
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = o.BackoffMin
	}
	if o.BreakerProbeMax <= 0 || o.BreakerProbeMax > o.BackoffMax {
		o.BreakerProbeMax = o.BackoffMax
	}
	o.BreakerProbeMax = max(o.BreakerProbeMax, o.BreakerProbe)
	if o.CallTimeout <= 0 {
		o.CallTimeout = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{o: o, stopping: make(chan struct{}), abandon: make(chan struct{}), done: make(chan struct{}),
		paused: o.Paused, wake: make(chan struct{}), probeNow: make(chan struct{}, 1), firstFail: map[uint64]time.Time{},
		deadLog: lograte.NewBurst(deadLogBurst, time.Second), parked: map[uint64]struct{}{}, forwardEvery: o.BreakerProbe}
	if o.Rate > 0 {
		burst := max(1, int(math.Ceil(o.Rate)))
		d.limiter = rate.NewLimiter(rate.Limit(o.Rate), burst)
		d.o.BatchMax = min(d.o.BatchMax, burst)
	}
	d.ord = newOrder(d.o)
	return d
}

// Run delivers until ctx is done or [Dispatcher.Stop] is called; call it
// once. A batch already handed to the plugin is finished and settled first
// (the call bounded by CallTimeout, the settling retried while the log
// refuses it), so stopping never strands a delivery that succeeded; only
// Stop's ctx bounds that wait. It returns nil after ctx ends or Stop, or
// once the log halted ([pipeline.ErrHalted]: nothing it delivers could be
// settled, and the daemon stops), or the error that made the queue
// unusable (the log was closed).
func (d *Dispatcher) Run(ctx context.Context) error {
	defer close(d.done)
	ctx, stopTaking := context.WithCancel(ctx)
	// finish bounds the batch in flight: it ends only when Stop gives up.
	finish, giveUp := context.WithCancelCause(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.releaseProbed(ctx)
	}()
	defer giveUp(nil)
	defer stopTaking()
	wg.Go(func() {
		select {
		case <-d.stopping:
			stopTaking()
		case <-ctx.Done():
		}
		select {
		case <-d.abandon:
			giveUp(errStopDeadline)
		case <-finish.Done():
		}
	})
	failures := 0 // failed calls in a row
	probe := d.o.BreakerProbe
	probeFailed := false // a probe of the open breaker failed: the sink was down
	gaveUp := false      // the last batch was all given up on: no call, so no probe either
	probeDue := false    // the wait for the next probe is over (a pause came before it was fetched)
	if d.ord != nil {
		if ok, err := d.loadOrder(ctx); !ok {
			return err
		}
	} else if err := d.releaseAllHeld(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	for {
		if !d.waitResumed(ctx) {
			return nil
		}
		if st, ok := d.o.Deliverer.(Starter); ok {
			if err := st.Start(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				d.o.Logger.Error("sink plugin is not running; deliveries wait", "sink", d.o.Sink, "err", err)
				if !sleep(ctx, time.Second) {
					return nil
				}
				continue
			}
		}
		open := d.Status().Open
		if open && !gaveUp && !probeDue && !d.sleepProbe(ctx, probe) {
			return nil
		}
		probeDue = open
		gaveUp = false
		fctx, cancel := d.pausedCtx(ctx)
		if fctx.Err() != nil {
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			continue // paused: wait for Resume at the loop's start
		}
		var batch []pipeline.Delivery
		var err error
		if open {
			batch, err = d.probeEntry(fctx, finish)
			if err == nil && d.ord != nil {
				batch, _ = d.admit(batch, nil)
			}
		} else {
			batch, err = d.fetch(fctx)
		}
		cancel()
		if err == nil {
			probeDue = false
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, pipeline.ErrClosed) {
				return err
			}
			if errors.Is(err, pipeline.ErrHalted) {
				// Nothing more can be settled: no more batches, and the
				// daemon stops (see pipeline.Halter).
				d.o.Logger.Warn("the event log stopped writing: no more deliveries until the restart", "sink", d.o.Sink)
				return nil
			}
			if fctx.Err() != nil {
				continue // paused while waiting
			}
			d.o.Logger.Error("read sink queue failed", "sink", d.o.Sink, "err", err)
			if !sleep(ctx, time.Second) {
				return nil
			}
			continue
		}
		if d.ord != nil && len(batch) == 0 {
			d.settleHolds(finish) // every entry fetched was held: record that now
		}
		if len(batch) > 0 {
			if batch = d.giveUpOn(finish, batch); len(batch) == 0 {
				gaveUp = true // no call: the breaker learnt nothing, and the next probe need not wait
			}
		}
		if len(batch) > 0 {
			failed, idle := d.deliver(finish, batch, open)
			switch {
			case idle:
				// The sink attempted nothing: it said nothing of itself,
				// and the breaker stays as it was (a probe that was not
				// attempted waits the same interval again). The next call
				// waits BackoffMin, as the batch's events do: with more
				// events ready, a sink that takes nothing would otherwise
				// be handed the whole queue, batch after batch, at once.
				if !open && !sleep(ctx, d.o.BackoffMin) {
					return nil
				}
			case open && failed:
				probe = min(2*probe, d.o.BreakerProbeMax)
				probeFailed = true
				d.probeFailed(probe)
			case failed:
				failures++
				if d.o.BreakerFailures > 0 { // else no breaker: nothing to bring forward, and no bound
					for _, e := range batch {
						d.failedRun = append(d.failedRun, e.Seq)
					}
				}
				if d.o.BreakerFailures > 0 && failures >= d.o.BreakerFailures {
					probe, probeFailed = d.o.BreakerProbe, false
					d.setOpen(true, probe, "")
					open = true
				}
			default:
				failures = 0
				if open && probeFailed {
					d.hastenFailedRun(finish)
				}
				if open {
					d.hastenParked(finish) // those the failed run did not hold
				}
				d.failedRun = nil
				open = false
				d.setOpen(false, 0, "sink circuit breaker closed: deliveries resume")
				d.releaseProbed(finish)
			}
		}
		// The events that failed may leave while the breaker is open
		// without a probe that succeeds (given up on by an operator, out
		// of max_attempts or max_age, or held for good behind a dead
		// head): an open breaker with nothing to probe would stay open
		// until a new event comes. Only the dispatcher settles entries
		// (unless JetStream daemons share the queue), so the queue empties
		// only after one of its batches: look then, once per batch while
		// the breaker is open (never on a closed breaker's path).
		if open && d.nothingToProbe(ctx) {
			failures = 0
			d.failedRun = nil
			d.setOpen(false, 0, "sink circuit breaker closed: nothing is left to probe (no event ready or retrying); deliveries resume with the next event")
			d.releaseProbed(finish)
		}
	}
}

// fetch waits for a first ready entry, then up to BatchWait for more, up
// to BatchMax entries fetched.
//
// With an order key it returns only the entries that may be delivered now
// (see admit; the others are held), and it does not wait when waiting is
// pointless: as soon as an entry of the batch has later events of its key
// held behind it (they can only go after this batch is settled, so a wait
// would delay each of them by BatchWait: one key's backlog would drain at
// one event per BatchWait instead of one per call), or when every entry
// fetched was held (Run records the holds and waits for the next entry).
func (d *Dispatcher) fetch(ctx context.Context) ([]pipeline.Delivery, error) {
	batch, err := d.o.Queue.Fetch(ctx, d.o.BatchMax)
	if err != nil {
		return batch, err
	}
	fetched := len(batch)
	wait := fetched < d.o.BatchMax && d.o.BatchWait > 0
	if d.ord != nil {
		var keys map[string]bool // the keys of the batch, when it may wait
		if wait {
			keys = map[string]bool{}
		}
		var hurry bool
		batch, hurry = d.admit(batch, keys)
		if !wait || hurry || len(batch) == 0 {
			return batch, nil
		}
		return d.fill(ctx, batch, fetched, keys), nil
	}
	if !wait {
		return batch, nil
	}
	return d.fill(ctx, batch, fetched, nil), nil
}

// fill fetches more entries for batch, of which fetched were fetched so
// far, up to BatchMax fetched, for up to BatchWait; with an order key it
// admits them (keys are the batch's, see admit) and stops as soon as
// waiting is pointless (see fetch).
func (d *Dispatcher) fill(ctx context.Context, batch []pipeline.Delivery, fetched int, keys map[string]bool) []pipeline.Delivery {
	wctx, cancel := context.WithTimeout(ctx, d.o.BatchWait)
	defer cancel()
	for hurry := false; fetched < d.o.BatchMax && !hurry; {
		more, err := d.o.Queue.Fetch(wctx, d.o.BatchMax-fetched)
		fetched += len(more)
		if d.ord != nil {
			more, hurry = d.admit(more, keys)
		}
		batch = append(batch, more...)
		if err != nil {
			break // the wait is over (or ctx ended): send what we have
		}
	}
	return batch
}

// deliver sends batch to the plugin and settles every entry. ctx ends only
// when Stop gives up on the batch. probe says the batch is a probe of an
// open breaker. It reports whether the call failed: the plugin call failed
// as a whole, or every event the sink attempted is to be retried (an event
// it did not attempt, [sdk.NotAttempted], says nothing of the sink: a
// batch of which it attempted nothing is neither a failure nor a success,
// which deliver reports as idle).
func (d *Dispatcher) deliver(ctx context.Context, batch []pipeline.Delivery, probe bool) (failed, idle bool) {
	d.setInFlight(len(batch))
	defer d.setInFlight(0)
	events := make([]sdk.Event, len(batch))
	for i, e := range batch {
		events[i] = sdk.Event{
			ID:          e.Event.ID,
			Source:      e.Event.Source,
			Route:       e.Route,
			ReceivedAt:  e.Event.ReceivedAt,
			Headers:     e.Event.Headers,
			Body:        e.Event.Body,
			Transformed: e.Payload,
			Attempt:     e.Attempt,
		}
	}
	var spans []trace.Span
	if d.o.Tracing != nil {
		spans = d.o.Tracing.StartAttempts(d.o.Sink, batch, events)
	}
	if d.limiter != nil {
		// len(batch) is at most the bucket's size, so the reservation holds.
		sleep(ctx, d.limiter.ReserveN(time.Now(), len(batch)).Delay())
	}
	start := time.Now()
	// The call is not bound to Run's ctx: a batch in flight at shutdown is
	// finished and settled, unless Stop gives up on it.
	cctx, cancel := context.WithTimeoutCause(ctx, d.o.CallTimeout,
		fmt.Errorf("sink %s: delivery took longer than %v", d.o.Sink, d.o.CallTimeout))
	results, err := d.call(cctx, events)
	cancel()
	if err == nil && results != nil && len(results) != len(batch) {
		err = fmt.Errorf("plugin answered %d results for a batch of %d events", len(results), len(batch))
	}
	rep := Report{Duration: time.Since(start), Err: err}
	now := time.Now()
	// One backoff draw per attempt number and batch: entries that failed
	// together come back together, in log order, in one batch, instead
	// of being scattered by per-entry jitter into many small calls.
	delays := make(map[int]time.Duration)
	delay := func(attempt int) time.Duration {
		if _, ok := delays[attempt]; !ok {
			delays[attempt] = backoff.Delay(attempt, d.o.BackoffMin, d.o.BackoffMax)
		}
		return delays[attempt]
	}
	result := func(i int) sdk.Result { // the answer for batch[i]
		switch {
		case err != nil:
			return sdk.Retry(0, err)
		case results != nil:
			return results[i]
		}
		return sdk.Delivered()
	}
	retried, notAttempted := 0, 0 // results that ask for a retry (whatever became of them), and that were not attempted
	for i := range batch {
		if r := result(i); !r.IsDelivered() && !r.IsPermanent() {
			if _, na := r.IsNotAttempted(); na {
				notAttempted++
			} else {
				retried++
			}
		}
	}
	// A batch of which the sink attempted nothing (idle), or delivered
	// nothing it attempted (a 429 without Retry-After on the first event,
	// the rest not sent), made no progress: its events not attempted wait
	// at least BackoffMin (see notAttemptedAt), so that a sink that takes
	// nothing, or a receiver that throttles, is not called again at once.
	idle = notAttempted == len(batch)
	stalled := notAttempted+retried == len(batch)
	settle := make([]pipeline.Settlement, len(batch))
	givingUp := d.o.GiveUps.Len() > 0 // one look per batch: most never have any
	var notAttemptedWhy string        // the reason of the batch's last event not attempted
	var notAttemptedAt time.Time      // and when it is due
	var asked []uint64                // entries the sink asked to wait (a delay named)
	var cutShort bool                 // and it did not attempt some of them: it spoke of itself
	for i, e := range batch {
		settle[i] = d.settlement(e, result(i), now, delay, probe, stalled)
		if givingUp && settle[i].Outcome == pipeline.Retry {
			if reason, ok := d.o.GiveUps.reason(e.Seq); ok {
				// Given up on while in flight: this attempt was its last
				// (or, not attempted, it had its last already).
				if settle[i].NotAttempted {
					settle[i] = pipeline.Settlement{Seq: e.Seq, Outcome: pipeline.Dead, Err: givenUpErr(reason, e.LastError), NotAttempted: true}
				} else {
					settle[i] = pipeline.Settlement{Seq: e.Seq, Outcome: pipeline.Dead, Err: givenUpErr(reason, settle[i].Err)}
				}
				delete(d.firstFail, e.Seq)
				d.deadLetter(d.o.Logger, "event given up by an operator failed its last attempt, moved to the dead-letter queue",
					"sink", d.o.Sink, "event_id", e.Event.ID, "reason", reason)
			}
		}
		if !probe && settle[i].Outcome == pipeline.Retry {
			if r := result(i); askedToWait(r) {
				_, na := r.IsNotAttempted()
				cutShort = cutShort || na
				if settle[i].RetryAt.Sub(now) > d.o.BreakerProbeMax {
					asked = append(asked, e.Seq) // a wait the breaker would not make
				}
			}
		}
		switch {
		case settle[i].Outcome == pipeline.Ack:
			rep.Delivered++
		case settle[i].Outcome == pipeline.Retry && settle[i].NotAttempted:
			rep.NotAttempted++
			notAttemptedWhy, notAttemptedAt = settle[i].Err, settle[i].RetryAt
		case settle[i].Outcome == pipeline.Retry:
			rep.Retried++
			rep.Failure = settle[i].Err
		case settle[i].Outcome == pipeline.Dead:
			rep.Dead++
			rep.Failure = settle[i].Err
		}
	}
	switch {
	case err != nil && stopGaveUp(ctx):
		// Stop's caller says what becomes of these events, once per sink.
		d.o.Logger.Debug("delivery given up at the stop deadline", "sink", d.o.Sink, "events", len(batch), "err", cutError(err.Error()))
	case err != nil && probe:
		d.o.Logger.Debug("breaker probe failed", "sink", d.o.Sink, "err", cutError(err.Error()))
	case err != nil && rep.Retried > 0:
		d.o.Logger.Warn("delivery failed, will retry", "sink", d.o.Sink, "events", rep.Retried, "err", cutError(err.Error()))
	case err != nil: // every event settled for good; each has its own line
		d.o.Logger.Warn("delivery failed", "sink", d.o.Sink, "events", len(batch), "err", cutError(err.Error()))
	case !probe && rep.Retried > 0 && time.Since(d.retriesLogged) >= retriesLogEvery:
		// The sink answered, and some events failed on their own (a 503
		// per request, say): not logged one by one, nor by the breaker
		// until it opens; one line a minute says the sink is failing.
		d.retriesLogged = time.Now()
		d.o.Logger.Warn("deliveries failed, will retry (logged at most once a minute per sink)",
			"sink", d.o.Sink, "events", rep.Retried, "batch", len(batch), "last_error", cutError(rep.Failure))
	}
	if rep.NotAttempted > 0 {
		// The sink says why in its own log, once per batch (the http
		// sink's "http receiver slow"); one line here too, not one per event.
		d.o.Logger.Debug("events not attempted by the sink, queued again without an attempt counted",
			"sink", d.o.Sink, "events", rep.NotAttempted, "due_in", notAttemptedAt.Sub(now), "reason", notAttemptedWhy)
	}
	var recorded bool
	if d.ord != nil {
		recorded = d.settleOrdered(ctx, settle) // with the batch's holds and releases, in one call
	} else if probe && d.rotates() {
		recorded = d.settle(ctx, d.holdRetries(settle))
	} else {
		recorded = d.settle(ctx, settle)
	}
	if recorded {
		d.settled(settle)
	}
	switch {
	case cutShort:
		// The sink cut the call short for a while (a 503 or 429 with a
		// Retry-After, the rest of the batch not sent): its events wait
		// for the sink, not for themselves. A retry with a delay alone
		// may be the event's own (a row refused for an hour): it keeps
		// its time when others are delivered.
		if d.forwarded { // brought forward, and the sink was not back
			d.forwardEvery = min(2*d.forwardEvery, d.o.BackoffMax)
			d.forwardAt, d.forwarded = now.Add(d.forwardEvery), false
		}
		d.park(asked)
	case rep.Delivered > 0 && !probe: // a probe's are brought forward as it closes the breaker (Run)
		if d.forwarded {
			d.forwardEvery, d.forwardAt, d.forwarded = d.o.BreakerProbe, time.Time{}, false
		}
		if len(d.parked) > 0 && !now.Before(d.forwardAt) {
			d.hastenParked(ctx)
		}
	}
	if spans != nil {
		telemetry.EndAttempts(spans, settle, err)
	}
	if rep.Failure != "" {
		d.lastFailure = rep.Failure
	}
	if d.o.Observe != nil {
		d.o.Observe(rep)
	}
	return stalled && retried > 0, idle // every event it attempted failed
}

// call hands events to the plugin. A batch too large for the plugin
// protocol ([protocol.ErrBatchTooLarge]: gRPC refuses a message over its
// limit, 4 MiB by default) is split in halves and each half sent on its
// own, so that one oversized event (a huge transform output, say) does not
// fail the events around it; an event too large on its own fails
// permanently with the reason.
func (d *Dispatcher) call(ctx context.Context, events []sdk.Event) ([]sdk.Result, error) {
	results, err := d.o.Deliverer.Deliver(ctx, events)
	if !errors.Is(err, protocol.ErrBatchTooLarge) {
		return results, err
	}
	if len(events) == 1 {
		return []sdk.Result{sdk.Permanent(fmt.Errorf("event is too large for the plugin protocol: %w", err))}, nil
	}
	d.o.Logger.Warn("batch too large for the plugin, splitting it", "sink", d.o.Sink, "events", len(events), "err", err)
	half := len(events) / 2
	out := make([]sdk.Result, 0, len(events))
	for _, part := range [][]sdk.Event{events[:half], events[half:]} {
		res, err := d.call(ctx, part)
		if err == nil && res != nil && len(res) != len(part) {
			err = fmt.Errorf("plugin answered %d results for a batch of %d events", len(res), len(part))
		}
		for i := range part {
			switch {
			case err != nil:
				out = append(out, sdk.Retry(0, err))
			case res == nil:
				out = append(out, sdk.Delivered())
			default:
				out = append(out, res[i])
			}
		}
	}
	return out, nil
}
