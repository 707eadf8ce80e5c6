package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/telemetry"
	"github.com/pipelined/pipelined/sdk"
)

// maxErrorText bounds the text of a sink's error (before the dispatcher's
// few words around it) that the log keeps, with the last
// [pipeline.MaxFailures] of them in an event's record written again at
// each attempt, and that the daemon's log prints: a sink that answers with
// a megabyte of HTML must not fill the disk.
const maxErrorText = 4 << 10

// maxRetryAfter bounds the delay a plugin asks for with a retry, unless
// delivery.backoff_max is longer.
const maxRetryAfter = 24 * time.Hour

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
// closed or halted ([pipeline.ErrHalted]: it never writes again, and the
// daemon stops) or ctx ended first.
func (d *Dispatcher) record(ctx context.Context, left func() int, write func() error) bool {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
		err := write()
		if err == nil {
			return true
		}
		if errors.Is(err, pipeline.ErrClosed) {
			return false
		}
		if errors.Is(err, pipeline.ErrHalted) {
			d.o.Logger.Warn("the event log stopped writing: these entries will be delivered after the restart, those delivered already again",
				"sink", d.o.Sink, "events", left())
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
