package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/rules"
)

func toEvent(e pipeline.EventInfo) Event {
	sinks := e.Sinks
	if sinks == nil {
		sinks = []string{}
	}
	return Event{ID: e.ID, Seq: e.Seq, Source: e.Source, ReceivedAt: e.ReceivedAt, DedupKey: e.DedupKey,
		Auth: e.Auth, Sinks: sinks, Headers: e.Headers, Body: rawJSON(e.Body)}
}

// rawJSON returns b as a JSON value: itself when it is valid JSON, else a
// JSON string.
func rawJSON(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	if json.Valid(b) {
		return b
	}
	s, _ := json.Marshal(string(b))
	return s
}

// CompileWhen compiles a when= expression of the event list and replay
// (a bool expr over body, source, headers, id, received_at); nil when src
// is empty.
func CompileWhen(src string) (*rules.Program, error) {
	if strings.TrimSpace(src) == "" {
		return nil, nil
	}
	p, err := rules.CompileBool(src)
	if err != nil {
		return nil, fmt.Errorf("when: %w", err)
	}
	return p, nil
}

// MatchWhen evaluates p (from [CompileWhen]; nil matches everything) over
// ev; an event whose body is not JSON, or on
// which p fails, does not match. A p that goes over its budget (see
// rules.MaxOps), or whose request is cancelled, returns the
// [*rules.BudgetError]: the listing stops there.
func MatchWhen(ctx context.Context, p *rules.Program, ev *pipeline.Event) (bool, error) {
	if p == nil {
		return true, nil
	}
	var body any
	if err := json.Unmarshal(ev.Body, &body); err != nil {
		return false, nil
	}
	ok, err := p.BoolContext(ctx, &rules.Env{Body: body, Source: ev.Source, Headers: ev.Headers, ID: ev.ID, ReceivedAt: ev.ReceivedAt})
	var be *rules.BudgetError
	if errors.As(err, &be) {
		return false, be
	}
	return err == nil && ok, nil
}

func (s *server) events(w http.ResponseWriter, r *http.Request) {
	if !s.haveLog(w) {
		return
	}
	q := r.URL.Query()
	if q.Get("rejected") == "true" {
		s.rejections(w, r)
		return
	}
	now := time.Now()
	f := pipeline.EventFilter{Source: q.Get("source"), Sink: q.Get("sink"), DedupKey: q.Get("dedup_key"), After: q.Get("after"), State: q.Get("state")}
	if !pipeline.ValidFilterState(f.State) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("state %q: want pending, dead or delivered (or queued, retrying, dropped)", f.State))
		return
	}
	var err error
	if f.Since, err = ParseTime(q.Get("since"), now); err != nil {
		writeError(w, http.StatusBadRequest, "since: "+err.Error())
		return
	}
	if f.Until, err = ParseTime(q.Get("until"), now); err != nil {
		writeError(w, http.StatusBadRequest, "until: "+err.Error())
		return
	}
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	when, err := CompileWhen(q.Get("when"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	list, newest := s.o.Log.Events, false
	switch order := q.Get("order"); order {
	case "", "oldest":
	case "newest":
		nf, ok := s.o.Log.(pipeline.NewestFirstLog)
		if !ok {
			writeError(w, http.StatusBadRequest, "order=newest: this log backend lists events oldest first only")
			return
		}
		list, newest = nf.EventsNewestFirst, true
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("order %q: want oldest (the default) or newest", order))
		return
	}
	out := EventList{Events: []Event{}}
	if !newest && lastCursor(f.After) {
		writeJSON(w, http.StatusOK, out) // nothing comes after the last seq
		return
	}
	start := time.Now()
	size := 0          // bytes of the bodies and headers answered
	seen, read := 0, 0 // of every event read (matched or not), and how many
	// Without a when, listPages bounds the calls; with one, whenBudget does.
	for page := 0; when != nil || page < listPages; page++ {
		f.Limit = limit - len(out.Events)
		if when != nil {
			f.Limit = min(f.Limit, whenChunk)
		}
		if read == 0 {
			f.Limit = min(f.Limit, firstChunk)
		} else {
			f.Limit = min(f.Limit, max((pageBytes-size)/max(seen/read, 1), 1))
		}
		page, next, err := list(r.Context(), f)
		if err != nil {
			writeLogError(w, err)
			return
		}
		for _, e := range page {
			ok, err := MatchWhen(r.Context(), when, &e.Event)
			if err != nil {
				if r.Context().Err() != nil {
					return // the client left: nobody reads an answer
				}
				writeError(w, http.StatusBadRequest, fmt.Sprintf("when: %v on event %s: make the expression do less per event", err, e.Event.ID))
				return
			}
			n := eventSize(&e.Event)
			seen, read = seen+n, read+1
			if !ok {
				continue
			}
			out.Events = append(out.Events, toEvent(e))
			if size += n; size >= pageBytes {
				// Full: go on after this one (a cursor is the Seq of
				// the last event answered, in either order).
				next = strconv.FormatUint(e.Seq, 10)
				break
			}
		}
		out.Next = next
		if next == "" || len(out.Events) == limit || size >= pageBytes || (when != nil && time.Since(start) > whenBudget) {
			break
		}
		f.After = next
	}
	writeJSON(w, http.StatusOK, out)
}

// eventSize is what an event's body and headers weigh in an answer.
func eventSize(e *pipeline.Event) int {
	n := len(e.Body)
	for k, v := range e.Headers {
		n += len(k) + len(v)
	}
	return n
}

func (s *server) event(w http.ResponseWriter, r *http.Request) {
	if !s.haveLog(w) {
		return
	}
	id := r.PathValue("id")
	es, _, err := s.o.Log.Events(r.Context(), pipeline.EventFilter{ID: id, Limit: 1})
	if err != nil {
		writeLogError(w, err)
		return
	}
	if len(es) == 0 {
		writeError(w, http.StatusNotFound, fmt.Sprintf("event %q is not in the log", id))
		return
	}
	out := toEvent(es[0])
	if dl, ok := s.o.Log.(pipeline.DeliveryLog); ok {
		rs, err := dl.Deliveries(r.Context(), id)
		if err != nil {
			writeLogError(w, err)
			return
		}
		out.Deliveries = make([]Delivery, len(rs))
		for i, d := range rs {
			out.Deliveries[i] = toDelivery(d)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func toDelivery(d pipeline.DeliveryRecord) Delivery {
	at := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		t = t.UTC()
		return &t
	}
	out := Delivery{Sink: d.Sink, Route: d.Route, State: d.State, Attempts: d.Attempts,
		FirstAttemptAt: at(d.FirstAttemptAt), LastAttemptAt: at(d.LastAttemptAt), LastError: d.LastError,
		DeliveredAt: at(d.DeliveredAt), NextAttemptAt: at(d.NextAttemptAt), DroppedAt: at(d.DroppedAt), Held: d.Held,
		NotAttemptedReason: d.NotAttemptedReason}
	for _, f := range d.Failures {
		out.Failures = append(out.Failures, Failure{Attempt: f.Attempt, At: f.At.UTC(), Error: f.Err})
	}
	return out
}

// rejections serves GET /v1/rejections?source=&since=&after=&limit= (and
// GET /v1/events?rejected=true): the rejected requests that sources with
// keep_rejected keep, by source and then time.
func (s *server) rejections(w http.ResponseWriter, r *http.Request) {
	if !s.haveLog(w) {
		return
	}
	rl, ok := s.o.Log.(pipeline.RejectionLog)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this event log does not keep rejected requests")
		return
	}
	q := r.URL.Query()
	f := pipeline.RejectionFilter{Source: q.Get("source"), After: q.Get("after")}
	var err error
	if f.Since, err = ParseTime(q.Get("since"), time.Now()); err != nil {
		writeError(w, http.StatusBadRequest, "since: "+err.Error())
		return
	}
	if f.Limit, err = parseLimit(q.Get("limit")); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	rs, next, err := rl.Rejections(r.Context(), f)
	if err != nil {
		writeLogError(w, err)
		return
	}
	out := RejectionList{Rejections: make([]Rejection, 0, len(rs)), Next: next}
	for _, rj := range rs {
		out.Rejections = append(out.Rejections, Rejection{
			ID: rj.ID, Source: rj.Source, ReceivedAt: rj.ReceivedAt, Status: rj.Status, Reason: rj.Reason,
			Violations: rj.Violations, Headers: rj.Headers, Body: string(rj.Body), Truncated: rj.Truncated,
			BodySize: rj.BodySize, RemoteAddr: rj.RemoteAddr,
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// lastCursor reports whether after is the greatest seq there can be
// (2^64-1): nothing comes after it, and a log that sought after+1 would
// wrap to the first page.
func lastCursor(after string) bool {
	n, err := strconv.ParseUint(after, 10, 64)
	return err == nil && n == math.MaxUint64
}
