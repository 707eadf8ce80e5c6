package main

import (
	"context"
	"io"
	"log/slog"
	"sync"
)

// writeBehind hands what is written to it on to w from a goroutine of its
// own, all that came since its last write in one write. Under load the
// per-webhook lines (one per request at info, the default) then cost one
// write(2) for many instead of one each, and under systemd one wake of
// journald for many; at rest a line goes out as soon as the goroutine
// runs. Order is kept. [writeBehind.Flush] writes out, before it returns,
// everything written before it: the logger calls it after each record at
// warn and above (see flushAtWarn), so no warning or error waits in
// memory, and serve closes it before it returns. What a crash (a panic,
// SIGKILL) leaves in it is lost: the info lines of its last moments.
type writeBehind struct {
	w io.Writer

	mu      sync.Mutex
	cond    *sync.Cond // signalled after each write to w, and on close
	buf     []byte     // written, not yet handed to w
	spare   []byte     // the last buffer handed to w, for reuse
	writing bool       // a write to w is under way
	closed  bool
	started bool // run was started (newWriteBehind)
	max     int  // a Write waits while this much waits for w (w is slow: journald stalled)

	wake chan struct{} // capacity 1: something was written
	stop chan struct{}
	done chan struct{}
}

// maxBehind is how much may wait for w before Write waits too, as it
// would on w itself.
const maxBehind = 1 << 20

func newWriteBehind(w io.Writer) *writeBehind {
	b := newIdleWriteBehind(w)
	b.started = true
	go b.run()
	return b
}

// newIdleWriteBehind is newWriteBehind without its goroutine: only Flush
// and Close write (tests).
func newIdleWriteBehind(w io.Writer) *writeBehind {
	b := &writeBehind{w: w, max: maxBehind, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// Write queues p for w. After Close it writes p to w, after anything
// still waiting, and returns w's error.
func (b *writeBehind) Write(p []byte) (int, error) {
	b.mu.Lock()
	for len(b.buf) >= b.max && !b.closed {
		b.cond.Wait()
	}
	if b.closed {
		b.mu.Unlock()
		if err := b.Flush(); err != nil {
			return 0, err
		}
		return b.w.Write(p)
	}
	b.buf = append(b.buf, p...)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// Flush writes out to w everything written before it, and returns w's
// error, if any.
func (b *writeBehind) Flush() error {
	b.mu.Lock()
	for b.writing {
		b.cond.Wait()
	}
	buf := b.buf
	b.buf, b.spare = b.spare[:0], nil
	b.writing = true
	b.mu.Unlock()
	var err error
	if len(buf) > 0 {
		_, err = b.w.Write(buf)
	}
	b.mu.Lock()
	b.writing = false
	if cap(buf) <= b.max {
		b.spare = buf[:0]
	}
	b.cond.Broadcast()
	b.mu.Unlock()
	return err
}

func (b *writeBehind) run() {
	defer close(b.done)
	for {
		select {
		case <-b.wake:
			b.Flush() // an error: nowhere to say it (w is where it would go)
		case <-b.stop:
			return
		}
	}
}

// Close writes out what waits and stops the goroutine; later writes go
// straight to w.
func (b *writeBehind) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.cond.Broadcast() // a Write waiting for room writes to w itself now
	b.mu.Unlock()
	close(b.stop)
	if b.started {
		<-b.done
	}
	return b.Flush()
}

// flushAtWarn is a handler whose records at warn and above are written out
// before Handle returns, with everything logged before them.
type flushAtWarn struct {
	slog.Handler
	out *writeBehind
}

func (h flushAtWarn) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		h.out.Flush()
	}
	return err
}

func (h flushAtWarn) WithAttrs(as []slog.Attr) slog.Handler {
	return flushAtWarn{h.Handler.WithAttrs(as), h.out}
}

func (h flushAtWarn) WithGroup(name string) slog.Handler {
	return flushAtWarn{h.Handler.WithGroup(name), h.out}
}
