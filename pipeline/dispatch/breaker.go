package dispatch

import (
	"context"
	"log/slog"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// probeLook is how long a probe waits for a ready entry while entries are
// held, before it releases them (see probeEntry).
const probeLook = 20 * time.Millisecond

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
