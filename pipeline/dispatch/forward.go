package dispatch

import (
	"context"
	"maps"
	"slices"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/sdk"
)

// maxParked bounds [Dispatcher.parked]: the rest of a batch of 500 after
// a 429, twice over. One Hasten moves them all (badgerlog: in
// transactions of bounded bytes).
const maxParked = 1000

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
