package jetstreamlog

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipelined/pipelined/pipeline"
)

// Delivery records: P.dr.<sink>.<seq> holds the record of the event at seq
// for one sink (a drRecord), Nats-TTL = the log's retention. See the
// package doc.

var _ pipeline.DeliveryLog = (*Log)(nil)

type drRecord struct {
	Route       string    `json:"route,omitempty"`
	State       string    `json:"state"`
	Attempts    int       `json:"attempts"`
	First       time.Time `json:"first,omitzero"`
	Last        time.Time `json:"last,omitzero"`
	Err         string    `json:"err,omitempty"`
	DeliveredAt time.Time `json:"delivered_at,omitzero"`
	Next        time.Time `json:"next,omitzero"` // NextAttemptAt
	DroppedAt   time.Time `json:"dropped_at,omitzero"`
	// NotAttempted is NotAttemptedReason.
	NotAttempted string `json:"not_attempted,omitempty"`
	// Failures are the latest failed attempts (pipeline.MaxFailures).
	Failures []pipeline.Failure `json:"failures,omitempty"`
}

func (q *queue) drSubject(seq uint64) string {
	return q.l.subj("dr", q.tok, strconv.FormatUint(seq, 10))
}

// drMsg is the message that stores r as the record of seq.
func (q *queue) drMsg(seq uint64, r drRecord) *nats.Msg {
	m := nats.NewMsg(q.drSubject(seq))
	m.Data = mustJSON(r)
	if q.l.opts.Retention > 0 {
		m.Header.Set(hdrTTL, ttl(q.l.opts.Retention))
	}
	return m
}

// getDR reads the record of seq; nil when there is none.
func (q *queue) getDR(ctx context.Context, seq uint64) (*drRecord, error) {
	rctx, cancel := q.l.reqCtx(ctx)
	defer cancel()
	m, err := q.l.stream.GetLastMsgForSubject(rctx, q.drSubject(seq))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, q.l.wrapErr("get delivery record", err)
	}
	var r drRecord
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return nil, fmt.Errorf("jetstream: delivery record %s: %w", m.Subject, err)
	}
	return &r, nil
}

// settledDR is the record of ls after one more attempt that ended in s.
func settledDR(ls *lease, s pipeline.Settlement, now time.Time) drRecord {
	var r drRecord
	if ls.dr != nil {
		r = *ls.dr
	}
	r.Route = ls.rec.Route
	return drOf(r.record("").Settled(s, now))
}

// drOf is the stored form of r.
func drOf(r pipeline.DeliveryRecord) drRecord {
	return drRecord{Route: r.Route, State: r.State, Attempts: r.Attempts, First: r.FirstAttemptAt,
		Last: r.LastAttemptAt, Err: r.LastError, DeliveredAt: r.DeliveredAt, Next: r.NextAttemptAt, DroppedAt: r.DroppedAt, Failures: r.Failures,
		NotAttempted: r.NotAttemptedReason}
}

func (r drRecord) record(sink string) pipeline.DeliveryRecord {
	return pipeline.DeliveryRecord{Sink: sink, Route: r.Route, State: r.State, Attempts: r.Attempts,
		FirstAttemptAt: r.First, LastAttemptAt: r.Last, LastError: r.Err, DeliveredAt: r.DeliveredAt, NextAttemptAt: r.Next,
		DroppedAt: r.DroppedAt, Failures: r.Failures, NotAttemptedReason: r.NotAttempted}
}

// deliveryOf returns the record of the event (seq, id) at sink: the stored
// one, or what the queue says (a queue entry is queued, a dead letter is
// dead: Append's has no record, and Settle's outlives its record's TTL).
//
// A record that says dead is checked against the dead-letter queue: a
// drop of the whole queue (DropDead(nil), one purge) marks no record, so
// a dead record whose dead letter is gone was dropped, at a time no one
// wrote down. That costs a get or two for each dead record read, on the
// admin API's path only.
func (l *Log) deliveryOf(ctx context.Context, seq uint64, id, sink string) (pipeline.DeliveryRecord, error) {
	q := l.Queue(sink).(*queue)
	dr, err := q.getDR(ctx, seq)
	if err != nil {
		return pipeline.DeliveryRecord{}, err
	}
	if dr != nil && dr.State == pipeline.StateDead {
		dead, err := q.dead(ctx, seq, id)
		if err != nil {
			return pipeline.DeliveryRecord{}, err
		}
		if !dead {
			dr.State = pipeline.StateDropped
		}
	}
	if dr != nil {
		return dr.record(sink), nil
	}
	for _, c := range []struct{ subject, state string }{
		{q.qSubject(id), pipeline.StateQueued},
		{q.dlqSubject(id), pipeline.StateDead},
		{q.deadSubject(seq), pipeline.StateDead}, // its record gone with retention
	} {
		rctx, cancel := l.reqCtx(ctx)
		m, err := l.stream.GetLastMsgForSubject(rctx, c.subject)
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return pipeline.DeliveryRecord{}, l.wrapErr("get queue entry", err)
		}
		var r dlqRecord
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return pipeline.DeliveryRecord{}, fmt.Errorf("jetstream: %s: %w", m.Subject, err)
		}
		return drRecord{Route: r.Route, State: c.state, Attempts: r.Attempts, Err: r.Err}.record(sink), nil
	}
	return pipeline.DeliveryRecord{Sink: sink, State: pipeline.StateUnknown}, nil
}

// untoken reverses token.
func untoken(t string) string {
	if !strings.HasPrefix(t, "~") {
		return t
	}
	b, err := base64.RawURLEncoding.DecodeString(t[1:])
	if err != nil {
		return t
	}
	return string(b)
}

// Deliveries implements [pipeline.DeliveryLog]: one get per sink the event
// was routed to (two or three for one never settled), and one stream info
// call for the sinks it was replayed to.
func (l *Log) Deliveries(ctx context.Context, id string) ([]pipeline.DeliveryRecord, error) {
	if l.isClosed() {
		return nil, pipeline.ErrClosed
	}
	if id == "" {
		return nil, fmt.Errorf("event %q: %w", id, pipeline.ErrNotFound)
	}
	rctx, cancel := l.reqCtx(ctx)
	m, err := l.stream.GetLastMsgForSubject(rctx, l.evSubject(id))
	cancel()
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("event %q: %w", id, pipeline.ErrNotFound)
	}
	if err != nil {
		return nil, l.wrapErr("get event", err)
	}
	_, sinks, err := decodeEvent(m)
	if err != nil {
		return nil, err
	}
	out := make([]pipeline.DeliveryRecord, 0, len(sinks))
	for _, s := range sinks {
		r, err := l.deliveryOf(ctx, m.Sequence, id, s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	rctx, cancel = l.reqCtx(ctx)
	info, err := l.stream.Info(rctx, jetstream.WithSubjectFilter(l.subj("dr", "*", strconv.FormatUint(m.Sequence, 10))))
	cancel()
	if err != nil {
		return nil, l.wrapErr("stream info", err)
	}
	var more []string
	for subj := range info.State.Subjects {
		parts := strings.Split(strings.TrimPrefix(subj, l.prefix+".dr."), ".")
		if s := untoken(parts[0]); !slices.Contains(sinks, s) {
			more = append(more, s)
		}
	}
	slices.Sort(more)
	for _, s := range more {
		r, err := l.deliveryOf(ctx, m.Sequence, id, s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// matchState reports whether the event has a delivery to sink (to any of
// sinks when sink is empty) in the filter's state.
func (l *Log) matchState(ctx context.Context, seq uint64, id string, sinks []string, sink, state string) (bool, error) {
	if state == "" {
		return true, nil
	}
	if sink != "" {
		sinks = []string{sink}
	}
	for _, s := range sinks {
		r, err := l.deliveryOf(ctx, seq, id, s)
		if err != nil {
			return false, err
		}
		if pipeline.MatchState(state, r.State) {
			return true, nil
		}
	}
	return false, nil
}
