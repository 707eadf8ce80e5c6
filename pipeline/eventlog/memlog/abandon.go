package memlog

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

var _ pipeline.Abandoner = (*Queue)(nil)

// Abandon implements [pipeline.Abandoner]: retries (held ones included)
// first, in Seq order, then first deliveries in Seq order.
func (q *Queue) Abandon(ctx context.Context, max int, errFor func(lastErr string) string) (int, error) {
	if err := q.lock(ctx, "abandon"); err != nil {
		return 0, err
	}
	defer q.l.mu.Unlock()
	if max < 1 {
		return 0, nil
	}
	retries := slices.SortedFunc(func(yield func(*entry) bool) {
		for _, e := range q.q.retry {
			if !yield(e) {
				return
			}
		}
	}, func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
	take := retries[:min(max, len(retries))]
	for _, e := range take {
		delete(q.q.retry, e.seq)
	}
	n := min(max-len(take), len(q.q.ready))
	take = append(take, q.q.ready[:n]...)
	q.q.ready = q.q.ready[n:]
	now := time.Now()
	for _, e := range take {
		s := pipeline.Settlement{Seq: e.seq, Outcome: pipeline.Dead, Err: errFor(e.lastErr), NotAttempted: true}
		r := q.record(e.ev, e.route)
		*r = r.Settled(s, now)
		q.q.dead[e.seq] = &deadEntry{e: e, err: s.Err, failedAt: now}
	}
	return len(take), nil
}
