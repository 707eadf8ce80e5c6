package jetstreamlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// How CheckWrite looks at the stream: a look older than healthEvery is
// taken again in the background, each with healthTimeout.
const (
	healthEvery   = 2 * time.Second
	healthTimeout = 2 * time.Second
)

// health is the last look at whether the stream can take writes: at
// when, and err when it could not.
type health struct {
	at  time.Time
	err error
}

var _ pipeline.WriteChecker = (*Log)(nil)

// MaxPayload is the largest message the NATS server this daemon is
// connected to takes (its max_payload): an event's full record must fit.
func (l *Log) MaxPayload() int64 { return l.nc.MaxPayload() }

// CheckWrite implements [pipeline.WriteChecker], so that /readyz says when
// appends fail: nil while the daemon is connected to NATS and the stream
// had a leader (a quorum of its replicas) when last asked, and no append
// failed since. It never waits: it answers from the last look, and when
// that look is older than healthEvery it asks the stream again in the
// background, so readiness comes back on its own once the stream has a
// leader again, with no webhook needed to find out.
func (l *Log) CheckWrite() error {
	if l.isClosed() {
		return pipeline.ErrClosed
	}
	if !l.nc.IsConnected() {
		return fmt.Errorf("jetstream: not connected to NATS (%s)", l.nc.Status())
	}
	h := l.health.Load()
	if h == nil || time.Since(h.at) > healthEvery {
		l.lookAtStream()
	}
	if h != nil {
		return h.err
	}
	return nil
}

// lookAtStream asks the stream for its leader in the background, one look
// at a time, and keeps what it found for CheckWrite.
func (l *Log) lookAtStream() {
	if !l.looking.CompareAndSwap(false, true) {
		return
	}
	// Not in l.wg: Close would race its Wait with this Add. The look ends
	// within healthTimeout, at once after Close (closeCtx).
	go func() {
		defer l.looking.Store(false)
		start := time.Now()
		ctx, cancel := context.WithTimeout(l.closeCtx, healthTimeout)
		defer cancel()
		info, err := l.stream.Info(ctx)
		switch {
		case err != nil && l.closeCtx.Err() != nil:
			return
		case err != nil:
			err = fmt.Errorf("jetstream: stream %s does not answer: %w", l.prefix, err)
		case !led(info):
			err = fmt.Errorf("jetstream: stream %s has no leader (a quorum of its %d replicas is not up)", l.prefix, l.opts.Replicas)
		}
		// Kept unless an append said more since the look began.
		next := &health{at: start, err: err}
		for {
			cur := l.health.Load()
			if cur != nil && cur.at.After(start) || l.health.CompareAndSwap(cur, next) {
				return
			}
		}
	}()
}

// appended keeps what an append found out: a failure (not the caller's
// leaving) makes CheckWrite fail until a look at the stream or another
// append succeeds.
func (l *Log) appended(ctx context.Context, err error) {
	switch {
	case err == nil:
		if h := l.health.Load(); h != nil && h.err != nil {
			l.health.Store(&health{at: time.Now()})
		}
	case ctx.Err() != nil, errors.Is(err, pipeline.ErrTooBig), errors.Is(err, pipeline.ErrClosed):
	default:
		l.health.Store(&health{at: time.Now(), err: fmt.Errorf("the last append failed: %w", err)})
	}
}
