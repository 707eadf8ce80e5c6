package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/pipelined/pipelined/pipeline"
)

// GiveUpSet is the set of a sink's queue entries that an operator gave up
// on (dispatch.GiveUps): each goes to the dead-letter queue at its next
// turn instead of to the plugin.
type GiveUpSet interface {
	Add(seqs []uint64, reason string)
	Remove(seqs []uint64)
}

// maxReason bounds the reason of a DLQ add, in bytes.
const maxReason = 500

// giveUp serves POST /v1/sinks/{sink}/dlq/add: the events named, waiting
// in the sink's queue (queued or retrying), go to its dead-letter queue at
// their next turn instead of being delivered; a retry is made due now
// where the queue can ([pipeline.Hastener]).
func (s *server) giveUp(w http.ResponseWriter, r *http.Request) {
	sink := r.PathValue("sink")
	if !s.haveLog(w) || !s.checkSink(w, r, sink) {
		return
	}
	dl, ok := s.o.Log.(pipeline.DeliveryLog)
	if s.o.GiveUps == nil || !ok {
		writeError(w, http.StatusNotImplemented, "this daemon cannot give up on events (not with the JetStream backend, whose daemons share the queues)")
		return
	}
	set := s.o.GiveUps(sink)
	if set == nil {
		writeError(w, http.StatusConflict, fmt.Sprintf("sink %q was removed from the configuration: nothing delivers its queue", sink))
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
	case len(req.Reason) > maxReason || !utf8.ValidString(req.Reason):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("reason: at most %d bytes of UTF-8", maxReason))
		return
	}
	reason := strings.TrimSpace(req.Reason)
	res := DeadLetterResult{Sink: sink, Action: "add", IDs: []string{}}
	var seqs []uint64
	var ids []string
	seen := map[string]bool{}
	for _, id := range req.IDs {
		if seen[id] {
			continue
		}
		seen[id] = true
		seq, waiting, err := waitingIn(r.Context(), dl, sink, id)
		if err != nil {
			writeLogError(w, err)
			return
		}
		if !waiting {
			res.NotFound = append(res.NotFound, id)
			continue
		}
		seqs, ids = append(seqs, seq), append(ids, id)
	}
	set.Add(seqs, reason)
	// Look again: an entry settled for good between the first look and Add
	// would stay in the set (the dispatcher clears an entry once its
	// settlement is recorded, which is then visible here), and would give
	// up on the event's next life in the queue. So this look is not cut
	// short by the client, and one that fails takes every entry back out.
	ctx := context.WithoutCancel(r.Context())
	var kept []uint64
	for i, id := range ids {
		_, waiting, err := waitingIn(ctx, dl, sink, id)
		if err != nil {
			set.Remove(seqs)
			writeLogError(w, fmt.Errorf("nothing was given up on: %w", err))
			return
		}
		if !waiting {
			set.Remove(seqs[i : i+1])
			res.NotFound = append(res.NotFound, id)
			continue
		}
		res.IDs = append(res.IDs, id)
		kept = append(kept, seqs[i])
	}
	res.Count = len(res.IDs)
	// A retry due in an hour need not be waited for.
	if h, ok := s.o.Log.Queue(sink).(pipeline.Hastener); ok && len(kept) > 0 {
		if _, err := h.Hasten(ctx, kept); err != nil {
			s.log.Warn("events given up on could not be made due now; they go at their next attempt",
				"sink", sink, "err", err)
		}
	}
	s.log.Info("events given up on: they go to the dead-letter queue at their next turn",
		"sink", sink, "count", res.Count, "ids", res.IDs, "reason", reason, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, res)
}

// waitingIn reports whether the event id waits in sink's queue (its
// delivery record there is queued or retrying), and its seq.
func waitingIn(ctx context.Context, dl pipeline.DeliveryLog, sink, id string) (uint64, bool, error) {
	es, _, err := dl.Events(ctx, pipeline.EventFilter{ID: id, Limit: 1})
	if err != nil || len(es) == 0 {
		return 0, false, err
	}
	rs, err := dl.Deliveries(ctx, id)
	if errors.Is(err, pipeline.ErrNotFound) { // retention removed it meanwhile
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	for _, d := range rs {
		if d.Sink == sink && pipeline.MatchState(pipeline.StatePending, d.State) {
			return es[0].Seq, true, nil
		}
	}
	return 0, false, nil
}

// forgetGivenUp removes seqs from sink's give-ups, before a DLQ retry or a
// replay queues them again: an entry left there (given up on in a race the
// admin call lost, or by another daemon) would give up on the event's next
// life in the queue.
func (s *server) forgetGivenUp(sink string, seqs []uint64) {
	if s.o.GiveUps == nil || len(seqs) == 0 {
		return
	}
	if set := s.o.GiveUps(sink); set != nil {
		set.Remove(seqs)
	}
}
