package dispatch

import (
	"context"
	"time"
)

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
