package memlog

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// heldAt is the retryAt of a held entry ([pipeline.Hold]): later than any
// real retry, so Fetch does not take it until Release.
var heldAt = time.Unix(0, math.MaxInt64)

var _ pipeline.Holder = (*Queue)(nil)

// hold parks the leased entry e, which Settle took out of leased: the
// attempt Fetch counted is given back. q.l.mu is held.
func (q *Queue) hold(e *entry) {
	e.attempts--
	e.retryAt = heldAt
	q.q.retry[e.seq] = e
}

// Release implements [pipeline.Holder.Release].
func (q *Queue) Release(ctx context.Context, seqs []uint64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("memlog: release %s: %w", q.sink, err)
	}
	q.l.mu.Lock()
	defer q.l.mu.Unlock()
	if q.l.closed {
		return 0, fmt.Errorf("memlog: release %s: %w", q.sink, pipeline.ErrClosed)
	}
	now := time.Now()
	n := 0
	if seqs == nil {
		for _, e := range q.q.retry {
			if e.retryAt.Equal(heldAt) {
				e.retryAt = now
				n++
			}
		}
	}
	for _, seq := range seqs {
		if e, ok := q.q.retry[seq]; ok && e.retryAt.Equal(heldAt) {
			e.retryAt = now
			n++
		}
	}
	if n > 0 {
		q.q.notify()
	}
	return n, nil
}

// SettleRelease implements [pipeline.Holder.SettleRelease]: Settle, then
// Release (memlog keeps nothing across a crash, so two steps are as good
// as one).
func (q *Queue) SettleRelease(ctx context.Context, s []pipeline.Settlement, release []uint64) error {
	if err := q.Settle(ctx, s); err != nil {
		return err
	}
	if len(release) == 0 {
		return nil
	}
	_, err := q.Release(ctx, release)
	return err
}

// Waiting implements [pipeline.Holder.Waiting].
func (q *Queue) Waiting(ctx context.Context, dead bool, visit func(pipeline.Waiting) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memlog: waiting %s: %w", q.sink, err)
	}
	q.l.mu.Lock()
	var out []pipeline.Waiting
	top := uint64(0)
	add := func(e *entry, st pipeline.WaitingState) {
		out = append(out, pipeline.Waiting{Seq: e.seq, Event: cloneEvent(*e.ev), State: st})
		top = max(top, e.seq)
	}
	for _, e := range q.q.retry {
		if e.retryAt.Equal(heldAt) {
			add(e, pipeline.WaitingHeld)
		} else {
			add(e, pipeline.WaitingRetry)
		}
	}
	if dead {
		for _, d := range q.q.dead {
			add(d.e, pipeline.WaitingDead)
		}
	}
	for _, e := range q.q.leased { // fetched, not settled: ready after a restart
		if e.seq < top {
			out = append(out, pipeline.Waiting{Seq: e.seq, Event: cloneEvent(*e.ev), State: pipeline.WaitingReady})
		}
	}
	for _, e := range q.q.ready {
		if e.seq >= top {
			break
		}
		out = append(out, pipeline.Waiting{Seq: e.seq, Event: cloneEvent(*e.ev), State: pipeline.WaitingReady})
	}
	closed := q.l.closed
	q.l.mu.Unlock()
	if closed {
		return fmt.Errorf("memlog: waiting %s: %w", q.sink, pipeline.ErrClosed)
	}
	for _, w := range out {
		if err := visit(w); err != nil {
			return err
		}
	}
	return nil
}

var _ pipeline.Hastener = (*Queue)(nil)

// Hasten implements [pipeline.Hastener].
func (q *Queue) Hasten(ctx context.Context, seqs []uint64) (int, error) {
	if err := q.lock(ctx, "hasten"); err != nil {
		return 0, err
	}
	defer q.l.mu.Unlock()
	now := time.Now()
	n := 0
	for _, seq := range seqs {
		if e, ok := q.q.retry[seq]; ok && q.makeDue(e, now) {
			n++
		}
	}
	if n > 0 {
		q.q.notify()
	}
	return n, nil
}

// makeDue makes e due at now, when it waits for a retry due later (not
// held), and says so in its record's next_attempt_at (of a retry, and of
// an event the sink did not attempt, still queued). q.l.mu is held.
func (q *Queue) makeDue(e *entry, now time.Time) bool {
	if e.retryAt.Equal(heldAt) || !e.retryAt.After(now) {
		return false
	}
	e.retryAt = now
	if r := q.record(e.ev, e.route); r.State == pipeline.StateRetrying || !r.NextAttemptAt.IsZero() {
		r.NextAttemptAt = now
	}
	return true
}

var _ pipeline.RetryHastener = (*Queue)(nil)

// HastenRetries implements [pipeline.RetryHastener]: it takes entries
// from q.q.later, last settled first, passing by those that no longer
// wait for a retry due later, so a retry-now of n retries costs O(n) and
// not a walk of every retry per page.
func (q *Queue) HastenRetries(ctx context.Context, max int) (int, error) {
	if err := q.lock(ctx, "hasten retries of"); err != nil {
		return 0, err
	}
	defer q.l.mu.Unlock()
	now := time.Now()
	n := 0
	for n < max && len(q.q.later) > 0 {
		last := len(q.q.later) - 1
		e := q.q.later[last]
		q.q.later[last] = nil
		q.q.later = q.q.later[:last]
		if q.q.retry[e.seq] == e && q.makeDue(e, now) {
			n++
		}
	}
	if n > 0 {
		q.q.notify()
	}
	return n, nil
}

var _ pipeline.RetryClock = (*Queue)(nil)

// NextRetry implements [pipeline.RetryClock]: one pass over the sink's
// retries, as Fetch makes when none is ready.
func (q *Queue) NextRetry(ctx context.Context, now time.Time) (time.Time, error) {
	if err := q.lock(ctx, "next retry of"); err != nil {
		return time.Time{}, err
	}
	defer q.l.mu.Unlock()
	var next time.Time
	for _, e := range q.q.retry {
		if e.retryAt.After(now) && !e.retryAt.Equal(heldAt) && (next.IsZero() || e.retryAt.Before(next)) {
			next = e.retryAt
		}
	}
	return next, nil
}

// waitLater notes that e, in q.q.retry, waits for a retry due later, for
// HastenRetries. An entry settled again is noted again, and one that is
// no longer waiting stays until HastenRetries passes it by: when that
// makes q.q.later more than twice what waits, it is made again of the
// entries that wait, each once (amortized O(1) a call). q.l.mu is held.
func (q *Queue) waitLater(e *entry) {
	q.q.later = append(q.q.later, e)
	if len(q.q.later) <= 2*len(q.q.retry)+64 {
		return
	}
	now := time.Now()
	seen := make(map[*entry]bool, len(q.q.retry))
	keep := q.q.later[:0]
	for _, w := range q.q.later {
		if q.q.retry[w.seq] == w && w.retryAt.After(now) && !w.retryAt.Equal(heldAt) && !seen[w] {
			seen[w] = true
			keep = append(keep, w)
		}
	}
	clear(q.q.later[len(keep):])
	q.q.later = keep
}
