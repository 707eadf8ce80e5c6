package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
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
	// ErrSinkConfigured: a whole queue ({"all": true}, [GiveUpAll]) is
	// given up on only for a sink the configuration no longer names; a
	// live sink's events are given up on one by one.
	ErrSinkConfigured = errors.New("the sink is in the configuration, and only a removed sink's whole queue is given up on: give up on its events by id (--id ID), or remove the sink from the configuration, reload, and use --all")
)

// giveUp serves POST /v1/sinks/{sink}/dlq/add (see [GiveUp], and
// [GiveUpAll] for {"all": true}).
func (s *server) giveUp(w http.ResponseWriter, r *http.Request) {
	sink := r.PathValue("sink")
	if !s.haveLog(w) || !s.checkSink(w, r, sink) {
		return
	}
	// 501 before the body is read; a removed sink's 409 waits for it,
	// since its whole queue can be given up on.
	_, _, setErr := giveUpSet(s.o, sink)
	if setErr != nil && !errors.Is(setErr, ErrSinkRemoved) {
		writeError(w, GiveUpStatus(setErr), setErr.Error())
		return
	}
	var req DeadLetterRequest
	if !readBody(w, r, &req) {
		return
	}
	switch {
	case req.All && len(req.IDs) > 0:
		writeError(w, http.StatusBadRequest, `give {"ids": [...]} or {"all": true}, not both`)
		return
	case req.All && setErr == nil:
		err := fmt.Errorf("sink %q: %w", sink, ErrSinkConfigured)
		writeError(w, GiveUpStatus(err), err.Error())
		return
	case req.All:
		s.giveUpAll(w, r, sink, req.Reason)
		return
	case setErr != nil:
		writeError(w, GiveUpStatus(setErr), setErr.Error()+`: give up on its whole queue with {"all": true} (pipelined dlq add SINK --all)`)
		return
	case len(req.IDs) == 0:
		writeError(w, http.StatusBadRequest, `give {"ids": [...]}, or {"all": true} for the queue of a removed sink`)
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

// giveUpAll serves POST /v1/sinks/{sink}/dlq/add with {"all": true}: it
// runs [GiveUpAll] to the end, in pages, pushing the answer's write
// deadline forward before each, so that the admin write_timeout bounds a
// page and not the whole call (a day-long outage can leave a million
// events).
func (s *server) giveUpAll(w http.ResponseWriter, r *http.Request, sink, reason string) {
	// Before the line that says it starts: a reason refused with 400 left
	// "giving up on every event" in the log of a call that moved none.
	reason, err := cleanReason(reason)
	if err != nil {
		writeError(w, GiveUpStatus(err), err.Error())
		return
	}
	extend := PageDeadline(w)
	s.log.Info("giving up on every event waiting for a removed sink: each goes to its dead-letter queue now",
		"sink", sink, "reason", reason, "remote", r.RemoteAddr)
	o := s.o
	o.Logger = s.log
	res, err := GiveUpAll(r.Context(), o, sink, reason, extend)
	extend()
	if err != nil {
		if res.Count > 0 {
			s.log.Warn("giving up on a removed sink's queue stopped: what was moved stays in its dead-letter queue",
				"sink", sink, "count", res.Count, "rest", giveUpAllRest(err), "err", err)
		}
		err = GiveUpAllError(res.Count, err)
		writeError(w, GiveUpStatus(err), err.Error())
		return
	}
	s.log.Info("events of a removed sink given up on: they are in its dead-letter queue (pipelined dlq drop SINK --all deletes them)",
		"sink", sink, "count", res.Count, "reason", reason, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, res)
}

// GiveUpAllError is the error to answer for err, returned by a
// [GiveUpAll] that moved count events before it stopped: err, and when
// count > 0, how many were moved (they stay dead letters) and what
// becomes of the rest. The admin API and the web UI answer it.
func GiveUpAllError(count int, err error) error {
	if count == 0 {
		return err
	}
	return fmt.Errorf("%w (%d events moved to the dead-letter queue before it stopped; %s)", err, count, giveUpAllRest(err))
}

// giveUpAllRest says what becomes of the events a stopped [GiveUpAll]
// did not move.
func giveUpAllRest(err error) string {
	// A reload that brought the sink back refuses a new call: its
	// dispatcher delivers what was not moved.
	if errors.Is(err, ErrSinkConfigured) {
		return "the sink delivers the rest"
	}
	return "the rest waits: call again to go on"
}

// PageDeadline returns the beforePage of [GiveUpAll] and [SettleAllDead]
// for a call that answers on w: it moves w's write deadline to a page's
// time and then the answer's ahead, so that the admin write_timeout bounds
// a page and not the whole call.
func PageDeadline(w http.ResponseWriter) func() {
	rc := http.NewResponseController(w)
	return func() {
		// An error: a test's recorder, which has no deadline.
		_ = rc.SetWriteDeadline(time.Now().Add(allPageTime + allWriteTimeout))
	}
}

// How [GiveUpAll] goes through a queue.
const (
	// abandonPage is how many entries one call of the log moves, in one
	// transaction: each with its target, so about what a dead-letter
	// retry moves per transaction.
	abandonPage = 1000
	// allPageTime bounds one such call, and one page of a retry or drop
	// of a whole dead-letter queue.
	allPageTime = 30 * time.Second
	// allWriteTimeout is the time the answer of a call with {"all": true}
	// (POST dlq/add, dlq/retry, dlq/drop) has to be written after a page,
	// as replayWriteTimeout for a replay's lines.
	allWriteTimeout = time.Minute
	// abandonProgress is how often GiveUpAll logs how far it got.
	abandonProgress = 5 * time.Second
)

// GiveUpAll gives up on every event waiting in the queue of sink, which
// the configuration no longer names (removed or renamed: no dispatcher
// reads its queue): the daemon moves them to the sink's dead-letter queue
// itself, no plugin involved, abandonPage at a time, each with reason in
// its error as [GiveUp] puts it, and no attempt counted. Nothing is
// removed: they are dead letters until dropped. It returns how many it
// moved in Count; IDs is empty (a queue can hold millions). Entries a
// dispatcher fetched and never settled (its stop gave up on its batch)
// are not waiting: they are ready again after a restart.
//
// It fails with [ErrCannotGiveUp] (the JetStream backend, or a log whose
// queues are not [pipeline.Abandoner]s), [ErrSinkConfigured] when the
// configuration names the sink (asked before each page, under
// [Options.LockRemoved]: a reload that adds the sink back stops it there,
// and waits for the page in progress before the sink's dispatcher
// starts), [ErrBadReason]; and with the log's
// error, or ctx's, with Count saying how many were moved before: each
// page is atomic, so those are dead letters and the rest still waits; a
// new call goes on. ctx is looked at before each page too: a client that
// hangs up stops it between pages. beforePage, if not nil, is called
// before each page.
// Progress goes to o.Logger every abandonProgress.
func GiveUpAll(ctx context.Context, o Options, sink, reason string, beforePage func()) (DeadLetterResult, error) {
	res := DeadLetterResult{Sink: sink, Action: "add", IDs: []string{}}
	// removed returns nil while the sink is removed, else why not to go on.
	removed := func() error {
		switch _, _, err := giveUpSet(o, sink); {
		case err == nil:
			return fmt.Errorf("sink %q: %w", sink, ErrSinkConfigured)
		case !errors.Is(err, ErrSinkRemoved):
			return err
		}
		return nil
	}
	if err := removed(); err != nil {
		return res, err
	}
	reason, err := cleanReason(reason)
	if err != nil {
		return res, err
	}
	q, ok := o.Log.Queue(sink).(pipeline.Abandoner)
	if !ok {
		return res, ErrCannotGiveUp
	}
	errFor := func(lastErr string) string { return pipeline.GiveUpError(reason, lastErr) }
	lock := o.LockRemoved
	if lock == nil {
		lock = func(string) func() { return func() {} }
	}
	// page moves one page, or none when the sink is no longer removed;
	// a reload that brings the sink back waits for it.
	page := func() (int, error) {
		if err := ctx.Err(); err != nil { // the client hung up: the pages done stay done
			return 0, err
		}
		defer lock(sink)()
		if err := removed(); err != nil {
			return 0, err
		}
		if beforePage != nil {
			beforePage()
		}
		pctx, cancel := context.WithTimeoutCause(ctx, allPageTime,
			fmt.Errorf("moving %d events of sink %s to its dead-letter queue took longer than %v", abandonPage, sink, allPageTime))
		defer cancel()
		n, err := q.Abandon(pctx, abandonPage, errFor)
		if err != nil && pctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w: %w", context.Cause(pctx), err)
		}
		return n, err
	}
	last := time.Now()
	for {
		n, err := page()
		res.Count += n
		if err != nil {
			return res, err
		}
		if n == 0 { // a page can end early (a log's bound on its bytes): only none moved is the end
			return res, nil
		}
		if time.Since(last) >= abandonProgress && o.Logger != nil {
			last = time.Now()
			st, _ := q.Stats(ctx)
			o.Logger.Info("giving up on a removed sink's queue", "sink", sink, "moved", res.Count, "waiting", st.Ready+st.Retrying)
		}
	}
}

// ErrBadReason: the reason is too long or not UTF-8.
var ErrBadReason = fmt.Errorf("reason: at most %d bytes of UTF-8", maxReason)

// GiveUpStatus is the HTTP status that answers an error of [GiveUp] or
// [GiveUpAll]: 501 [ErrCannotGiveUp], 409 [ErrSinkRemoved] and
// [ErrSinkConfigured], 400 [ErrBadReason], else as for an error of the
// log.
func GiveUpStatus(err error) int {
	switch {
	case errors.Is(err, ErrCannotGiveUp):
		return http.StatusNotImplemented
	case errors.Is(err, ErrSinkRemoved), errors.Is(err, ErrSinkConfigured):
		return http.StatusConflict
	case errors.Is(err, ErrBadReason):
		return http.StatusBadRequest
	}
	return logStatus(err)
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
	reason, err = cleanReason(reason)
	if err != nil {
		return res, err
	}
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

// cleanReason returns reason as a dead letter's error carries it:
// trimmed, with control characters as spaces (it is printed to terminals
// by dlq list and events show, and to logs); [ErrBadReason] when it is
// too long or not UTF-8.
func cleanReason(reason string) (string, error) {
	if len(reason) > maxReason || !utf8.ValidString(reason) {
		return "", ErrBadReason
	}
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, reason)), nil
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
