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
