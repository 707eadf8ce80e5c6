package memlog

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
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

// hastenExamine bounds the entries one HastenRetries call looks at,
// moved or passed by.
const hastenExamine = 10 * 1000

// retryWalk is the State of a memlog [pipeline.RetryWalk]: the seqs of the
// entries that waited for a later retry as it began, earliest due first,
// and how many of them it has been through.
type retryWalk struct {
	seqs []uint64
	pos  int
}

// HastenRetries implements [pipeline.RetryHastener]: the walk's first
// call notes the seqs of the entries that wait for a later retry (one
// pass over the sink's retries, which memlog keeps in memory anyway), and
// each call goes on through them from where the last one stopped, so a
// walk of n retries costs O(n log n) and not a pass over every retry per
// page. An entry whose attempt was settled after the walk began (its
// record's LastAttemptAt) is passed by.
func (q *Queue) HastenRetries(ctx context.Context, w *pipeline.RetryWalk, max int) (int, error) {
	if w.Done || max < 1 {
		return 0, nil
	}
	if err := q.lock(ctx, "hasten retries of"); err != nil {
		return 0, err
	}
	defer q.l.mu.Unlock()
	now := time.Now()
	rw, _ := w.State.(*retryWalk)
	if rw == nil {
		w.Began = now
		var es []*entry
		for _, e := range q.q.retry {
			if e.retryAt.After(now) && !e.retryAt.Equal(heldAt) {
				es = append(es, e)
			}
		}
		slices.SortFunc(es, func(a, b *entry) int {
			return cmp.Or(a.retryAt.Compare(b.retryAt), cmp.Compare(a.seq, b.seq))
		})
		rw = &retryWalk{seqs: make([]uint64, len(es))}
		for i, e := range es {
			rw.seqs[i] = e.seq
		}
		w.State = rw
	}
	n := 0
	for examined := 0; n < max && examined < hastenExamine && rw.pos < len(rw.seqs); examined++ {
		e, ok := q.q.retry[rw.seqs[rw.pos]]
		rw.pos++
		if !ok || q.record(e.ev, e.route).LastAttemptAt.After(w.Began) {
			continue // no longer waiting, or failed again since the walk began
		}
		if q.makeDue(e, now) {
			n++
		}
	}
	w.Done = rw.pos == len(rw.seqs)
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
