package admin

import (
	"context"
	"errors"
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
	AddNextRetries(r.Context(), s.o.Log, sinks)
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

// AddNextRetries fills in NextRetrySeconds, from l, of each sink with
// events waiting for a retry whose queue is a [pipeline.RetryClock]: a
// lookup per sink, not a walk of its retries (P9: /v1/sinks may be polled
// every few seconds during an outage of a million retries). A paused or
// removed sink, one whose counts are not known and one that has it
// already are left as they are; so is a sink whose lookup fails (the
// field is then absent: its figure is not known). l may be nil.
func AddNextRetries(ctx context.Context, l pipeline.Log, sinks []SinkStatus) {
	if l == nil {
		return
	}
	now := time.Now()
	for i := range sinks {
		s := &sinks[i]
		if s.NextRetrySeconds != 0 || s.Retrying == 0 || s.CountsUnknown() || s.Paused || s.Plugin == PluginRemoved {
			continue
		}
		rc, ok := l.Queue(s.Name).(pipeline.RetryClock)
		if !ok {
			continue
		}
		if at, err := rc.NextRetry(ctx, now); err == nil && !at.IsZero() {
			// At least a millisecond: 0 would leave the field out.
			s.NextRetrySeconds = max(at.Sub(now).Seconds(), 0.001)
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
	more := false
	if after < math.MaxUint64 { // a log seeks after+1: the last seq would wrap to the first page
		if dls, more, err = DeadLetterPage(r.Context(), s.o.Log.Queue(sink), after, limit); err != nil {
			writeLogError(w, err)
			return
		}
	}
	out := DeadLetterList{Sink: sink, DeadLetters: []DeadLetter{}}
	if more {
		out.Next = strconv.FormatUint(dls[len(dls)-1].Seq, 10)
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
	if action == "retry" {
		if err := RetryRefused(st); err != nil {
			writeError(w, http.StatusConflict, err.Error())
			return
		}
	}
	var res DeadLetterResult
	var err error
	if req.All {
		res, err = SettleAllDead(r.Context(), s.o, sink, action, PageDeadline(w))
	} else {
		res, err = settleDeadByID(r.Context(), s.o, sink, action, req.IDs)
	}
	if err != nil {
		if res.Count > 0 {
			s.log.Warn("dead letters "+settledVerb[action]+" in part: call again for the rest",
				"sink", sink, "count", res.Count, "err", err, "remote", r.RemoteAddr)
		}
		writeLogError(w, err)
		return
	}
	s.log.Info("dead letters "+settledVerb[action],
		"sink", sink, "count", res.Count, "all", req.All, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, res)
}

// ErrRetryRemoved: the dead letters of a sink removed from the
// configuration are not retried, since nothing would deliver them; see
// [RetryRefused].
var ErrRetryRemoved = errors.New("nothing would deliver its dead letters, which would only wait in its queue; add the sink back (its [[sink]], then reload) to retry them, or drop them (dlq drop)")

// RetryRefused returns why the dead letters of the sink st reports cannot
// be retried, wrapping [ErrRetryRemoved], or nil when they can: POST
// /v1/sinks/{sink}/dlq/retry answers it with 409, and the web UI shows it
// instead of its retry buttons.
func RetryRefused(st SinkStatus) error {
	if st.Plugin != PluginRemoved {
		return nil
	}
	return fmt.Errorf("sink %q was removed from the configuration: %w", st.Name, ErrRetryRemoved)
}

// settledVerb is what POST dlq/retry and dlq/drop did, for the log.
var settledVerb = map[string]string{"retry": "retried", "drop": "dropped"}

// The bounds of a call on a whole dead-letter queue ({"all": true}).
const (
	// settleAllPage is how many dead letters one RetryDead or DropDead
	// call of the walk takes.
	settleAllPage = 1000
	// MaxListedIDs is how many ids a [DeadLetterResult] of a whole queue
	// names; IDsOmitted counts the others.
	MaxListedIDs = 1000
)

// SettleAllDead retries (action "retry") or drops ("drop") every dead
// letter of sink, a page at a time, so that a dead-letter queue of a
// million events (a day-long outage) holds a page's seqs and ids at most
// (and the few dead letters of one read of the log); beforePage, if
// not nil, is called before each page (the admin API moves its answer's
// write deadline there). The result names the first [MaxListedIDs] ids and
// counts the others; on an error, Count says what was done. POST
// /v1/sinks/{sink}/dlq/retry and /drop with {"all": true} and the web UI's
// "all" buttons call it. It looks at ctx before each page: a client that
// hangs up stops it between pages.
func SettleAllDead(ctx context.Context, o Options, sink, action string, beforePage func()) (DeadLetterResult, error) {
	res := DeadLetterResult{Sink: sink, Action: action, IDs: []string{}}
	q := o.Log.Queue(sink)
	for after := uint64(0); ; {
		if err := ctx.Err(); err != nil { // the client hung up: the pages done stay done
			return res, err
		}
		if beforePage != nil {
			beforePage()
		}
		// A page's seqs and ids only: its dead letters, each with its
		// payload (up to rules.MaxPayload), would weigh up to a
		// thousand times that.
		var seqs []uint64
		err := eachDeadLetter(ctx, q, after, func(d pipeline.DeadLetter) bool {
			seqs = append(seqs, d.Seq)
			if len(res.IDs) < MaxListedIDs {
				res.IDs = append(res.IDs, d.Event.ID)
			} else {
				res.IDsOmitted++
			}
			return len(seqs) < settleAllPage
		})
		if err != nil || len(seqs) == 0 {
			return res, err
		}
		n, err := SettleDead(ctx, o, sink, action, seqs)
		res.Count += n
		if err != nil {
			return res, err
		}
		after = seqs[len(seqs)-1]
	}
}

// settleDeadByID retries or drops the dead letters of sink whose events
// have the given ids; the others go to the result's NotFound. The queue is
// read whole to find them, holding only the seqs asked for.
func settleDeadByID(ctx context.Context, o Options, sink, action string, ids []string) (DeadLetterResult, error) {
	res := DeadLetterResult{Sink: sink, Action: action, IDs: []string{}}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var seqs []uint64
	if err := EachDeadLetter(ctx, o.Log.Queue(sink), func(d pipeline.DeadLetter) {
		if want[d.Event.ID] {
			seqs = append(seqs, d.Seq)
			res.IDs = append(res.IDs, d.Event.ID)
			delete(want, d.Event.ID)
		}
	}); err != nil {
		return res, err
	}
	for _, id := range ids {
		if want[id] {
			res.NotFound = append(res.NotFound, id)
		}
	}
	if len(seqs) == 0 {
		return res, nil
	}
	var err error
	res.Count, err = SettleDead(ctx, o, sink, action, seqs)
	return res, err
}

// SettleDead retries (action "retry") or drops ("drop") the dead letters
// seqs of sink, and tells [Options.OnDropDead] of a drop: of a queue with
// per-key order (a [pipeline.Holder]), exactly the seqs its drop removed,
// even when it failed part way. seqs were read before: a retry of the same
// dead letters in between (dlq retry --all racing dlq drop --all) leaves
// them in the queue again, and a key held behind one must not go on.
func SettleDead(ctx context.Context, o Options, sink, action string, seqs []uint64) (int, error) {
	q := o.Log.Queue(sink)
	if action == "retry" {
		return q.RetryDead(ctx, seqs)
	}
	if h, ok := q.(pipeline.Holder); ok && seqs != nil {
		dropped, err := h.DropDeadSeqs(ctx, seqs)
		if len(dropped) > 0 && o.OnDropDead != nil {
			o.OnDropDead(sink, dropped)
		}
		return len(dropped), err
	}
	// Not a Holder: no per-key order to tell.
	n, err := q.DropDead(ctx, seqs)
	if err == nil && o.OnDropDead != nil {
		o.OnDropDead(sink, seqs)
	}
	return n, err
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
// log order, without its event's body (a log reads each dead letter with
// its event, and a walk holds none of those bodies). The admin
// API's retry and drop and the UI's "all" use it to name exactly what they
// act on.
func EachDeadLetter(ctx context.Context, q pipeline.Queue, visit func(pipeline.DeadLetter)) error {
	return eachDeadLetter(ctx, q, 0, func(d pipeline.DeadLetter) bool {
		visit(d)
		return true
	})
}

// DeadLetterPageBytes is what the payloads and errors of a page of
// [DeadLetterPage] hold at most, past its first dead letter.
const DeadLetterPageBytes = pageBytes

// DeadLetterPage returns the entries of q's dead-letter queue with Seq >
// after, in log order, without their events' bodies, for a page: up to
// limit of them, ending before one past the first once their payloads
// and errors hold [DeadLetterPageBytes] (a transform's output can be 1
// MiB: a page of 1,000 answered a gigabyte, encoded whole before it was
// written, some seven times that at its peak), and says whether more
// come after. It reads the log as [EachDeadLetter] does, a few large
// ones at a time. GET /v1/sinks/{sink}/dlq and the web UI's dead-letter
// page use it.
func DeadLetterPage(ctx context.Context, q pipeline.Queue, after uint64, limit int) (out []pipeline.DeadLetter, more bool, err error) {
	size := 0
	err = eachDeadLetter(ctx, q, after, func(d pipeline.DeadLetter) bool {
		if len(out) >= limit || (len(out) > 0 && size+len(d.Payload)+len(d.Err) > pageBytes) {
			more = true
			return false
		}
		out = append(out, d)
		size += len(d.Payload) + len(d.Err)
		return true
	})
	return out, more, err
}

// deadLetterChunk is how many dead letters eachDeadLetter asks a log for
// at a time at most, and firstDeadLetterChunk at first, before it knows
// their sizes.
const (
	deadLetterChunk      = 32
	firstDeadLetterChunk = 4
)

// eachDeadLetter calls visit for the entries of q's dead-letter queue with
// Seq > after, in log order, each without its event's body, until visit
// returns false or none is left.
//
// A log reads each dead letter with its payload (up to 1 MiB) and its
// event's body (up to max_body): after the first chunk, a chunk holds as
// many as the sizes seen so far say fit in [pageBytes] (at least one), as
// GET /v1/events reads, so that a chunk of 32 such dead letters does not
// hold 64 MiB (280 MB of the daemon's memory, measured) for one page.
func eachDeadLetter(ctx context.Context, q pipeline.Queue, after uint64, visit func(pipeline.DeadLetter) bool) error {
	chunk := firstDeadLetterChunk
	seen, bytes := 0, 0
	for after < math.MaxUint64 { // a log seeks after+1
		dls, err := q.DeadLetters(ctx, after, chunk)
		if err != nil {
			return err
		}
		for _, d := range dls {
			seen++
			bytes += len(d.Payload) + len(d.Event.Body) + len(d.Err) + 1
			d.Event.Body = nil
			if !visit(d) {
				return nil
			}
		}
		if len(dls) < chunk {
			return nil
		}
		after = dls[len(dls)-1].Seq
		chunk = max(1, min(deadLetterChunk, pageBytes/max(1, bytes/seen)))
	}
	return nil
}
