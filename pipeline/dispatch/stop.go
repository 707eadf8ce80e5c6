package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// errStopDeadline is the cause of the context of a batch that [Dispatcher.Stop]
// gave up on.
var errStopDeadline = errors.New("the dispatcher's stop deadline passed")

// wrapUpReserve is the most of a stop's time that [Dispatcher.Stop] keeps
// for a batch wrapped up to be answered and settled: it wraps up at its
// deadline less the lesser of wrapUpReserve and half the time left.
const wrapUpReserve = 5 * time.Second

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

// stopGaveUp reports whether ctx, a batch's, ended because
// [Dispatcher.Stop] gave up on the batch: the [StopError] that Stop
// returns says what becomes of its events.
func stopGaveUp(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errStopDeadline)
}
