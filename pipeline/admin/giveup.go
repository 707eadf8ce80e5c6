package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/pipelined/pipelined/pipeline"
)

// GiveUpSet is the set of a sink's queue entries that an operator gave up
// on (dispatch.GiveUps): each goes to the dead-letter queue at its next
// turn instead of to the plugin. Add and Remove change the set, and
// return the error of keeping it across restarts: Add then adds nothing,
// and Remove has removed the entries all the same.
type GiveUpSet interface {
	Add(gs []pipeline.GiveUp) error
	Remove(seqs []uint64) error
}

// maxReason bounds the reason of a DLQ add, in bytes (the web UI's field
// takes 500 characters).
const maxReason = 2000

// Why [GiveUp] cannot act, for the API's status codes and the UI's pages.
var (
	// ErrCannotGiveUp: the daemon keeps no give-ups (Options.GiveUps is
	// nil: the JetStream backend, whose daemons share the queues), or its
	// log keeps no delivery records.
	ErrCannotGiveUp = errors.New("this daemon cannot give up on events (not with the JetStream backend, whose daemons share the queues)")
	// ErrSinkRemoved: a reload removed the sink; nothing delivers its queue.
	ErrSinkRemoved = errors.New("the sink was removed from the configuration: nothing delivers its queue")
)

// giveUp serves POST /v1/sinks/{sink}/dlq/add (see [GiveUp]).
func (s *server) giveUp(w http.ResponseWriter, r *http.Request) {
	sink := r.PathValue("sink")
	if !s.haveLog(w) || !s.checkSink(w, r, sink) || !s.canGiveUp(w, sink) {
		return
	}
	var req DeadLetterRequest
	if !readBody(w, r, &req) {
		return
	}
	switch {
	case req.All:
		writeError(w, http.StatusBadRequest, `give {"ids": [...]}: a whole queue is not given up on (pause the sink instead)`)
		return
	case len(req.IDs) == 0:
		writeError(w, http.StatusBadRequest, `give {"ids": [...]}`)
		return
	case len(req.IDs) > maxLimit:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%d ids: at most %d at a time", len(req.IDs), maxLimit))
		return
	}
	res, err := GiveUp(r.Context(), s.o, sink, req.IDs, req.Reason)
	if err != nil {
		writeError(w, GiveUpStatus(err), err.Error())
		return
	}
	if res.Count > 0 {
		s.log.Info("events given up on: they go to the dead-letter queue at their next turn",
			"sink", sink, "count", res.Count, "ids", res.IDs, "reason", req.Reason, "remote", r.RemoteAddr)
	}
	writeJSON(w, http.StatusOK, res)
}

// ErrBadReason: the reason is too long or not UTF-8.
var ErrBadReason = fmt.Errorf("reason: at most %d bytes of UTF-8", maxReason)

// GiveUpStatus is the HTTP status that answers an error of [GiveUp]: 501
// [ErrCannotGiveUp], 409 [ErrSinkRemoved], 400 [ErrBadReason], else as for
// an error of the log.
func GiveUpStatus(err error) int {
	switch {
	case errors.Is(err, ErrCannotGiveUp):
		return http.StatusNotImplemented
	case errors.Is(err, ErrSinkRemoved):
		return http.StatusConflict
	case errors.Is(err, ErrBadReason):
		return http.StatusBadRequest
	}
	return logStatus(err)
}

// canGiveUp answers 501 or 409 and returns false when nothing can give up
// on sink's events, before the body is read.
func (s *server) canGiveUp(w http.ResponseWriter, sink string) bool {
	_, _, err := giveUpSet(s.o, sink)
	if err != nil {
		writeError(w, GiveUpStatus(err), err.Error())
	}
	return err == nil
}

// giveUpSet returns sink's give-ups and the log's delivery records, or why
// there are none.
func giveUpSet(o Options, sink string) (GiveUpSet, pipeline.DeliveryLog, error) {
	dl, ok := o.Log.(pipeline.DeliveryLog)
	if o.GiveUps == nil || !ok {
		return nil, nil, ErrCannotGiveUp
	}
	set := o.GiveUps(sink)
	if set == nil {
		return nil, nil, fmt.Errorf("sink %q: %w", sink, ErrSinkRemoved)
	}
	return set, dl, nil
}

// GiveUp gives up on the events ids that wait in sink's queue (their
// delivery record there is queued or retrying): each goes to the
// dead-letter queue at its next turn instead of to the sink, with reason
// (trimmed) in its error; a retry is made due now where the queue can
// ([pipeline.Hastener]). The result names the ids given up on and, in
// NotFound, the others. It fails with [ErrCannotGiveUp] or
// [ErrSinkRemoved] when nothing can act on them, and with the log's error
// (nothing given up on) when it cannot tell which wait. POST
// /v1/sinks/{sink}/dlq/add and the web UI's event page call it.
func GiveUp(ctx context.Context, o Options, sink string, ids []string, reason string) (DeadLetterResult, error) {
	res := DeadLetterResult{Sink: sink, Action: "add", IDs: []string{}}
	set, dl, err := giveUpSet(o, sink)
	if err != nil {
		return res, err
	}
	if len(reason) > maxReason || !utf8.ValidString(reason) {
		return res, ErrBadReason
	}
	// It is printed to terminals (dlq list, events show) and logs.
	reason = strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, reason))
	var gs []pipeline.GiveUp
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		ok, err := WaitingIn(ctx, dl, sink, id)
		var es []pipeline.EventInfo
		if err == nil && ok {
			es, _, err = dl.Events(ctx, pipeline.EventFilter{ID: id, Limit: 1})
		}
		if err != nil {
			return res, err
		}
		if len(es) == 0 {
			res.NotFound = append(res.NotFound, id)
			continue
		}
		gs = append(gs, pipeline.GiveUp{Seq: es[0].Seq, ID: id, Reason: reason})
	}
	if err := set.Add(gs); err != nil {
		return res, fmt.Errorf("nothing was given up on: %w", err)
	}
	// Look again: an entry settled for good between the first look and Add
	// would stay in the set (the dispatcher clears an entry once its
	// settlement is recorded, which is then visible here), and would give
	// up on the event's next life in the queue. So this look is not cut
	// short by the caller, and one that fails takes every entry back out.
	ctx = context.WithoutCancel(ctx)
	var kept, settled []uint64
	for _, e := range gs {
		ok, err := WaitingIn(ctx, dl, sink, e.ID)
		if err != nil {
			return DeadLetterResult{Sink: sink, Action: "add", IDs: []string{}},
				errors.Join(fmt.Errorf("nothing was given up on: %w", err), set.Remove(seqsOf(gs)))
		}
		if !ok {
			settled = append(settled, e.Seq)
			res.NotFound = append(res.NotFound, e.ID)
			continue
		}
		res.IDs, kept = append(res.IDs, e.ID), append(kept, e.Seq)
	}
	if err := set.Remove(settled); err != nil && o.Logger != nil {
		o.Logger.Warn("events settled before they were given up on are still named in the list that keeps give-ups across restarts",
			"sink", sink, "err", err)
	}
	res.Count = len(res.IDs)
	// A retry due in an hour need not be waited for.
	if h, ok := o.Log.Queue(sink).(pipeline.Hastener); ok && len(kept) > 0 {
		if _, err := h.Hasten(ctx, kept); err != nil && o.Logger != nil {
			o.Logger.Warn("events given up on could not be made due now; they go at their next attempt",
				"sink", sink, "err", err)
		}
	}
	return res, nil
}

// seqsOf returns the seqs of gs.
func seqsOf(gs []pipeline.GiveUp) []uint64 {
	seqs := make([]uint64, len(gs))
	for i, e := range gs {
		seqs[i] = e.Seq
	}
	return seqs
}

// WaitingIn reports whether the event id waits in sink's queue: its
// delivery record there is queued or retrying. The daemon asks it of the
// give-ups it kept across a restart.
func WaitingIn(ctx context.Context, dl pipeline.DeliveryLog, sink, id string) (bool, error) {
	rs, err := dl.Deliveries(ctx, id)
	if errors.Is(err, pipeline.ErrNotFound) { // not in the log, or no longer
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, d := range rs {
		if d.Sink == sink && pipeline.MatchState(pipeline.StatePending, d.State) {
			return true, nil
		}
	}
	return false, nil
}
