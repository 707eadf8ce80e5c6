// Package dispatch drains one sink's queue into its plugin: batches of up to
// BatchMax entries (waiting up to BatchWait to fill one), one Deliver call
// per batch, and per event the plugin's outcome: delivered entries are
// acknowledged, failures are retried with exponential backoff and jitter,
// and what failed permanently, ran out of attempts or kept failing longer
// than MaxAge goes to the sink's dead-letter queue (P2). A sink that is
// down only delays its own queue.
//
// # Outages
//
// After BreakerFailures failed calls in a row the sink's circuit breaker
// opens: the dispatcher takes no more batches and sends one probe (a batch
// of the oldest ready entry) every BreakerProbe, the interval doubling up
// to BreakerProbeMax (or BackoffMax, when lower): the wait for the first
// probe after the sink is back is bounded by it, however long the outage. A failed probe costs its event no attempt toward
// MaxAttempts and makes it ready again at once; the first probe that does
// not fail closes the breaker. The events of the failed calls that opened
// it wait for retries the failures scheduled (a Retry-After of an hour,
// say); on a queue that can bring retries forward ([pipeline.Hastener])
// they are made due when a probe closes it after another failed: the sink
// was down and is back. On a queue
// that can hold entries, an event
// that fails as a probe is held (see probeEntry) instead, costing it no
// attempt at all, and the next probe is the next event: events that fail
// on their own (their data, not the sink) are not the probe every time
// while the events behind them would go through. The held events are
// released when the breaker closes, or when no other event is ready.
//
// The breaker also closes when the queue is left with nothing to probe
// (see nothingToProbe): the failing events left without a probe that
// succeeded (an operator gave up on them, or they ran out of MaxAttempts
// or MaxAge), and no other event is ready or retrying. It learnt nothing
// of the sink then, but an open breaker over an empty queue would only
// say that the sink fails until the next event comes; that event is
// delivered as usual, and the breaker opens again after BreakerFailures
// failed calls.
//
// An operator who knows the sink is back can have the open breaker probe
// at once ([Dispatcher.ProbeNow], for pipelined sinks retry-now, which
// also makes the queue's waiting retries due now).
//
// An operator can also pause a dispatcher ([Dispatcher.Pause]); a paused
// one takes nothing until resumed. Rate bounds the events handed to the
// plugin per second.
//
// # Events a sink did not attempt
//
// A sink answers [sdk.NotAttempted] for an event it did not send at all
// (the http sink, for the rest of a batch after a 429, or when the call's
// time ran out before the event's turn). The event is settled as a Retry
// with [pipeline.Settlement.NotAttempted]: it costs no attempt toward
// MaxAttempts, so its backoff does not grow either, and its delivery
// record lists no attempt for it. It is ready again after the delay the
// sink asked for, or at once when the sink delivered other events of the
// batch (it goes first in the next batch, as a due retry); when the sink
// delivered nothing of the batch (it attempted none, or every one it
// attempted is to be retried: a 429 without Retry-After), after
// BackoffMin at least, so that a sink that takes nothing, or a receiver
// that throttles, is not called in a hot loop (see notAttemptedAt); after
// a call of which the sink attempted nothing, the next call (with other
// events) waits BackoffMin too. The breaker judges a call by the events
// the sink attempted: not-attempted events neither fail a call nor make it a
// success, and a call of which the sink attempted nothing leaves the
// breaker as it was (an open breaker's probe that was not attempted is
// followed by another after the same wait). MaxAge still applies, as wall
// time: a not-attempted answer starts the event's clock as a failure does,
// and one past MaxAge sends the event to the dead-letter queue, with no
// attempt counted.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

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

// Status is a dispatcher's state as [Dispatcher.Status] reports it.
type Status struct {
	// Open is true while the circuit breaker is open.
	Open bool
	// Paused is true while an operator holds delivery.
	Paused bool
	// InFlight is how many events the batch in flight holds, from the
	// moment it is handed to the plugin until its outcomes are recorded;
	// 0 between batches. InFlightSince is when that batch was handed over.
	InFlight      int
	InFlightSince time.Time
	// NextProbe is when the open breaker sends its next probe; zero while
	// the breaker is closed, while a probe is under way, and while paused.
	NextProbe time.Time
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

// maxParked bounds [Dispatcher.parked]: the rest of a batch of 500 after
// a 429, twice over. One Hasten moves them all (badgerlog: in
// transactions of bounded bytes).
const maxParked = 1000

// probeLook is how long a probe waits for a ready entry while entries are
// held, before it releases them (see probeEntry).
const probeLook = 20 * time.Millisecond

// errStopDeadline is the cause of the context of a batch that [Dispatcher.Stop]
// gave up on.
var errStopDeadline = errors.New("the dispatcher's stop deadline passed")

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

// Pause holds delivery: Run takes no more entries until [Dispatcher.Resume]
// (a batch already taken is finished and settled). It reports whether the
// dispatcher was running before. Safe for concurrent use.
func (d *Dispatcher) Pause() bool { return d.setPaused(true) }

// Resume ends a [Dispatcher.Pause]. It reports whether the dispatcher was
// paused. Safe for concurrent use.
func (d *Dispatcher) Resume() bool { return d.setPaused(false) }

func (d *Dispatcher) setPaused(p bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.paused == p {
		return false
	}
	d.paused = p
	if p && d.cancelFetch != nil {
		d.cancelFetch()
	}
	close(d.wake)
	d.wake = make(chan struct{})
	return true
}

// ProbeNow makes an open breaker send its next probe at once instead of
// at the end of its wait (the interval is not reset: a probe that fails
// doubles it as usual), and reports whether the breaker is open. While
// the dispatcher is paused the probe goes at once when it is resumed;
// while a probe is under way, the probe after it (if it fails) goes at
// once. On a closed breaker it does nothing.
// Safe for concurrent use.
func (d *Dispatcher) ProbeNow() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.open {
		return false
	}
	select {
	case d.probeNow <- struct{}{}:
	default: // one is asked for already
	}
	return true
}

// Status reports the breaker and pause state and the batch in flight.
// Safe for concurrent use.
func (d *Dispatcher) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := Status{Open: d.open, Paused: d.paused, InFlight: d.inFlight, InFlightSince: d.inFlightSince}
	if d.open && !d.paused {
		st.NextProbe = d.nextProbe
	}
	return st
}

// setInFlight records the batch in flight (see Status): n events since
// now, or none when n is 0.
func (d *Dispatcher) setInFlight(n int) {
	var since time.Time
	if n > 0 {
		since = time.Now()
	}
	d.mu.Lock()
	d.inFlight, d.inFlightSince = n, since
	d.mu.Unlock()
}

// waitResumed waits while the dispatcher is paused; false when ctx ended.
func (d *Dispatcher) waitResumed(ctx context.Context) bool {
	for {
		d.mu.Lock()
		paused, wake := d.paused, d.wake
		d.mu.Unlock()
		if !paused {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-wake:
		}
	}
}

// pausedCtx returns a ctx that ends with ctx or when the dispatcher is
// paused (Pause cancels it before it returns), so a Fetch waiting for
// entries gives up at Pause. The caller calls cancel after its Fetch.
func (d *Dispatcher) pausedCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	pctx, cancel := context.WithCancel(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.paused {
		cancel()
		return pctx, cancel
	}
	d.cancelFetch = cancel
	return pctx, func() {
		d.mu.Lock()
		d.cancelFetch = nil
		d.mu.Unlock()
		cancel()
	}
}

// setOpen records a breaker change, logs it once and tells OnBreaker.
// closed is the log's message when it closes.
func (d *Dispatcher) setOpen(open bool, probe time.Duration, closed string) {
	d.mu.Lock()
	changed := d.open != open
	d.open = open
	if !open {
		d.nextProbe = time.Time{}
		select {
		case <-d.probeNow: // asked for while open: the next opening waits as usual
		default:
		}
	}
	d.mu.Unlock()
	if !changed {
		return
	}
	if open {
		// The events' own failures are not logged one by one: this line
		// is the one that tells the operator why the sink is down.
		d.warnedFailure = d.lastFailure
		d.o.Logger.Warn("sink circuit breaker opened: deliveries wait, probing the sink",
			"sink", d.o.Sink, "failed_calls", d.o.BreakerFailures, "probe_every", probe.String(), "probe_every_max", d.o.BreakerProbeMax.String(),
			"last_error", cutError(d.lastFailure), "when_back", "pipelined sinks retry-now "+d.o.Sink)
	} else {
		d.o.Logger.Info(closed, "sink", d.o.Sink)
	}
	if d.o.OnBreaker != nil {
		d.o.OnBreaker(open)
	}
}

// Run delivers until ctx is done or [Dispatcher.Stop] is called; call it
// once. A batch already handed to the plugin is finished and settled first
// (the call bounded by CallTimeout, the settling retried while the log
// refuses it), so stopping never strands a delivery that succeeded; only
// Stop's ctx bounds that wait. It returns nil after ctx ends or Stop, or
// the error that made the queue unusable (the log was closed).
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

// hastenFailedRun makes the retries of the failed calls that opened the
// breaker due now, once a probe closed it after one had failed: they were
// scheduled while the sink failed as a whole, some far ahead (a 429's
// Retry-After of an hour, up to a day), and the sink is back. (When the
// first probe succeeds, the failed calls may have been events failing on
// their own while little else flowed: they keep their backoff.)
func (d *Dispatcher) hastenFailedRun(ctx context.Context) {
	d.bringForward(ctx, d.failedRun, 0, "the sink is back", "retries of the failed calls that opened the breaker")
}

// askedToWait reports whether r is a retry, or an event not attempted,
// for which the sink named a delay: a Retry-After that parks the event,
// up to a day (see capHint).
func askedToWait(r sdk.Result) bool {
	if after, ok := r.IsRetry(); ok {
		return after > 0
	}
	after, ok := r.IsNotAttempted()
	return ok && after > 0
}

// hastenParked makes the entries in d.parked due now: the sink asked them
// to wait (a 503 or 429 with a Retry-After of an hour, say), and has just
// taken events again, so the destination is back before the time it
// named. Without this, an outage's events waited out the whole
// Retry-After while the sink took every new event at once, and nothing
// but an operator's retry-now released them.
func (d *Dispatcher) hastenParked(ctx context.Context) {
	if len(d.parked) == 0 {
		return
	}
	parked, more := slices.Collect(maps.Keys(d.parked)), d.parkedMore
	clear(d.parked)
	d.parkedMore, d.forwarded = 0, true
	d.bringForward(ctx, parked, more, "the sink takes events again", "events the sink had asked to wait")
}

// park adds seqs to d.parked, up to maxParked.
func (d *Dispatcher) park(seqs []uint64) {
	for _, seq := range seqs {
		if _, in := d.parked[seq]; in {
			continue
		}
		if len(d.parked) == maxParked {
			d.parkedMore++
			continue
		}
		d.parked[seq] = struct{}{}
	}
}

// bringForward makes the entries seqs due now, and logs it as the sink
// being back (back) for those entries (what); more counts entries of the
// same kind that were not kept, and keep their time. Entries that no
// longer wait for a retry (delivered, dead, held for their key or the
// breaker) are skipped by Hasten. On a queue that cannot bring retries
// forward they keep their time; a failure is logged, and they are
// retried at their time.
func (d *Dispatcher) bringForward(ctx context.Context, seqs []uint64, more int, back, what string) {
	h, ok := d.o.Queue.(pipeline.Hastener)
	if !ok || len(seqs) == 0 {
		return
	}
	n, err := h.Hasten(ctx, seqs)
	switch {
	case err != nil && n > 0:
		if ctx.Err() == nil {
			d.o.Logger.Warn(back+": "+what+" brought forward in part; the rest are retried at their time",
				"sink", d.o.Sink, "events", n, "asked", len(seqs), "keep_their_time", more, "err", err)
		}
	case err != nil:
		if ctx.Err() == nil {
			d.o.Logger.Warn("could not bring forward the "+what+"; they are retried at their time",
				"sink", d.o.Sink, "events", len(seqs), "err", err)
		}
	case more > 0:
		d.o.Logger.Info(back+": "+what+" brought forward; more keep their time (pipelined sinks retry-now makes them due)",
			"sink", d.o.Sink, "events", n, "keep_their_time", more)
	case n > 0:
		d.o.Logger.Info(back+": "+what+" brought forward", "sink", d.o.Sink, "events", n)
	}
}

// probeFailed logs a probe of the open breaker that failed, the next in
// probe: as a warning when the sink fails otherwise than the breaker's
// last warning said (refused, then 503, then no answer: the outage's
// cause changed), else as information, so that an outage of a day says
// what it is at each probe (at most one line per breaker_probe_max).
func (d *Dispatcher) probeFailed(probe time.Duration) {
	level, msg := slog.LevelInfo, "sink circuit breaker: a probe failed; deliveries still wait"
	if d.lastFailure != d.warnedFailure {
		level, msg = slog.LevelWarn, "sink circuit breaker: a probe failed otherwise than before; deliveries still wait"
		d.warnedFailure = d.lastFailure
	}
	d.o.Logger.Log(context.Background(), level, msg, "sink", d.o.Sink, "last_error", cutError(d.lastFailure),
		"next_probe_in", probe.String(), "when_back", "pipelined sinks retry-now "+d.o.Sink)
}

// sleepProbe waits probe before the open breaker's next probe, which
// Status reports meanwhile, or until ProbeNow; false when ctx ended.
func (d *Dispatcher) sleepProbe(ctx context.Context, probe time.Duration) bool {
	d.mu.Lock()
	d.nextProbe = time.Now().Add(probe)
	d.mu.Unlock()
	ok := true
	t := time.NewTimer(probe)
	select {
	case <-ctx.Done():
		ok = false
	case <-t.C:
	case <-d.probeNow:
		d.o.Logger.Debug("probing the sink now, as an operator asked", "sink", d.o.Sink) // the admin API logs the call
	}
	t.Stop()
	d.mu.Lock()
	d.nextProbe = time.Time{}
	d.mu.Unlock()
	return ok
}

// nothingToProbe reports whether the queue holds no entry that a probe of
// the open breaker could take, now or later: none ready (or leased) and
// none waiting for a retry, except the events held behind their key's
// head (order_key), which wait for that head and not for the breaker
// (with order_on_dead = "block", a dead head holds them for as long as
// it stays dead). The failed probes held by probeEntry count: they are
// released for the next round. A queue without Stats, or whose Stats
// fails, may have something to probe.
func (d *Dispatcher) nothingToProbe(ctx context.Context) bool {
	held := func() int {
		if d.ord == nil {
			return 0
		}
		d.ord.mu.Lock()
		defer d.ord.mu.Unlock()
		return d.ord.held
	}
	var ready, retrying int
	if wc, ok := d.o.Queue.(WaitingCounter); ok {
		// Counting the retrying entries past the held ones is pointless:
		// read before, the held count is at least the one read after.
		var err error
		if ready, retrying, err = wc.CountWaiting(ctx, held()+1); err != nil {
			return false
		}
	} else {
		q, ok := d.o.Queue.(interface {
			Stats(context.Context) (pipeline.QueueStats, error)
		})
		if !ok {
			return false
		}
		st, err := q.Stats(ctx)
		if err != nil {
			return false
		}
		ready, retrying = st.Ready, st.Retrying
	}
	// Read after the count: only DroppedDead changes the held count
	// meanwhile, and only down (the held event it makes a head is still
	// counted as retrying), so the difference never counts fewer events
	// to probe than there are.
	return ready == 0 && retrying <= held()
}

// WaitingCounter is a [Queue] that can say whether entries wait without
// walking them all: the open breaker asks after every batch (a batch
// given up on does not wait for the next probe, so an operator's thousand
// give-ups are a thousand asks), and badgerlog's Stats walks every retry
// and dead entry, 60 ms per 200,000 (seconds after a day's outage).
type WaitingCounter interface {
	// CountWaiting returns how many entries are ready (leased ones
	// included), as Stats does, and how many wait for a retry, counted up
	// to maxRetrying at most.
	CountWaiting(ctx context.Context, maxRetrying int) (ready, retrying int, err error)
}

// rotates reports whether failed probes are held: with a queue that can
// hold entries ([pipeline.Holder]; JetStream's cannot), and without
// per-key order, whose holds are its own.
func (d *Dispatcher) rotates() bool {
	_, ok := d.o.Queue.(pipeline.Holder)
	return ok && d.ord == nil
}

// probeEntry fetches the open breaker's probe: the oldest ready entry,
// retries due first. Where rotates says so, deliver holds a probe's event
// that failed (pipeline.Hold: no attempt counted, its record unchanged), so
// the next probe is another event; when no entry is ready within probeLook
// while some are held, every event waiting has been tried: they are
// released, due now, and the probe is the oldest of them again. They are
// also released when the breaker closes and when Run returns.
func (d *Dispatcher) probeEntry(fctx, finish context.Context) ([]pipeline.Delivery, error) {
	if len(d.held) == 0 {
		return d.o.Queue.Fetch(fctx, 1)
	}
	look, cancel := context.WithTimeout(fctx, probeLook)
	batch, err := d.o.Queue.Fetch(look, 1)
	cancel()
	if err != nil && look.Err() != nil && fctx.Err() == nil {
		if !d.releaseProbed(finish) {
			if err := context.Cause(finish); err != nil {
				return nil, err
			}
			return nil, pipeline.ErrClosed
		}
		return d.o.Queue.Fetch(fctx, 1)
	}
	return batch, err
}

// releaseProbed releases the held probes, due now, trying again while the
// log refuses (a full disk) until ctx ends, and reports whether it did.
// What it could not release stays in d.held for the next call; a later
// start of the sink's delivery releases it in any case (releaseAllHeld).
func (d *Dispatcher) releaseProbed(ctx context.Context) bool {
	if len(d.held) == 0 {
		return true
	}
	h := d.o.Queue.(pipeline.Holder)
	if !d.record(ctx, func() int { return len(d.held) }, func() error { _, err := h.Release(ctx, d.held); return err }) {
		return false
	}
	d.held = nil
	return true
}

// Stop makes Run take no more entries, finish and settle the batch in
// flight, and return; Stop returns nil once Run has. When ctx ends first,
// Stop gives up: the plugin call in flight is cancelled, outcomes the log
// has not recorded by then are dropped (those entries are delivered again
// after a restart: at least once still holds), and Stop returns a
// [*StopError] wrapping ctx's cause without waiting further; Run returns
// soon after, logging that batch's end at Debug only: the caller says
// what becomes of its events. Call Stop after Run started; it may be called more than once.
//
// With Options.WrapUp set and a deadline on ctx, a batch still in flight
// when that deadline is wrapUpReserve away (or at once, when the stop has
// less time than that) is wrapped up: the plugin is asked to answer now for
// what it did, and that answer is settled as usual, so that only the
// events the sink did not finish are delivered again.
func (d *Dispatcher) Stop(ctx context.Context) error {
	d.stopOnce.Do(func() { close(d.stopping) })
	var wrapUp <-chan time.Time
	dl, ok := ctx.Deadline()
	if ok && d.o.WrapUp != nil {
		t := time.NewTimer(wrapUpAt(time.Until(dl)))
		defer t.Stop()
		wrapUp = t.C
	}
	for done := false; !done; {
		select {
		case <-d.done:
			return nil
		case <-wrapUp:
			wrapUp = nil
			if st := d.Status(); st.InFlight > 0 {
				left := time.Until(dl)
				d.o.Logger.Info("stop deadline near: asked the sink to wrap up its batch in flight (to answer now for what it delivered; the rest is delivered later, without an attempt counted)",
					"sink", d.o.Sink, "events", st.InFlight, "in_flight_for", time.Since(st.InFlightSince).Round(time.Millisecond).String(),
					"deadline_in", left.Round(time.Millisecond).String())
				d.o.WrapUp(ctx)
			}
		case <-ctx.Done():
			done = true
		}
	}
	events := d.Status().InFlight // before the give-up clears it
	d.abandonOnce.Do(func() { close(d.abandon) })
	return &StopError{Sink: d.o.Sink, Events: events, Err: context.Cause(ctx)}
}

// wrapUpReserve is the most of a stop's time that [Dispatcher.Stop] keeps
// for a batch wrapped up to be answered and settled: it wraps up at its
// deadline less the lesser of wrapUpReserve and half the time left.
const wrapUpReserve = 5 * time.Second

// wrapUpAt returns when, from now, Stop wraps up the batch in flight of a
// stop that has left until its deadline.
func wrapUpAt(left time.Duration) time.Duration {
	return max(0, left-min(wrapUpReserve, left/2))
}

// StopError is what [Dispatcher.Stop] returns when its ctx ended before
// the batch in flight was settled. Those events stay in the sink's queue
// and are delivered again (after a restart of the daemon, or by the next
// dispatcher of the sink); some may have reached the sink already.
type StopError struct {
	Sink string
	// Events is how many events the batch in flight held when Stop gave
	// up; 0 when the dispatcher was between batches (recording held
	// events, say).
	Events int
	// Err is the cause of Stop's ctx ending.
	Err error
}

func (e *StopError) Error() string {
	return fmt.Sprintf("stop the dispatcher of sink %s: gave up on its batch in flight (%d events): %v", e.Sink, e.Events, e.Err)
}

func (e *StopError) Unwrap() error { return e.Err }

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

// holdRetries returns settle with each Retry made a Hold, and adds those
// entries to d.held: a failed probe's event waits, held, for the breaker
// (see probeEntry).
func (d *Dispatcher) holdRetries(settle []pipeline.Settlement) []pipeline.Settlement {
	out := slices.Clone(settle)
	for i, s := range out {
		if s.Outcome == pipeline.Retry && !s.NotAttempted { // one not attempted keeps its time
			out[i] = pipeline.Settlement{Seq: s.Seq, Outcome: pipeline.Hold}
			d.held = append(d.held, s.Seq)
		}
	}
	return out
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

// settlement turns one plugin result into a queue outcome. A failed probe
// (probe set) costs no attempt toward MaxAttempts and is ready again at
// once, for the next probe (or held instead, where rotates says so: see
// holdRetries). A result not attempted ([sdk.NotAttempted]) costs no
// attempt at all (see notAttemptedAt); stalled says no event of the batch
// was delivered (or failed for good): none was attempted, or every one
// attempted is to be retried.
func (d *Dispatcher) settlement(e pipeline.Delivery, res sdk.Result, now time.Time, delay func(attempt int) time.Duration, probe, stalled bool) pipeline.Settlement {
	s := pipeline.Settlement{Seq: e.Seq}
	log := d.o.Logger
	if d.o.Tracing != nil { // the attempt's span, see telemetry.StartAttempts
		log = log.With(telemetry.LogArgs(e.Event.TraceParent)...)
	}
	failingFor := time.Duration(0)
	// Not attempted counts toward max_age as a failure does: max_age is
	// wall time, and the event was not delivered.
	if _, retry := res.IsRetry(); retry || !(res.IsDelivered() || res.IsPermanent()) {
		first, ok := d.firstFail[e.Seq]
		if !ok {
			first = now
			d.firstFail[e.Seq] = now
		}
		failingFor = now.Sub(first)
	}
	errText := func() string {
		if res.Err() != nil {
			return cutError(res.Err().Error())
		}
		return "no reason given"
	}
	notAfter, notAttempted := res.IsNotAttempted()
	switch after, retry := res.IsRetry(); {
	case res.IsDelivered():
		s.Outcome = pipeline.Ack
	case notAttempted && d.o.MaxAge > 0 && failingFor >= d.o.MaxAge:
		// Given up as a failure past max_age would be, with no attempt
		// counted for this answer: the dead letter's error (and the
		// record's last error) says why, with the last attempt's error.
		s.Outcome, s.NotAttempted = pipeline.Dead, true
		s.Err = fmt.Sprintf("gave up after failing for %v (%d attempts; last not attempted: %s)", failingFor.Round(time.Second), e.Attempt-1, errText())
		if e.LastError != "" {
			s.Err += ": last error: " + e.LastError
		}
		d.deadLetter(log, "event undelivered for longer than max_age, moved to the dead-letter queue",
			"sink", d.o.Sink, "event_id", e.Event.ID, "attempt", e.Attempt-1, "failing_for", failingFor, "err", errText())
	case notAttempted:
		s.Outcome, s.NotAttempted, s.Err = pipeline.Retry, true, errText()
		s.RetryAt = now.Add(d.notAttemptedAt(notAfter, stalled))
	case res.IsPermanent():
		s.Outcome, s.Err = pipeline.Dead, "permanent failure: "+errText()
		d.deadLetter(log, "event failed permanently, moved to the dead-letter queue",
			"sink", d.o.Sink, "event_id", e.Event.ID, "attempt", e.Attempt, "err", s.Err)
	case retry && d.o.MaxAge > 0 && failingFor >= d.o.MaxAge:
		s.Outcome, s.Err = pipeline.Dead, fmt.Sprintf("gave up after failing for %v (%d attempts): %s", failingFor.Round(time.Second), e.Attempt, errText())
		d.deadLetter(log, "event failed for longer than max_age, moved to the dead-letter queue",
			"sink", d.o.Sink, "event_id", e.Event.ID, "attempt", e.Attempt, "failing_for", failingFor, "err", errText())
	case retry && !probe && d.o.MaxAttempts > 0 && e.Attempt >= d.o.MaxAttempts:
		s.Outcome, s.Err = pipeline.Dead, fmt.Sprintf("gave up after %d attempts: %s", e.Attempt, errText())
		d.deadLetter(log, "event ran out of attempts, moved to the dead-letter queue",
			"sink", d.o.Sink, "event_id", e.Event.ID, "attempt", e.Attempt, "err", errText())
	case retry && probe:
		s.Outcome, s.Err, s.RetryAt = pipeline.Retry, errText(), now
	case retry:
		if after <= 0 {
			after = delay(e.Attempt)
		}
		s.Outcome, s.Err, s.RetryAt = pipeline.Retry, errText(), now.Add(d.capHint(after))
	default:
		s.Outcome, s.Err = pipeline.Retry, "plugin gave an invalid result: "+cutError(res.String())
		s.RetryAt = now.Add(delay(e.Attempt))
		if probe {
			s.RetryAt = now
		}
	}
	if s.Outcome != pipeline.Retry {
		delete(d.firstFail, e.Seq)
	}
	// A sink's error says what it likes (a database quoting Latin-1 bytes);
	// the log keeps strings as UTF-8 and refuses others, which would leave
	// the settlement unrecorded. Kept as JSON shows it: each bad byte U+FFFD.
	s.Err = strings.ToValidUTF8(s.Err, "\uFFFD")
	return s
}

// capHint bounds a plugin's hint of when to try again (a Retry-After ten
// years ahead), so that it does not park the event past what max_age and
// the operator expect.
func (d *Dispatcher) capHint(after time.Duration) time.Duration {
	return min(after, max(d.o.BackoffMax, maxRetryAfter))
}

// notAttemptedAt is how long an event the sink did not attempt waits
// before it is ready again: the delay the sink asked for (a 429's
// Retry-After), bounded as a retry's is; else none, when other events of
// its batch were delivered (the call made progress, and the next one
// will: these go first in it, as due retries); else, when the batch made
// no progress (stalled: nothing of it was attempted, or every event
// attempted is to be retried, as after a 429 without Retry-After),
// BackoffMin (1 s by default): the first step of the backoff, never
// grown, so that a sink that takes nothing, or a receiver that throttles,
// is called at that pace instead of in a hot loop, and without a minimum
// of our own that an operator could not tune.
func (d *Dispatcher) notAttemptedAt(after time.Duration, stalled bool) time.Duration {
	after = d.capHint(after)
	if stalled {
		after = max(after, d.o.BackoffMin)
	}
	return after
}

// maxErrorText bounds the text of a sink's error (before the dispatcher's
// few words around it) that the log keeps, with the last
// [pipeline.MaxFailures] of them in an event's record written again at
// each attempt, and that the daemon's log prints: a sink that answers with
// a megabyte of HTML must not fill the disk.
const maxErrorText = 4 << 10

// maxRetryAfter bounds the delay a plugin asks for with a retry, unless
// delivery.backoff_max is longer.
const maxRetryAfter = 24 * time.Hour

// cutError returns s cut to [maxErrorText] bytes, on a rune's boundary,
// saying how much it was.
func cutError(s string) string {
	if len(s) <= maxErrorText {
		return s
	}
	tail := fmt.Sprintf("… (%d bytes, cut)", len(s))
	n := maxErrorText - len(tail)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + tail
}

// settle records outcomes, trying again while the log refuses (a full disk
// clears) until ctx ends: an unsettled delivery would only be delivered
// again after a restart, but the ack of a delivered event should not be
// dropped lightly. ctx ends only when Stop gives up. Outcomes too big for
// one atomic write of the log (a batch of thousands of retries, each
// keeping its transform payload) are recorded in parts, halved until each
// fits; a part recorded is never written again. It reports whether every
// outcome was recorded: false when the log closed or ctx ended first.
func (d *Dispatcher) settle(ctx context.Context, s []pipeline.Settlement) bool {
	return d.record(ctx, func() int { return len(s) }, func() error {
		n, err := inParts(s, func(part []pipeline.Settlement) error { return d.o.Queue.Settle(ctx, part) })
		s = s[n:]
		return err
	})
}

// inParts writes items with write: all at once, or, while the log refuses
// a part as too big for one atomic write ([pipeline.ErrTooBig]), in parts
// halved until each fits, each next part as big as the last that fitted.
// It returns how many it wrote, a prefix of items, which are never
// written again, and the error that stopped it.
func inParts[T any](items []T, write func(part []T) error) (int, error) {
	done := 0
	for n := len(items); done < len(items); n = min(n, len(items)-done) {
		for {
			err := write(items[done : done+n])
			if err == nil {
				break
			}
			if !errors.Is(err, pipeline.ErrTooBig) || n == 1 {
				return done, err
			}
			n /= 2
		}
		done += n
	}
	return done, nil
}

// record calls write, which records the outcomes of left() entries (or
// the releases of held events they lead to), again and again while the
// log refuses, and reports whether it succeeded: false when the log is
// closed or ctx ended first.
func (d *Dispatcher) record(ctx context.Context, left func() int, write func() error) bool {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
		err := write()
		if err == nil {
			return true
		}
		if errors.Is(err, pipeline.ErrClosed) {
			return false
		}
		if ctx.Err() == nil {
			d.o.Logger.Error("record delivery outcomes failed, trying again", "sink", d.o.Sink, "err", err, "retry_in", wait)
			if sleep(ctx, wait) {
				continue
			}
		}
		lvl := slog.LevelWarn
		if stopGaveUp(ctx) {
			lvl = slog.LevelDebug // Stop's caller says it, once per sink
		}
		d.o.Logger.Log(context.Background(), lvl, "gave up recording delivery outcomes at shutdown; these entries will be delivered after a restart, those delivered already again",
			"sink", d.o.Sink, "events", left(), "err", err, "cause", context.Cause(ctx))
		return false
	}
}

// stopGaveUp reports whether ctx, a batch's, ended because
// [Dispatcher.Stop] gave up on the batch: the [StopError] that Stop
// returns says what becomes of its events.
func stopGaveUp(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errStopDeadline)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
