package admin

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

func (s *server) sinks(w http.ResponseWriter, r *http.Request) {
	sinks, err := s.o.Sinks(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	AddOldestAges(r.Context(), s.o.Log, sinks)
	list := SinkList{Sinks: sinks}
	if slices.ContainsFunc(sinks, func(s SinkStatus) bool { return s.Rebuilding }) {
		if p, ok := pipeline.QueuesRebuilding(s.o.Log); ok {
			list.QueuesRebuild = &QueuesRebuild{Read: p.Read, Total: p.Total, Error: p.Err}
		}
	}
	writeJSON(w, http.StatusOK, list)
}

// AddOldestAges fills in OldestAgeSeconds, from l, of each sink with
// events waiting that does not have it yet. l may be nil.
func AddOldestAges(ctx context.Context, l pipeline.Log, sinks []SinkStatus) {
	if l == nil {
		return
	}
	now := time.Now()
	for i := range sinks {
		if sinks[i].OldestAgeSeconds != 0 || sinks[i].Ready+sinks[i].Retrying == 0 {
			continue
		}
		if at, err := l.Queue(sinks[i].Name).Oldest(ctx); err == nil && !at.IsZero() {
			sinks[i].OldestAgeSeconds = max(now.Sub(at).Seconds(), 0.001)
		}
	}
}

func (s *server) deadLetters(w http.ResponseWriter, r *http.Request) {
	sink := r.PathValue("sink")
	if !s.haveLog(w) || !s.checkSink(w, r, sink) {
		return
	}
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	after := uint64(0)
	if a := q.Get("after"); a != "" {
		if after, err = strconv.ParseUint(a, 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("after %q: want the seq a previous page returned as next", a))
			return
		}
	}
	var dls []pipeline.DeadLetter
	if after < math.MaxUint64 { // a log seeks after+1: the last seq would wrap to the first page
		if dls, err = DeadLetterPage(r.Context(), s.o.Log.Queue(sink), after, limit+1); err != nil {
			writeLogError(w, err)
			return
		}
	}
	out := DeadLetterList{Sink: sink, DeadLetters: []DeadLetter{}}
	if len(dls) > limit {
		dls = dls[:limit]
		out.Next = strconv.FormatUint(dls[limit-1].Seq, 10)
	}
	for _, d := range dls {
		out.DeadLetters = append(out.DeadLetters, DeadLetter{ID: d.Event.ID, Seq: d.Seq, Source: d.Event.Source, ReceivedAt: d.Event.ReceivedAt,
			Route: d.Route, Attempts: d.Attempts, Error: d.Err, FailedAt: d.FailedAt, Payload: rawJSON(d.Payload)})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) settleDead(w http.ResponseWriter, r *http.Request) {
	sink := r.PathValue("sink")
	action := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	if !s.haveLog(w) {
		return
	}
	st, ok := s.findSink(w, r, sink)
	if !ok {
		return
	}
	var req DeadLetterRequest
	if !readBody(w, r, &req) {
		return
	}
	if req.All == (len(req.IDs) > 0) {
		writeError(w, http.StatusBadRequest, `give {"ids": [...]} or {"all": true}`)
		return
	}
	if action == "retry" && st.Plugin == PluginRemoved {
		writeError(w, http.StatusConflict, fmt.Sprintf("sink %q was removed from the configuration: nothing would deliver its dead letters, which would only wait in its queue; add the sink back (its [[sink]], then reload) to retry them, or drop them with dlq drop", sink))
		return
	}
	// Find the seqs: the dead-letter queue is read whole (it is kept small
	// by operators), so the answer names exactly what was acted on.
	q := s.o.Log.Queue(sink)
	want := map[string]bool{}
	for _, id := range req.IDs {
		want[id] = true
	}
	res := DeadLetterResult{Sink: sink, Action: action, IDs: []string{}}
	var seqs []uint64
	if err := EachDeadLetter(r.Context(), q, func(d pipeline.DeadLetter) {
		if req.All || want[d.Event.ID] {
			seqs = append(seqs, d.Seq)
			res.IDs = append(res.IDs, d.Event.ID)
			delete(want, d.Event.ID)
		}
	}); err != nil {
		writeLogError(w, err)
		return
	}
	for _, id := range req.IDs {
		if want[id] {
			res.NotFound = append(res.NotFound, id)
		}
	}
	var err error
	if len(seqs) > 0 {
		if action == "retry" {
			res.Count, err = q.RetryDead(r.Context(), seqs)
		} else {
			res.Count, err = q.DropDead(r.Context(), seqs)
			if err == nil && s.o.OnDropDead != nil {
				s.o.OnDropDead(sink, seqs)
			}
		}
	}
	if err != nil {
		writeLogError(w, err)
		return
	}
	s.log.Info("dead letters "+map[string]string{"retry": "retried", "drop": "dropped"}[action],
		"sink", sink, "count", res.Count, "all", req.All, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, res)
}

// pause serves POST /v1/sinks/{sink}/pause and /resume.
func (s *server) pause(w http.ResponseWriter, r *http.Request) {
	sink := r.PathValue("sink")
	paused := strings.HasSuffix(r.URL.Path, "/pause")
	if s.o.Pause == nil {
		writeError(w, http.StatusServiceUnavailable, "this daemon cannot pause sinks")
		return
	}
	if !s.checkSink(w, r, sink) {
		return
	}
	changed, err := s.o.Pause(sink, paused)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info(map[bool]string{true: "sink pause requested", false: "sink resume requested"}[paused],
		"sink", sink, "changed", changed, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, SinkPause{Sink: sink, Paused: paused, Changed: changed})
}

// EachDeadLetter calls visit for every entry of q's dead-letter queue, in
// log order, without its event's body (see [DeadLetterPage]). The admin
// API's retry and drop and the UI's "all" use it to name exactly what they
// act on.
func EachDeadLetter(ctx context.Context, q pipeline.Queue, visit func(pipeline.DeadLetter)) error {
	return eachDeadLetter(ctx, q, 0, func(d pipeline.DeadLetter) bool {
		visit(d)
		return true
	})
}

// DeadLetterPage returns up to limit entries of q's dead-letter queue with
// Seq > after, in log order, without their events' bodies: a log reads
// each dead letter with its event, and a page of a thousand read at once
// would hold a thousand bodies. It reads [deadLetterChunk] at a time.
func DeadLetterPage(ctx context.Context, q pipeline.Queue, after uint64, limit int) ([]pipeline.DeadLetter, error) {
	var out []pipeline.DeadLetter
	err := eachDeadLetter(ctx, q, after, func(d pipeline.DeadLetter) bool {
		out = append(out, d)
		return len(out) < limit
	})
	return out, err
}

// deadLetterChunk is how many dead letters eachDeadLetter asks a log for
// at a time.
const deadLetterChunk = 32

// eachDeadLetter calls visit for the entries of q's dead-letter queue with
// Seq > after, in log order, each without its event's body, until visit
// returns false or none is left.
func eachDeadLetter(ctx context.Context, q pipeline.Queue, after uint64, visit func(pipeline.DeadLetter) bool) error {
	for after < math.MaxUint64 { // a log seeks after+1
		dls, err := q.DeadLetters(ctx, after, deadLetterChunk)
		if err != nil {
			return err
		}
		for _, d := range dls {
			d.Event.Body = nil
			if !visit(d) {
				return nil
			}
		}
		if len(dls) < deadLetterChunk {
			return nil
		}
		after = dls[len(dls)-1].Seq
	}
	return nil
}
