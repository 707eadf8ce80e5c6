package jetstreamlog

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipelined/pipelined/pipeline"
)

// deadSubject is the subject of a dead letter written by Settle.
func (q *queue) deadSubject(seq uint64) string {
	return q.l.subj("dlq", q.tok, "seq", strconv.FormatUint(seq, 10))
}

// appendedFilter matches the dead letters Append wrote (and those an
// earlier build's Settle wrote, see docs/jetstream.md).
func (q *queue) appendedFilter() string { return q.l.subj("dlq", q.tok, "*") }

// deadLetterOf decodes a stored dead letter.
func deadLetterOf(m *jetstream.RawStreamMsg) (pipeline.DeadLetter, error) {
	var r dlqRecord
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return pipeline.DeadLetter{}, fmt.Errorf("jetstream: dead letter at %d: %w", m.Sequence, err)
	}
	es, err := eventSeq(m.Header, m.Sequence)
	if err != nil {
		return pipeline.DeadLetter{}, fmt.Errorf("jetstream: dead letter at %d: %w", m.Sequence, err)
	}
	return pipeline.DeadLetter{
		Seq: es, Event: r.Event.event(), Route: r.Route, Payload: r.Payload,
		Attempts: r.Attempts, Err: r.Err, FailedAt: r.FailedAt,
	}, nil
}

// settledDead returns the seqs above after of the dead letters Settle
// wrote, sorted: the subjects of one stream info call, no message read.
func (q *queue) settledDead(ctx context.Context, after uint64) ([]uint64, error) {
	rctx, cancel := q.l.reqCtx(ctx)
	defer cancel()
	info, err := q.l.stream.Info(rctx, jetstream.WithSubjectFilter(q.l.subj("dlq", q.tok, "seq", "*")))
	if err != nil {
		return nil, q.l.wrapErr("list dead letters", err)
	}
	seqs := make([]uint64, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		s, err := strconv.ParseUint(subj[strings.LastIndexByte(subj, '.')+1:], 10, 64)
		if err == nil && s > after {
			seqs = append(seqs, s)
		}
	}
	slices.Sort(seqs)
	return seqs, nil
}

// DeadLetters returns a page in log order, reading only what it returns
// (see the comment at deadSubject): one stream info call that lists the
// subjects of the dead letters Settle wrote (a few dozen bytes each, as
// Stats's count does), one get per entry returned, and the few gets of
// dead letters Append wrote that the walk steps over at after. A dead
// letter retried or dropped while a page is read can make the page
// shorter than limit. A limit less than 1 lists nothing.
func (q *queue) DeadLetters(ctx context.Context, after uint64, limit int) ([]pipeline.DeadLetter, error) {
	if q.l.isClosed() {
		return nil, pipeline.ErrClosed
	}
	if limit < 1 || after == math.MaxUint64 {
		return nil, nil
	}
	settled, err := q.settledDead(ctx, after)
	if err != nil {
		return nil, err
	}
	// The walk of the dead letters Append wrote, in log order.
	var appended []pipeline.DeadLetter
	for from := after + 1; len(appended) < limit; {
		m, err := q.next(ctx, from, q.appendedFilter())
		if err != nil || m == nil {
			if err != nil {
				return nil, err
			}
			break
		}
		from = m.Sequence + 1
		d, err := deadLetterOf(m)
		if err != nil {
			return nil, err
		}
		if d.Seq <= after {
			continue
		}
		n, dup := slices.BinarySearch(settled, d.Seq)
		if dup {
			continue // died again after a retry that did not delete it: Settle's copy is listed
		}
		if len(appended)+n >= limit {
			break // the page is full below it, and below every later one
		}
		appended = append(appended, d)
	}
	// In log order already, unless an earlier build's Settle wrote some.
	slices.SortFunc(appended, func(a, b pipeline.DeadLetter) int { return cmp.Compare(a.Seq, b.Seq) })
	out := make([]pipeline.DeadLetter, 0, min(limit, len(settled)+len(appended)))
	for i, j := 0, 0; len(out) < limit && (i < len(settled) || j < len(appended)); {
		if j < len(appended) && (i == len(settled) || appended[j].Seq < settled[i]) {
			out = append(out, appended[j])
			j++
			continue
		}
		m, err := q.last(ctx, q.deadSubject(settled[i]))
		i++
		if err != nil {
			return nil, err
		}
		if m == nil {
			continue // retried or dropped since the list
		}
		d, err := deadLetterOf(m)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// findDead returns the stored dead letters of the event at seq: Settle's
// and Append's (both only after a crash between a retry's enqueue and its
// delete, and a second death).
func (q *queue) findDead(ctx context.Context, seq uint64) ([]*jetstream.RawStreamMsg, error) {
	var found []*jetstream.RawStreamMsg
	m, err := q.last(ctx, q.deadSubject(seq))
	if err != nil {
		return nil, err
	}
	if m != nil {
		found = append(found, m)
	}
	// Append's is the first of its kind stored after the event (see the
	// comment at deadSubject). One an earlier build's Settle wrote there
	// (with a Pl-Seq header) can be anywhere after it: step over those.
	for from := seq + 1; seq < math.MaxUint64; {
		m, err := q.next(ctx, from, q.appendedFilter())
		if err != nil {
			return nil, err
		}
		if m == nil {
			break
		}
		from = m.Sequence + 1
		es, err := eventSeq(m.Header, m.Sequence)
		if err != nil {
			return nil, fmt.Errorf("jetstream: dead letter at %d: %w", m.Sequence, err)
		}
		if es == seq {
			found = append(found, m)
			break
		}
		if m.Header.Get(hdrSeq) == "" {
			break // Append's, of a later event
		}
	}
	return found, nil
}

// eachDead calls f for every dead letter of the sink, one at a time in the
// order they died, up to the last message stored when it starts (so that
// entries dying again meanwhile do not keep it going). It returns how many
// it handled.
func (q *queue) eachDead(ctx context.Context, f func(d pipeline.DeadLetter, stored uint64) error) (int, error) {
	rctx, cancel := q.l.reqCtx(ctx)
	info, err := q.l.stream.Info(rctx)
	cancel()
	if err != nil {
		return 0, q.l.wrapErr("stream info", err)
	}
	end := info.State.LastSeq
	n := 0
	for from := uint64(1); from <= end; {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, err := q.next(ctx, from, q.l.subj("dlq", q.tok, ">"))
		if err != nil {
			return n, err
		}
		if m == nil || m.Sequence > end {
			break
		}
		from = m.Sequence + 1
		d, err := deadLetterOf(m)
		if err != nil {
			return n, err
		}
		if err := f(d, m.Sequence); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// eachChosen calls f for the dead letters of the given seqs, in Seq order,
// once per seq, with every stored copy's stream seq. It returns how many
// seqs had a dead letter.
func (q *queue) eachChosen(ctx context.Context, seqs []uint64, f func(d pipeline.DeadLetter, stored []uint64) error) (int, error) {
	n := 0
	for _, seq := range slices.Compact(slices.Sorted(slices.Values(seqs))) {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		found, err := q.findDead(ctx, seq)
		if err != nil {
			return n, err
		}
		if len(found) == 0 {
			continue
		}
		d, err := deadLetterOf(found[0])
		if err != nil {
			return n, err
		}
		stored := make([]uint64, len(found))
		for i, m := range found {
			stored[i] = m.Sequence
		}
		if err := f(d, stored); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// RetryDead writes, for each chosen dead letter, a queue entry and its
// retry state (attempts 0, the dead letter's error) in one atomic batch,
// then deletes the dead letter. Chosen seqs cost a get or two each; nil
// reads every dead letter once, one at a time in the order they died, so
// they join the queue in that order.
func (q *queue) RetryDead(ctx context.Context, seqs []uint64) (int, error) {
	if err := q.ensure(ctx); err != nil {
		return 0, err
	}
	retry := func(d pipeline.DeadLetter) error {
		rec := qRecord{Event: toRecord(d.Event), Route: d.Route, Payload: d.Payload}
		return q.enqueue(ctx, d.Seq, rec, d.Err, pipeline.StateRetrying)
	}
	if seqs == nil {
		return q.eachDead(ctx, func(d pipeline.DeadLetter, stored uint64) error {
			if err := retry(d); err != nil {
				return err
			}
			return q.deleteDead(ctx, stored)
		})
	}
	return q.eachChosen(ctx, seqs, func(d pipeline.DeadLetter, stored []uint64) error {
		if err := retry(d); err != nil {
			return err
		}
		for _, s := range stored {
			if err := q.deleteDead(ctx, s); err != nil {
				return err
			}
		}
		return nil
	})
}

// deleteDead deletes the dead letter stored at stream sequence seq; one
// already gone is no error.
func (q *queue) deleteDead(ctx context.Context, seq uint64) error {
	rctx, cancel := q.l.reqCtx(ctx)
	defer cancel()
	if err := q.l.stream.DeleteMsg(rctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return q.l.wrapErr("delete dead letter", err)
	}
	return nil
}

// DropDead deletes the chosen dead letters, a get or two and a delete per
// seq, then stores each one's delivery record as dropped, with when (a get
// and a publish more); nil purges the sink's dead-letter subjects in one
// request, reading none of them and marking no record: a record that said
// dead then reads as dropped, without a time (see deliveryOf), and a dead
// letter that Append wrote (its route's transform failed), which has no
// record, reads as unknown.
func (q *queue) DropDead(ctx context.Context, seqs []uint64) (int, error) {
	if q.l.isClosed() {
		return 0, pipeline.ErrClosed
	}
	if seqs == nil {
		return q.purgeDead(ctx)
	}
	now := time.Now().UTC()
	return q.eachChosen(ctx, seqs, func(d pipeline.DeadLetter, stored []uint64) error {
		for _, s := range stored {
			if err := q.deleteDead(ctx, s); err != nil {
				return err
			}
		}
		// After the delete: a crash between the two leaves a dead
		// record without its dead letter, which reads as dropped too.
		return q.markDropped(ctx, d, now)
	})
}

// markDropped stores the delivery record of the dead letter d as dropped
// at now, keeping its history.
func (q *queue) markDropped(ctx context.Context, d pipeline.DeadLetter, now time.Time) error {
	prev, err := q.getDR(ctx, d.Seq)
	if err != nil {
		return err
	}
	r := drRecord{Route: d.Route, State: pipeline.StateDead, Attempts: d.Attempts, Err: d.Err}
	if prev != nil {
		r = *prev
	}
	return q.l.publishBatch(ctx, []*nats.Msg{q.drMsg(d.Seq, drOf(r.record("").Dropped(now)))})
}

// purgeDead purges every dead letter of the sink and returns how many the
// server removed (jetstream's Purge does not say).
func (q *queue) purgeDead(ctx context.Context) (int, error) {
	rctx, cancel := q.l.reqCtx(ctx)
	defer cancel()
	req := mustJSON(struct {
		Filter string `json:"filter"`
	}{q.l.subj("dlq", q.tok, ">")})
	m, err := q.l.nc.RequestWithContext(rctx, "$JS.API.STREAM.PURGE."+q.l.prefix, req)
	if err != nil {
		return 0, q.l.wrapErr("purge dead letters", err)
	}
	var resp struct {
		Error   *apiError `json:"error"`
		Success bool      `json:"success"`
		Purged  uint64    `json:"purged"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return 0, fmt.Errorf("jetstream: purge dead letters: %w", err)
	}
	if resp.Error != nil {
		return 0, q.l.wrapErr("purge dead letters", resp.Error)
	}
	return int(resp.Purged), nil
}
