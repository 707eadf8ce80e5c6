package jetstreamlog

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipelined/pipelined/pipeline"
)

// exists reports whether subject holds a message. It asks the stream
// for the count of messages on that one subject (a stream info with the
// subject as filter, answered from the server's index of subjects), so it
// reads no message: a queue entry or a dead letter holds a copy of its
// event, up to max_payload, that a get would send whole.
func (q *queue) exists(ctx context.Context, subject string) (bool, error) {
	rctx, cancel := q.l.reqCtx(ctx)
	defer cancel()
	info, err := q.l.stream.Info(rctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return false, q.l.wrapErr("look up "+subject, err)
	}
	return info.State.Subjects[subject] > 0, nil
}

// dead reports whether the event (seq, id) has a dead letter: Settle's or
// Append's.
func (q *queue) dead(ctx context.Context, seq uint64, id string) (bool, error) {
	for _, subj := range []string{q.deadSubject(seq), q.dlqSubject(id)} {
		if ok, err := q.exists(ctx, subj); err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// Requeue skips the events with a queue entry or a dead letter in this
// queue and enqueues the others as retries due now. It first looks at
// every event of rs, so that a seq not in the log fails the call with
// nothing queued, then queues, one event at a time. Of each event it
// reads only what it needs: its id (given in rs, the event then looked up
// without being read; otherwise the event is read), whether its queue
// entry and dead letters exist (looked up without reading them, see
// exists) and its delivery record; and the whole event only when it
// queues it (the entry holds a copy). An event that retention removes
// between the look and its turn fails the call then, with the events
// before it queued. A replayed entry joins the end of the queue
// (JetStream has no way to put it before entries already stored); within
// one Fetch answer entries are in Seq order.
func (q *queue) Requeue(ctx context.Context, rs []pipeline.Requeue) (int, error) {
	if err := q.ensure(ctx); err != nil {
		return 0, err
	}
	type todo struct {
		r  pipeline.Requeue
		id string
		ev *evRecord // nil: read it when queueing it
	}
	var (
		list []todo
		held int
		dead map[uint64]bool // the seqs skipped as dead letters
	)
	seen := make(map[uint64]bool, len(rs))
	for _, r := range rs {
		if seen[r.Seq] {
			continue
		}
		seen[r.Seq] = true
		t := todo{r: r, id: r.ID}
		if t.id != "" {
			ok, err := q.exists(ctx, q.l.evSubject(t.id))
			if err != nil {
				return 0, fmt.Errorf("requeue to %s: %w", q.sink, err)
			}
			if !ok {
				return 0, fmt.Errorf("requeue to %s: seq %d (event %q): %w", q.sink, r.Seq, t.id, pipeline.ErrNotFound)
			}
		} else {
			ev, err := q.l.getEvent(ctx, r.Seq)
			if err != nil {
				return 0, fmt.Errorf("requeue to %s: %w", q.sink, err)
			}
			t.id = ev.ID
			if held+len(ev.Body) <= requeueHold {
				held += len(ev.Body)
				t.ev = &ev
			}
		}
		if ok, err := q.queued(ctx, r.Seq, t.id); err != nil || ok {
			if err != nil {
				return 0, err
			}
			continue
		}
		if ok, err := q.dead(ctx, r.Seq, t.id); err != nil || ok {
			if err != nil {
				return 0, err
			}
			if dead == nil {
				dead = make(map[uint64]bool)
			}
			dead[r.Seq] = true
			continue
		}
		list = append(list, t)
	}
	n := 0
	for i, t := range list {
		ev := t.ev
		list[i].ev = nil // held no longer than needed
		if ev == nil {
			e, err := q.l.getEvent(ctx, t.r.Seq)
			if err != nil {
				return n, fmt.Errorf("requeue to %s: %w", q.sink, err)
			}
			if e.ID != t.id {
				return n, fmt.Errorf("requeue to %s: seq %d holds event %q, not %q as the caller said: pass the ids Events lists with their seqs", q.sink, t.r.Seq, e.ID, t.id)
			}
			ev = &e
		}
		if err := q.enqueue(ctx, t.r.Seq, qRecord{Event: *ev, Route: t.r.Route, Payload: t.r.Payload}, "", pipeline.StateQueued); err != nil {
			return n, err
		}
		n++
	}
	for i := range rs {
		rs[i].Dead = dead[rs[i].Seq]
	}
	return n, nil
}

// queued reports whether the event (seq, id) has an entry in this queue.
// An entry that was just acked can still be there for a moment (on a
// replicated stream the work queue removes it after the ack is answered):
// while its delivery record says it was settled, ask again for up to about
// a second before taking it as queued.
func (q *queue) queued(ctx context.Context, seq uint64, id string) (bool, error) {
	for wait := 10 * time.Millisecond; ; wait *= 2 {
		ok, err := q.exists(ctx, q.qSubject(id))
		if err != nil || !ok {
			return ok, err
		}
		dr, err := q.getDR(ctx, seq)
		if err != nil {
			return false, err
		}
		if dr == nil || (dr.State != pipeline.StateDelivered && dr.State != pipeline.StateDead) || wait > 640*time.Millisecond {
			return true, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(wait):
		}
	}
}
