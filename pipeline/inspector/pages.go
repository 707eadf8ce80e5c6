package inspector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
)

// pageSize is how many events, dead letters or refusals a page shows.
const pageSize = 50

// maxBodyShown bounds the body an event page shows.
const maxBodyShown = 256 << 10

// sinkRow is one sink on the overview.
type sinkRow struct {
	admin.SinkStatus
	lastError // its LastError, for the cell
	State     string
	PerMinute float64
}

// RetryNow reports whether the overview offers "Retry now" for the sink:
// only when it would do something, that is when events wait for a retry
// (it makes them due now) or the breaker is open (it probes at once). A
// removed sink is refused, and while the queues are rebuilt after a start
// what waits is not known yet.
func (r sinkRow) RetryNow() bool {
	if r.Plugin == admin.PluginRemoved || r.Rebuilding {
		return false
	}
	return r.Retrying > 0 || r.Breaker == "open"
}

// maxErrorShown bounds the last error the overview and the dead-letter
// index show in a sink's cell, wrapped: an error a few lines long on a
// phone, where a title cannot be read. A longer one (the dispatcher keeps
// 4 KiB) is cut there, saying how long it is, and is whole in the cell's
// title.
const maxErrorShown = 300

// lastError is a sink's last error as a page's cell shows it.
type lastError string

// ErrorShown is the sink's last error as the cell shows it: cut at
// [maxErrorShown], saying how long it is.
func (e lastError) ErrorShown() string { return clip(maxErrorShown, string(e)) }

// ErrorCut reports whether [lastError.ErrorShown] is cut.
func (e lastError) ErrorCut() bool { return len(e) > maxErrorShown }

type overviewData struct {
	Sinks   []sinkRow
	Sources []sourceRow
	Window  string
	Err     string
}

// sinkStatus returns every sink with its oldest age and next retry filled
// in.
func (u *UI) sinkStatus(ctx context.Context) ([]admin.SinkStatus, error) {
	if u.o.Admin.Sinks == nil {
		return nil, nil
	}
	sinks, err := u.o.Admin.Sinks(ctx)
	admin.AddOldestAges(ctx, u.o.Admin.Log, sinks)
	admin.AddNextRetries(ctx, u.o.Admin.Log, sinks)
	return sinks, err
}

// sinkState is the one word the overview shows for a sink.
func sinkState(s admin.SinkStatus) string {
	switch {
	case s.Plugin == admin.PluginRemoved: // paused or not, nothing delivers
		return s.Plugin
	case s.Paused:
		return "paused"
	case s.Breaker == "open":
		return "breaker open"
	}
	return s.Plugin
}

// retryNow makes the sink's waiting retries due now and probes its open
// breaker, as pipelined sinks retry-now does, and redirects to the
// overview, which says what it did.
func (u *UI) retryNow(w http.ResponseWriter, r *http.Request, s session) {
	sink := r.PathValue("sink")
	if u.o.Admin.Log == nil || u.o.Admin.Sinks == nil {
		u.fail(w, r, http.StatusServiceUnavailable, "The event log is not open.")
		return
	}
	sinks, err := u.o.Admin.Sinks(r.Context())
	if err != nil {
		u.fail(w, r, http.StatusInternalServerError, "Reading the sinks: "+err.Error())
		return
	}
	i := slices.IndexFunc(sinks, func(st admin.SinkStatus) bool { return st.Name == sink })
	if i < 0 {
		u.fail(w, r, http.StatusNotFound, fmt.Sprintf("Unknown sink %q.", sink))
		return
	}
	res, err := admin.RetryNowSink(r.Context(), u.o.Admin, sinks[i], admin.PageDeadline(w))
	if err != nil {
		msg := "Retry now: " + err.Error()
		if res.Hastened > 0 {
			msg += fmt.Sprintf(" (%d made due before it; try again for the rest)", res.Hastened)
		}
		u.fail(w, r, admin.RetryNowStatus(err), msg)
		return
	}
	u.log.Info("ui retry-now: waiting retries due now", "sink", sink, "hastened", res.Hastened, "probing", res.Probing, "paused", res.Paused, "remote", r.RemoteAddr)
	msg := fmt.Sprintf("%s: %d event(s) waiting for a retry made due now", sink, res.Hastened)
	switch {
	case res.Paused:
		msg += "; the sink is paused: they wait until it is resumed (pipelined sinks resume " + sink + ")."
	case res.Probing:
		msg += "; its breaker is open: probing now (every event waiting goes once a probe succeeds)."
	default:
		msg += "."
	}
	u.seeOther(w, r, s, "/ui/", msg)
}

func (u *UI) overview(w http.ResponseWriter, r *http.Request, s session) {
	d := overviewData{}
	sinks, err := u.sinkStatus(r.Context())
	if err != nil {
		d.Err = err.Error()
	}
	rates := u.rates(time.Now())
	d.Window = human(rates.window)
	for _, st := range sinks {
		d.Sinks = append(d.Sinks, sinkRow{SinkStatus: st, lastError: lastError(st.LastError), State: sinkState(st), PerMinute: rates.delivered[st.Name]})
	}
	d.Sources = rates.sources
	u.render(w, r, http.StatusOK, "overview", u.pg(s, "overview", "Overview", d))
}

type eventsData struct {
	Q        url.Values
	Sources  []string
	Sinks    []string
	States   []string
	Events   []pipeline.EventInfo
	Next     string // the after= of the next page
	Partial  bool   // the scan budget ran out before the page was full
	Newest   bool   // listed newest first
	Scanned  int
	Took     string
	FilterOn bool
	NextURL  string
	FirstURL string
}

func (u *UI) events(w http.ResponseWriter, r *http.Request, s session) {
	q := r.URL.Query()
	d := eventsData{Q: q, States: []string{"pending", "queued", "retrying", "delivered", "dead", "dropped"}}
	d.Sinks = u.sinkNames(r.Context())
	d.Sources = u.sourceNames()
	p := u.pg(s, "events", "Events", &d)
	if u.o.Admin.Log == nil {
		p.Error = "The event log is not open."
		u.render(w, r, http.StatusServiceUnavailable, "events", p)
		return
	}
	now := time.Now()
	f := pipeline.EventFilter{Source: q.Get("source"), Sink: q.Get("sink"), DedupKey: q.Get("dedup_key"), State: q.Get("state"), After: q.Get("after"), Limit: pageSize}
	var err error
	bad := func(msg string) {
		p.Error = msg
		u.render(w, r, http.StatusBadRequest, "events", p)
	}
	if !pipeline.ValidFilterState(f.State) {
		bad(fmt.Sprintf("State %q: choose pending, queued, retrying, delivered, dead or dropped.", f.State))
		return
	}
	if f.Since, err = admin.ParseTime(q.Get("since"), now); err != nil {
		bad("Since: " + err.Error())
		return
	}
	if f.Until, err = admin.ParseTime(q.Get("until"), now); err != nil {
		bad("Until: " + err.Error())
		return
	}
	when, err := admin.CompileWhen(q.Get("when"))
	if err != nil {
		bad(err.Error())
		return
	}
	d.FilterOn = f.Source != "" || f.Sink != "" || f.DedupKey != "" || f.State != "" || !f.Since.IsZero() || !f.Until.IsZero() || when != nil
	list := u.o.Admin.Log.Events
	if nf, ok := u.o.Admin.Log.(pipeline.NewestFirstLog); ok {
		list, d.Newest = nf.EventsNewestFirst, true
	}
	start := time.Now()
	// With a when, the log is asked for a few events at first and then for
	// as many as the rest of the budget can evaluate at the cost measured so
	// far: one evaluation may take milliseconds, and the budget is checked
	// between calls.
	chunk := pageSize
	if when != nil {
		chunk = 1
	}
	for {
		f.Limit = min(chunk, pageSize-len(d.Events))
		evalStart := time.Now()
		page, next, err := list(r.Context(), f)
		if errors.Is(err, pipeline.ErrBadCursor) {
			bad("That page cursor is not valid: start again from the newest events.")
			return
		}
		if err != nil {
			p.Error = "Listing events: " + err.Error()
			u.render(w, r, http.StatusInternalServerError, "events", p)
			return
		}
		for _, e := range page {
			d.Scanned++
			ok, err := admin.MatchWhen(r.Context(), when, &e.Event)
			if err != nil {
				bad(fmt.Sprintf("when: %v on event %s: make the expression do less per event", err, e.ID))
				return
			}
			if ok {
				d.Events = append(d.Events, e)
			}
		}
		d.Next = next
		if next == "" || len(d.Events) >= pageSize {
			break
		}
		if time.Since(start) >= ScanBudget {
			d.Partial = true
			break
		}
		f.After = next
		if when != nil && len(page) > 0 {
			each := time.Since(evalStart)/time.Duration(len(page)) + 1
			chunk = max(1, min(2*chunk, int((ScanBudget-time.Since(start))/each)))
		}
	}
	d.Took = human(time.Since(start))
	if d.Next != "" {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("after", d.Next)
		d.NextURL = "/ui/events?" + nq.Encode()
	}
	if q.Get("after") != "" {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Del("after")
		d.FirstURL = "/ui/events?" + nq.Encode()
	}
	u.render(w, r, http.StatusOK, "events", p)
}

// sinkNames lists the configured sinks by name: not those a reload
// removed, whose queues nothing delivers.
func (u *UI) sinkNames(ctx context.Context) []string {
	if u.o.SinkNames != nil {
		return u.o.SinkNames()
	}
	sinks, _ := u.sinkStatus(ctx)
	var names []string
	for _, s := range sinks {
		if s.Plugin != admin.PluginRemoved {
			names = append(names, s.Name)
		}
	}
	return names
}

// knowsSinks reports whether the UI can tell the configured sinks from
// the others; without, every sink is taken as configured.
func (u *UI) knowsSinks() bool { return u.o.SinkNames != nil || u.o.Admin.Sinks != nil }

// sourceNames lists the sources the counters have seen.
func (u *UI) sourceNames() []string {
	var names []string
	if u.o.Counts != nil {
		for src := range u.o.Counts().Requests {
			if src != "" {
				names = append(names, src)
			}
		}
	}
	sort.Strings(names)
	return names
}

type header struct{ Name, Value string }

type timelineStep struct {
	What  string
	At    time.Time
	Error string
	Class string
}

type sinkTimeline struct {
	pipeline.DeliveryRecord
	Steps []timelineStep
}

type eventData struct {
	Event     pipeline.EventInfo
	Headers   []header
	Body      string
	Truncated bool
	Size      int
	Timelines []sinkTimeline
	NoRecords bool
	AllSinks  []string
	// CanGiveUp says the daemon keeps give-ups (not on JetStream): a
	// delivery under way gets a button to give up on it.
	CanGiveUp bool
	// Removed are the sinks of the timelines that the configuration no
	// longer names: no retry or give-up button (they would be refused),
	// but a link to the sink's dead-letter page, which acts on them.
	Removed map[string]bool
}

func (u *UI) event(w http.ResponseWriter, r *http.Request, s session) {
	id := r.PathValue("id")
	p := u.pg(s, "events", "Event "+id, nil)
	if u.o.Admin.Log == nil {
		u.fail(w, r, http.StatusServiceUnavailable, "The event log is not open.")
		return
	}
	es, _, err := u.o.Admin.Log.Events(r.Context(), pipeline.EventFilter{ID: id, Limit: 1})
	if err != nil {
		u.fail(w, r, http.StatusInternalServerError, "Reading the event: "+err.Error())
		return
	}
	if len(es) == 0 {
		u.fail(w, r, http.StatusNotFound, fmt.Sprintf("Event %q is not in the log (retention may have removed it).", id))
		return
	}
	e := es[0]
	d := eventData{Event: e, Size: len(e.Body), AllSinks: u.sinkNames(r.Context()), CanGiveUp: u.o.Admin.GiveUps != nil}
	for k, v := range e.Headers {
		d.Headers = append(d.Headers, header{k, v})
	}
	slices.SortFunc(d.Headers, func(a, b header) int { return cmpString(a.Name, b.Name) })
	body := e.Body
	if len(body) > maxBodyShown {
		body, d.Truncated = body[:maxBodyShown], true
	}
	var pretty bytes.Buffer
	if !d.Truncated && json.Indent(&pretty, body, "", "  ") == nil {
		d.Body = pretty.String()
	} else {
		d.Body = string(body)
	}
	if dl, ok := u.o.Admin.Log.(pipeline.DeliveryLog); ok {
		recs, err := dl.Deliveries(r.Context(), id)
		if err != nil {
			u.fail(w, r, http.StatusInternalServerError, "Reading the deliveries: "+err.Error())
			return
		}
		for _, rec := range recs {
			d.Timelines = append(d.Timelines, sinkTimeline{DeliveryRecord: rec, Steps: timeline(e.ReceivedAt, rec)})
			if u.knowsSinks() && !slices.Contains(d.AllSinks, rec.Sink) {
				if d.Removed == nil {
					d.Removed = map[string]bool{}
				}
				d.Removed[rec.Sink] = true
			}
		}
	} else {
		d.NoRecords = true
	}
	p.Data = d
	u.render(w, r, http.StatusOK, "event", p)
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// timeline turns a delivery record into the steps the event page shows:
// queued, each failed attempt with its error (the log keeps the latest
// [pipeline.MaxFailures]), the successful one, then the state.
func timeline(received time.Time, rec pipeline.DeliveryRecord) []timelineStep {
	route := rec.Route
	if route == "" {
		route = "—"
	}
	steps := []timelineStep{{What: "queued by route " + route, At: received, Class: "info"}}
	shown := 0 // attempts shown so far
	if len(rec.Failures) > 0 {
		if first := rec.Failures[0].Attempt; first > 1 {
			steps = append(steps, timelineStep{What: fmt.Sprintf("attempts 1–%d (older failures not kept)", first-1), At: rec.FirstAttemptAt, Class: "warn"})
		}
		for _, f := range rec.Failures {
			steps = append(steps, timelineStep{What: fmt.Sprintf("attempt %d failed", f.Attempt), At: f.At, Error: f.Err, Class: "warn"})
			shown = f.Attempt
		}
	} else if rec.Attempts > 0 && (rec.State != pipeline.StateDelivered || rec.Attempts > 1) {
		if rec.LastError == "" {
			// No attempt ever failed: the event was delivered, then a
			// replay queued it again (and perhaps delivered it again,
			// shown below).
			n := rec.Attempts
			if rec.State == pipeline.StateDelivered {
				n-- // the last one, shown below
			}
			steps = append(steps, timelineStep{What: fmt.Sprintf("%d earlier attempt(s), none failed; then replayed", n), At: rec.FirstAttemptAt, Class: "info"})
			shown = n
		} else {
			// A record written before failures were kept: its counts only.
			steps = append(steps, timelineStep{What: fmt.Sprintf("%d attempt(s), the latest failed", rec.Attempts), At: rec.LastAttemptAt, Error: rec.LastError, Class: "warn"})
			shown = rec.Attempts
		}
	}
	switch state := rec.State; {
	case rec.Held:
		steps = append(steps, timelineStep{What: "held back: it waits for an earlier event of its order_key, or for the open breaker's probes to come back to it", Class: "warn"})
	case state == pipeline.StateDelivered:
		what := "delivered"
		if shown < rec.Attempts {
			what = fmt.Sprintf("attempt %d: delivered", rec.Attempts)
		}
		steps = append(steps, timelineStep{What: what, At: rec.DeliveredAt, Class: "ok"})
	case state == pipeline.StateDead, state == pipeline.StateDropped:
		st := timelineStep{What: "dead: in the dead-letter queue", Class: "bad"}
		if state == pipeline.StateDropped {
			// At is zero when the log could not record when (a drop of
			// a whole dead-letter queue on JetStream): no time is shown.
			st.What, st.At = "dropped from the dead-letter queue by an operator: not delivered here unless replayed", rec.DroppedAt
		}
		// The route's transform failed, or an operator gave up on the
		// event, with no attempt that shows why.
		if rec.Attempts == 0 || (len(rec.Failures) > 0 && rec.Failures[len(rec.Failures)-1].Err != rec.LastError) {
			st.Error = rec.LastError
		}
		steps = append(steps, st)
	case state == pipeline.StateRetrying:
		st := timelineStep{What: "retrying: the next attempt is due", At: rec.NextAttemptAt, Class: "warn"}
		if st.At.IsZero() { // a record written before the time was kept
			st.What = "retrying: another attempt is scheduled"
		}
		if rec.NotAttemptedReason != "" {
			st.What = "retrying, not attempted at the sink's latest call (no attempt counted): due again"
			st.Error = rec.NotAttemptedReason
		}
		steps = append(steps, st)
	case state == pipeline.StateQueued:
		if rec.Attempts > 0 {
			steps = append(steps, timelineStep{What: "queued again (retried or replayed)", Class: "info"})
		} else {
			steps[0].What += ", waiting for its first attempt"
		}
		if !rec.NextAttemptAt.IsZero() {
			// The sink did not attempt it (sdk.NotAttempted): no attempt
			// to list, only when it is due.
			steps = append(steps, timelineStep{What: "not attempted by the sink (no attempt counted): due again", At: rec.NextAttemptAt, Error: rec.NotAttemptedReason, Class: "info"})
		}
	default:
		steps = append(steps, timelineStep{What: "state unknown (written before delivery records were kept)", Class: "info"})
	}
	return steps
}

// eventSeq finds the event's seq and checks sink.
func (u *UI) eventFor(w http.ResponseWriter, r *http.Request) (pipeline.EventInfo, string, bool) {
	id, sink := r.PathValue("id"), r.PostFormValue("sink")
	if u.o.Admin.Log == nil {
		u.fail(w, r, http.StatusServiceUnavailable, "The event log is not open.")
		return pipeline.EventInfo{}, "", false
	}
	if !slices.Contains(u.sinkNames(r.Context()), sink) {
		u.fail(w, r, http.StatusBadRequest, fmt.Sprintf("Sink %q is not configured.", sink))
		return pipeline.EventInfo{}, "", false
	}
	es, _, err := u.o.Admin.Log.Events(r.Context(), pipeline.EventFilter{ID: id, Limit: 1})
	if err != nil || len(es) == 0 {
		u.fail(w, r, http.StatusNotFound, fmt.Sprintf("Event %q is not in the log.", id))
		return pipeline.EventInfo{}, "", false
	}
	return es[0], sink, true
}

// replayOne queues the event again to a sink, as a replay does, and
// redirects to the event's page, which says what it did.
func (u *UI) replayOne(w http.ResponseWriter, r *http.Request, s session) {
	e, sink, ok := u.eventFor(w, r)
	if !ok {
		return
	}
	rq := pipeline.Requeue{Seq: e.Seq, Route: "replay"}
	if u.o.Admin.Retarget != nil {
		var err error
		if rq.Route, rq.Payload, err = u.o.Admin.Retarget(e.Event, sink); err != nil {
			u.fail(w, r, http.StatusInternalServerError, "Routing the event again: "+err.Error())
			return
		}
	}
	n, err := u.o.Admin.Log.Queue(sink).Requeue(r.Context(), []pipeline.Requeue{rq})
	if err != nil {
		u.fail(w, r, http.StatusInternalServerError, "Replay: "+err.Error())
		return
	}
	u.log.Info("ui replayed an event", "event_id", e.ID, "sink", sink, "queued", n, "remote", r.RemoteAddr)
	msg := "Queued for " + sink + "."
	if n == 0 {
		msg = sink + " still holds this event (queued, retrying or dead): nothing was added."
	}
	u.seeOther(w, r, s, "/ui/events/"+e.ID, msg)
}

// retryOne moves the event out of a sink's dead-letter queue, due now,
// and redirects to the event's page, which says what it did.
func (u *UI) retryOne(w http.ResponseWriter, r *http.Request, s session) {
	e, sink, ok := u.eventFor(w, r)
	if !ok {
		return
	}
	n, err := u.o.Admin.Log.Queue(sink).RetryDead(r.Context(), []uint64{e.Seq})
	if err != nil {
		u.fail(w, r, http.StatusInternalServerError, "Retry: "+err.Error())
		return
	}
	u.log.Info("ui retried a dead letter", "event_id", e.ID, "sink", sink, "count", n, "remote", r.RemoteAddr)
	msg := "Retrying: moved from the dead-letter queue of " + sink + "."
	if n == 0 {
		msg = "The event is not in the dead-letter queue of " + sink + "."
	}
	u.seeOther(w, r, s, "/ui/events/"+e.ID, msg)
}

// giveUpOne gives up on the event at a sink, as pipelined dlq add does,
// and redirects to the event's page, which says what it did.
func (u *UI) giveUpOne(w http.ResponseWriter, r *http.Request, s session) {
	e, sink, ok := u.eventFor(w, r)
	if !ok {
		return
	}
	res, err := admin.GiveUp(r.Context(), u.o.Admin, sink, []string{e.ID}, r.PostFormValue("reason"))
	if err != nil {
		u.fail(w, r, admin.GiveUpStatus(err), "Give up: "+err.Error())
		return
	}
	u.log.Info("ui gave up on an event", "event_id", e.ID, "sink", sink, "count", res.Count, "remote", r.RemoteAddr)
	msg := "Given up: the event goes to the dead-letter queue of " + sink + " at its next turn, instead of to the sink."
	if res.Count == 0 {
		msg = "The event is not waiting in the queue of " + sink + ": nothing to give up on."
	}
	u.seeOther(w, r, s, "/ui/events/"+e.ID, msg)
}

// dlqRow is one sink on the dead-letter index.
type dlqRow struct {
	admin.SinkStatus
	lastError // its LastError, for the cell
	Removed   bool
	Waiting   int // ready and retrying: for a removed sink, what a give-up would move
}

func (u *UI) dlqIndex(w http.ResponseWriter, r *http.Request, s session) {
	sinks, err := u.sinkStatus(r.Context())
	var rows []dlqRow
	for _, st := range sinks {
		rows = append(rows, dlqRow{SinkStatus: st, lastError: lastError(st.LastError), Removed: st.Plugin == admin.PluginRemoved, Waiting: st.Ready + st.Retrying})
	}
	p := u.pg(s, "dlq", "Dead letters", rows)
	if err != nil {
		p.Error = err.Error()
	}
	u.render(w, r, http.StatusOK, "dlqindex", p)
}

type dlqData struct {
	Sink    string
	More    bool // not the first page
	Letters []pipeline.DeadLetter
	Next    string
	// Short says the page ended before pageSize dead letters, at the
	// bound in bytes of their payloads, BoundMiB: Next goes on.
	Short    bool
	BoundMiB int
	// Removed says the configuration no longer names the sink (removed
	// or renamed): nothing delivers its queue. Then Status is its
	// status, with what waits in its queue.
	Removed bool
	Status  admin.SinkStatus
	// NoRetry says why the dead letters are not retried (a removed
	// sink's: nothing would deliver them); empty: they can be.
	NoRetry string
	// NoGiveUp says why a removed sink's waiting events cannot be given
	// up on (the JetStream backend); empty: they can be.
	NoGiveUp string
}

// Waiting counts the events that wait in the sink's queue (ready or
// retrying), as far as its status says.
func (d dlqData) Waiting() int { return d.Status.Ready + d.Status.Retrying }

// Counted says the status counts the sink's queue: not while the queues
// are rebuilt after the start, nor when the log did not answer.
func (d dlqData) Counted() bool { return !d.Status.Rebuilding && d.Status.QueueError == "" }

func (u *UI) dlq(w http.ResponseWriter, r *http.Request, s session) {
	sink := r.PathValue("sink")
	st, ok := u.findSink(w, r, sink)
	if !ok {
		return
	}
	after := uint64(0)
	if a := r.URL.Query().Get("after"); a != "" {
		var err error
		if after, err = strconv.ParseUint(a, 10, 64); err != nil {
			u.fail(w, r, http.StatusBadRequest, "after: not a cursor of this page")
			return
		}
	}
	// A page ends at pageSize dead letters, or earlier at the admin API's
	// bound in bytes: the log reads each with its payload (up to 1 MiB),
	// and 51 of those were read for a page that shows none of them.
	dls, more, err := admin.DeadLetterPage(r.Context(), u.o.Admin.Log.Queue(sink), after, pageSize)
	if err != nil {
		u.fail(w, r, http.StatusInternalServerError, "Reading the dead letters: "+err.Error())
		return
	}
	d := dlqData{Sink: sink, More: after > 0, Removed: st.Plugin == admin.PluginRemoved, Status: st}
	if err := admin.RetryRefused(st); err != nil {
		d.NoRetry = err.Error()
	}
	if d.Removed && u.o.Admin.GiveUps == nil {
		d.NoGiveUp = admin.ErrCannotGiveUp.Error()
	}
	if more {
		d.Next = strconv.FormatUint(dls[len(dls)-1].Seq, 10)
		d.Short, d.BoundMiB = len(dls) < pageSize, admin.DeadLetterPageBytes>>20
	}
	for i := range dls {
		dls[i].Payload = nil // not shown
	}
	d.Letters = dls
	u.render(w, r, http.StatusOK, "dlq", u.pg(s, "dlq", "Dead letters of "+sink, d))
}

// findSink returns the status of sink for its dead-letter pages: of a
// configured sink, only its name (the sinks' names are read, not their
// counts: counting a queue can cost a scan); of a sink a reload removed
// whose queue still holds events, its whole status, Plugin "removed". It
// answers 404 (or 503) and returns false when there is no such sink or
// no log.
func (u *UI) findSink(w http.ResponseWriter, r *http.Request, sink string) (admin.SinkStatus, bool) {
	if u.o.Admin.Log == nil {
		u.fail(w, r, http.StatusServiceUnavailable, "The event log is not open.")
		return admin.SinkStatus{}, false
	}
	st, ok := u.sinkOf(r.Context(), sink)
	if !ok {
		u.fail(w, r, http.StatusNotFound, fmt.Sprintf("Sink %q is not configured, and no sink removed from the configuration has events left under that name.", sink))
	}
	return st, ok
}

// sinkOf is findSink without the answer.
func (u *UI) sinkOf(ctx context.Context, sink string) (admin.SinkStatus, bool) {
	if slices.Contains(u.sinkNames(ctx), sink) {
		return admin.SinkStatus{Name: sink}, true
	}
	if u.o.Admin.Sinks == nil {
		return admin.SinkStatus{}, false
	}
	sinks, _ := u.o.Admin.Sinks(ctx)
	for _, st := range sinks {
		if st.Name == sink && st.Plugin == admin.PluginRemoved {
			return st, true
		}
	}
	return admin.SinkStatus{}, false
}

type confirmData struct {
	Sink  string
	All   bool
	Seqs  []string
	Count int
}

// dlqAction retries or drops dead letters: action=retry or drop, with
// seq=... (selected) or all=1. A drop shows a confirmation page first and
// happens only when the form comes back with confirm=yes. A removed
// sink's dead letters are not retried ([admin.RetryRefused]); action=giveup
// with all=1 and a reason gives up on every event waiting in a removed
// sink's queue ([admin.GiveUpAll]), as pipelined dlq add SINK --all does.
func (u *UI) dlqAction(w http.ResponseWriter, r *http.Request, s session) {
	sink := r.PathValue("sink")
	st, ok := u.findSink(w, r, sink)
	if !ok {
		return
	}
	action, all := r.PostFormValue("action"), r.PostFormValue("all") == "1"
	if action == "giveup" {
		u.giveUpAll(w, r, s, sink, all)
		return
	}
	var seqs []uint64
	for _, v := range r.PostForm["seq"] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			u.fail(w, r, http.StatusBadRequest, fmt.Sprintf("seq %q is not a number.", v))
			return
		}
		seqs = append(seqs, n)
	}
	if !all && len(seqs) == 0 { // nothing done: the page again, saying why
		s.flash = "Select at least one dead letter (or use the “all” buttons)."
		u.dlq(w, r, s)
		return
	}
	if all {
		seqs = nil
	}
	if action != "retry" && action != "drop" {
		u.fail(w, r, http.StatusBadRequest, "action: retry, drop or giveup")
		return
	}
	if err := admin.RetryRefused(st); action == "retry" && err != nil {
		u.fail(w, r, http.StatusConflict, "Retry: "+err.Error())
		return
	}
	if action == "drop" && r.PostFormValue("confirm") != "yes" {
		u.render(w, r, http.StatusOK, "confirm", u.pg(s, "dlq", "Drop dead letters?", confirmData{Sink: sink, All: all, Seqs: r.PostForm["seq"], Count: len(seqs)}))
		return
	}
	var n int
	var err error
	if all {
		var res admin.DeadLetterResult
		res, err = admin.SettleAllDead(r.Context(), u.o.Admin, sink, action, admin.PageDeadline(w))
		n = res.Count
	} else {
		n, err = admin.SettleDead(r.Context(), u.o.Admin, sink, action, seqs)
	}
	if err != nil {
		u.fail(w, r, http.StatusInternalServerError, action+": "+err.Error())
		return
	}
	u.log.Info("ui dead letters "+map[string]string{"retry": "retried", "drop": "dropped"}[action], "sink", sink, "count", n, "all", all, "remote", r.RemoteAddr)
	verb := map[string]string{"retry": "Retried", "drop": "Dropped"}[action]
	u.afterDLQ(w, r, s, sink, fmt.Sprintf("%s %d dead letter(s) of %s.", verb, n, sink))
}

// giveUpAll gives up on every event waiting in the queue of sink, which a
// reload removed, with the form's reason: admin.GiveUpAll, as POST
// /v1/sinks/{sink}/dlq/add with {"all": true} does, a page at a time.
func (u *UI) giveUpAll(w http.ResponseWriter, r *http.Request, s session, sink string, all bool) {
	if !all {
		u.fail(w, r, http.StatusBadRequest, "Give up: only on every event waiting for a removed sink (all=1); give up on one event from its page.")
		return
	}
	reason := r.PostFormValue("reason")
	res, err := admin.GiveUpAll(r.Context(), u.o.Admin, sink, reason, admin.PageDeadline(w))
	if err != nil {
		if res.Count > 0 {
			u.log.Warn("ui give-up of a removed sink's queue stopped: what was moved stays in its dead-letter queue",
				"sink", sink, "count", res.Count, "err", err, "remote", r.RemoteAddr)
		}
		err = admin.GiveUpAllError(res.Count, err)
		u.fail(w, r, admin.GiveUpStatus(err), "Give up: "+err.Error())
		return
	}
	u.log.Info("ui gave up on the events of a removed sink: they are in its dead-letter queue",
		"sink", sink, "count", res.Count, "reason", reason, "remote", r.RemoteAddr)
	u.afterDLQ(w, r, s, sink, fmt.Sprintf("Gave up on %d waiting event(s) of %s: they are in its dead-letter queue.", res.Count, sink))
}

// afterDLQ ends an action on the dead letters of sink: it redirects to
// their page, which says msg; or, when nothing is left of a removed sink
// (it is no longer listed), to the dead-letter index.
func (u *UI) afterDLQ(w http.ResponseWriter, r *http.Request, s session, sink, msg string) {
	if _, ok := u.sinkOf(r.Context(), sink); !ok {
		u.seeOther(w, r, s, "/ui/dlq", msg+" Nothing is left of it, so it is no longer listed.")
		return
	}
	u.seeOther(w, r, s, "/ui/dlq/"+sink, msg)
}

type refusedData struct {
	Source     string
	Rejections []pipeline.Rejection
	Next       string
	Sources    []string
}

func (u *UI) refused(w http.ResponseWriter, r *http.Request, s session) {
	q := r.URL.Query()
	d := refusedData{Source: q.Get("source"), Sources: u.sourceNames()}
	p := u.pg(s, "refused", "Refused requests", &d)
	rl, ok := u.o.Admin.Log.(pipeline.RejectionLog)
	if !ok {
		p.Error = "This event log does not keep refused requests."
		u.render(w, r, http.StatusOK, "refused", p)
		return
	}
	rs, next, err := rl.Rejections(r.Context(), pipeline.RejectionFilter{Source: d.Source, After: q.Get("after"), Limit: pageSize})
	if errors.Is(err, pipeline.ErrBadCursor) {
		p.Error = "That page cursor is not valid: start again."
	} else if err != nil {
		p.Error = "Reading refused requests: " + err.Error()
	}
	for i := range rs {
		if len(rs[i].Body) > 2048 {
			rs[i].Body, rs[i].Truncated = rs[i].Body[:2048], true
		}
	}
	d.Rejections, d.Next = rs, next
	u.render(w, r, http.StatusOK, "refused", p)
}
