// Package writer is the group-commit writer: the one goroutine that appends
// to the event log. Ingest handlers hand it entries and wait; it takes every
// entry pending (up to a bound), appends them in one durable [pipeline.Log]
// call, and only then releases the waiting handlers, which answer 2xx (P1).
// One fsync thus serves as many requests as arrived during the previous one.
package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/internal/lograte"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/pipeline/telemetry"
)

// ErrOverloaded is returned by [Writer.Append] when more entries wait than
// the writer's queue holds. Nothing was written; ingest answers 503 with
// Retry-After and the sender tries again.
var ErrOverloaded = errors.New("event log is overloaded")

// ErrAbandoned is returned (wrapped) by [Writer.Append] for an entry that
// [Writer.Shutdown] gave up on: its ctx ended before the log committed the
// entry. The entry was not acknowledged, so ingest answers 503 with
// Retry-After and the sender sends it again (P1: never a 2xx for an event
// not committed). The log may still commit it if its stalled append
// completes after all: the sender's second copy is then absorbed as a
// duplicate when its source has a dedup_key, and is a second event (with
// another id) when it has none.
var ErrAbandoned = errors.New("event log did not commit the event before the shutdown's deadline")

// AbandonError is what [Writer.Shutdown] returns when its ctx ended before
// the writer had appended every entry it had taken.
type AbandonError struct {
	// Entries counts the entries answered with [ErrAbandoned]: those of
	// the append in progress and those still queued.
	Entries int
	// Err is the cause of ctx's end.
	Err error
}

func (e *AbandonError) Error() string {
	return fmt.Sprintf("writer gave up on %d entries not yet committed to the event log: %v", e.Entries, e.Err)
}

func (e *AbandonError) Unwrap() error { return e.Err }

// Options configures a [Writer]. The zero value (or nil) means the defaults.
type Options struct {
	// MaxBatch bounds the entries of one append. Zero means 1024.
	MaxBatch int
	// MaxBatchBytes bounds the body bytes of one append; an entry bigger
	// than that is appended alone. Zero means 1 MiB.
	MaxBatchBytes int
	// MaxPending bounds the entries waiting for the writer; more are
	// refused with [ErrOverloaded]. Zero means 8192.
	MaxPending int
	// Logger receives append failures.
	Logger *slog.Logger
	// OnBatch, if set, is called after each append with its size; for metrics.
	OnBatch func(entries int, err error)
	// Metrics, if set, records each append's size and duration (the
	// group commit's fsync latency).
	Metrics *metrics.Metrics
	// Tracing, when not nil, makes a span of each append, linked to the
	// requests it carries; nil is off.
	Tracing *telemetry.Tracer
}

// Writer appends entries to a log in batches. It is safe for concurrent use.
type Writer struct {
	log  pipeline.Log
	opts Options
	reqs chan *request
	done chan struct{}

	mu     sync.RWMutex
	closed bool

	// appendCtx is the context of every log append; Shutdown cancels it
	// when it gives up, so that a log that heeds it (JetStream's requests)
	// stops trying.
	appendCtx     context.Context
	cancelAppends context.CancelCauseFunc
	// batchMu guards current, the requests of the append in progress
	// (nil between appends), and abandoned, set once Shutdown gave up:
	// from then on every request is answered with ErrAbandoned and
	// nothing more is appended.
	batchMu      sync.Mutex
	current      []*request
	abandoned    bool
	abandonCause error
	// gaveUp counts the requests answered with ErrAbandoned.
	gaveUp atomic.Int64

	// subs are the subscriptions of [Writer.Subscribe], copied on write
	// so that commit reads them with one atomic load (nil: nobody listens).
	subsMu sync.Mutex
	subs   atomic.Pointer[[]*Subscription]

	// failLog bounds the lines of failed appends: on a full disk every
	// commit fails, hundreds a second, and the journal may be on that
	// disk. failed counts the appends that failed since the last that
	// did not (commit's goroutine only).
	failLog lograte.Every
	failed  int
}

// failLogPeriod is how often a failing log gets a line.
const failLogPeriod = 10 * time.Second

type request struct {
	ping  bool // Ping's request: answered at once, appends nothing
	entry pipeline.Entry
	res   pipeline.Appended
	err   error
	done  chan struct{}
	// answered is set by the first answer: the writer's, or Shutdown's
	// when it gives up on the request while the log still holds it.
	answered atomic.Bool
}

// answer sets the request's outcome and releases its waiter, unless it
// was answered already; it reports whether it did.
func (r *request) answer(res pipeline.Appended, err error) bool {
	if !r.answered.CompareAndSwap(false, true) {
		return false
	}
	r.res, r.err = res, err
	close(r.done)
	return true
}

// New starts a writer on l. Stop it with [Writer.Close].
func New(l pipeline.Log, o *Options) *Writer {
	var opts Options
	if o != nil {
		opts = *o
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1024
	}
	if opts.MaxBatchBytes <= 0 {
		opts.MaxBatchBytes = 1 << 20
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 8192
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Writer{log: l, opts: opts, reqs: make(chan *request, opts.MaxPending), done: make(chan struct{}),
		failLog: lograte.Every{Period: failLogPeriod}}
	w.appendCtx, w.cancelAppends = context.WithCancelCause(context.Background())
	go w.run()
	return w
}

// Append appends e and returns when it is durable, or when it failed. An
// error wrapping [ErrOverloaded], [pipeline.ErrFull] or [pipeline.ErrClosed]
// means nothing was written. If ctx ends first, Append returns ctx's error
// but the entry may still be appended.
func (w *Writer) Append(ctx context.Context, e pipeline.Entry) (pipeline.Appended, error) {
	r := &request{entry: e, done: make(chan struct{})}
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return pipeline.Appended{}, pipeline.ErrClosed
	}
	select {
	case w.reqs <- r:
	default:
		w.mu.RUnlock()
		return pipeline.Appended{}, ErrOverloaded
	}
	w.mu.RUnlock()
	select {
	case <-r.done:
		return r.res, r.err
	case <-ctx.Done():
		return pipeline.Appended{}, ctx.Err()
	}
}

// Ping returns nil once the writer goroutine has taken a request from its
// queue: proof, for a watchdog, that appends are not stuck. It waits behind
// the entries already queued, bounded by ctx.
func (w *Writer) Ping(ctx context.Context) error {
	r := &request{ping: true, done: make(chan struct{})}
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return pipeline.ErrClosed
	}
	select {
	case w.reqs <- r:
		w.mu.RUnlock()
	case <-ctx.Done():
		w.mu.RUnlock()
		return fmt.Errorf("writer queue is full: %w", ctx.Err())
	}
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("writer did not take a ping: %w", ctx.Err())
	}
}

// Notice is what a [Subscription] receives of an appended entry: who
// the event is and where it was routed, not its body, headers or
// payloads, so that a subscriber's buffer holds little whatever the bodies
// weigh (a tail's 256 entries of 1 MiB bodies would hold 256 MiB).
type Notice struct {
	ID         string
	Source     string
	ReceivedAt time.Time
	// DedupKey is the event's dedup key, or the entry's when the event
	// has none.
	DedupKey string
	// Size is the length of the body in bytes.
	Size int
	// Sinks are the sinks the event was routed to, in the entry's order.
	// The slice is shared by every subscriber: read it, never change it.
	Sinks []string
}

// Subscription is one subscriber of [Writer.Subscribe]: the entries it
// receives and the count of those it missed.
type Subscription struct {
	// C receives a Notice of each entry appended from now on (of the
	// subscription's source, when it has one) once it is durable;
	// duplicates are not sent.
	C <-chan Notice

	c       chan Notice
	source  string
	dropped atomic.Uint64
	w       *Writer
	once    sync.Once
}

// Dropped returns how many entries of the subscription's source were not
// sent on C because its buffer was full: a subscriber that shows C's
// entries must say that it did not see that many. Safe for concurrent use.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Cancel ends the subscription: no append that starts after it returns
// sends on C (which is not closed) or counts a drop; one already under way
// may still. Calling it again does nothing.
func (s *Subscription) Cancel() {
	s.once.Do(func() {
		w := s.w
		w.subsMu.Lock()
		defer w.subsMu.Unlock()
		var rest []*Subscription
		for _, o := range *w.subs.Load() {
			if o != s {
				rest = append(rest, o)
			}
		}
		if len(rest) == 0 {
			w.subs.Store(nil)
		} else {
			w.subs.Store(&rest)
		}
	})
}

// Subscribe returns a subscription to the entries appended from now on
// (duplicates excepted), of source only when source is not empty, with a
// buffer of buf entries. The writer never waits for a subscriber: an
// entry that does not fit in the buffer is not sent to that subscriber,
// and counted in its [Subscription.Dropped]. The live tail of the admin UI
// uses it. End it with [Subscription.Cancel].
func (w *Writer) Subscribe(buf int, source string) *Subscription {
	c := make(chan Notice, buf)
	s := &Subscription{C: c, c: c, source: source, w: w}
	w.subsMu.Lock()
	var subs []*Subscription
	if p := w.subs.Load(); p != nil {
		subs = append(subs, *p...)
	}
	subs = append(subs, s)
	w.subs.Store(&subs)
	w.subsMu.Unlock()
	return s
}

// Close stops taking entries, appends those already taken, and returns
// when the writer has stopped, however long the log takes. The log is
// left open. [Writer.Shutdown] is Close with a bound.
func (w *Writer) Close() { w.Shutdown(context.Background()) }

// Shutdown stops taking entries (Append returns [pipeline.ErrClosed]),
// appends those already taken, and returns nil when the writer has
// stopped. If ctx ends first, it gives up: the entries of the append in
// progress and those still queued are answered at once with an error
// wrapping [ErrAbandoned], nothing more is appended, the append in
// progress is cancelled (for a log that heeds its ctx), and Shutdown
// returns an [*AbandonError] that counts them, without waiting for the
// log to let go. The log is left open.
func (w *Writer) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.reqs)
	}
	w.mu.Unlock()
	select {
	case <-w.done: // preferred: a ctx that has ended gives up only on what is left
		return nil
	default:
	}
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
	}
	cause := context.Cause(ctx)
	w.batchMu.Lock()
	w.abandoned, w.abandonCause = true, cause
	for _, r := range w.current {
		w.giveUp(r, cause)
	}
	w.batchMu.Unlock()
	w.cancelAppends(fmt.Errorf("%w: %w", ErrAbandoned, cause))
	for r := range w.reqs { // closed: ends once empty; run may take some too
		w.giveUp(r, cause)
	}
	if n := w.gaveUp.Load(); n > 0 {
		return &AbandonError{Entries: int(n), Err: cause}
	}
	return nil
}

// giveUp answers r with ErrAbandoned, unless it was answered already.
func (w *Writer) giveUp(r *request, cause error) {
	if r.ping {
		r.answer(pipeline.Appended{}, nil)
		return
	}
	if r.answer(pipeline.Appended{}, fmt.Errorf("%w (%v)", ErrAbandoned, cause)) {
		w.gaveUp.Add(1)
	}
}

func (w *Writer) run() {
	defer close(w.done)
	batch := make([]*request, 0, w.opts.MaxBatch)
	for r := range w.reqs {
		if r.ping {
			r.answer(pipeline.Appended{}, nil)
			continue
		}
		batch = append(batch[:0], r)
		size := len(r.entry.Event.Body)
	fill:
		for len(batch) < w.opts.MaxBatch && size < w.opts.MaxBatchBytes {
			select {
			case r, ok := <-w.reqs:
				if !ok {
					break fill
				}
				if r.ping {
					r.answer(pipeline.Appended{}, nil)
					continue
				}
				batch = append(batch, r)
				size += len(r.entry.Event.Body)
			default:
				break fill
			}
		}
		w.commit(batch)
	}
}

// commit appends batch and releases its requests. A batch too big for one
// atomic write is split in halves. Once Shutdown has given up, it answers
// them with ErrAbandoned instead.
func (w *Writer) commit(batch []*request) {
	// The whole batch, not a half: Shutdown answers every request the
	// writer took, those of a half still to append too.
	if w.gaveUpOn(batch, true) {
		return
	}
	defer func() {
		w.batchMu.Lock()
		w.current = nil
		w.batchMu.Unlock()
	}()
	w.write(batch)
}

// gaveUpOn reports whether Shutdown has given up, answering batch with
// ErrAbandoned if so (those it answered already keep their answer). If
// not, with current it makes batch the one Shutdown answers, under the
// same lock: a Shutdown that gave up between the look and that would
// answer neither this batch nor its requests, which wait in reqs no more.
func (w *Writer) gaveUpOn(batch []*request, current bool) bool {
	w.batchMu.Lock()
	abandoned, cause := w.abandoned, w.abandonCause
	if !abandoned && current {
		w.current = batch
	}
	w.batchMu.Unlock()
	if abandoned {
		for _, r := range batch {
			w.giveUp(r, cause)
		}
	}
	return abandoned
}

// write is commit's append of batch, or of a half of it.
func (w *Writer) write(batch []*request) {
	entries := make([]pipeline.Entry, len(batch))
	for i, r := range batch {
		entries[i] = r.entry
	}
	start := time.Now()
	var span trace.Span
	if w.opts.Tracing != nil {
		span = w.opts.Tracing.StartAppend(entries)
	}
	res, err := w.log.Append(w.appendCtx, entries)
	if span != nil {
		telemetry.EndAppend(span, err)
	}
	if errors.Is(err, pipeline.ErrTooBig) && len(batch) > 1 {
		half := len(batch) / 2
		for _, b := range [][]*request{batch[:half], batch[half:]} {
			if !w.gaveUpOn(b, false) {
				w.write(b)
			}
		}
		return
	}
	if w.opts.OnBatch != nil {
		w.opts.OnBatch(len(batch), err)
	}
	w.opts.Metrics.WriterCommit(len(batch), time.Since(start), err)
	switch {
	case err != nil:
		w.failed++
		if w.appendCtx.Err() != nil {
			// Shutdown gave up on it, and said so: the log's answer
			// came too late.
		} else if ok, n := w.failLog.Allow(); ok {
			w.opts.Logger.Error("append to event log failed", "entries", len(batch), "err", err, "suppressed", n)
		}
		err = fmt.Errorf("append: %w", err)
	case w.failed > 0:
		w.opts.Logger.Info("the event log takes appends again", "failed_appends", w.failed)
		w.failed = 0
		w.failLog = lograte.Every{Period: failLogPeriod} // the next fault's first line at once
	}
	for i, r := range batch {
		if err != nil {
			r.answer(pipeline.Appended{}, err)
		} else {
			r.answer(res[i], nil) // false when Shutdown answered it already
		}
	}
	if subs := w.subs.Load(); subs != nil && err == nil {
		for i, r := range batch {
			if res[i].Duplicate {
				continue
			}
			ev := &r.entry.Event
			var n *Notice // made for the first subscriber that wants it
			for _, s := range *subs {
				if s.source != "" && s.source != ev.Source {
					continue
				}
				if n == nil {
					n = notice(r.entry, res[i].ID)
				}
				select {
				case s.c <- *n:
				default: // a slow subscriber misses it, and is told; ingest never waits
					s.dropped.Add(1)
				}
			}
		}
	}
}

// notice is what subscribers get of entry e, appended as id.
func notice(e pipeline.Entry, id string) *Notice {
	n := &Notice{ID: id, Source: e.Event.Source, ReceivedAt: e.Event.ReceivedAt, DedupKey: e.Event.DedupKey, Size: len(e.Event.Body)}
	if n.DedupKey == "" {
		n.DedupKey = e.DedupKey
	}
	n.Sinks = make([]string, len(e.Targets))
	for i, t := range e.Targets {
		n.Sinks[i] = t.Sink
	}
	return n
}
