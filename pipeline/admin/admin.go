// Package admin serves the admin API on its own listener, never the ingest
// one: /healthz, /readyz, /metrics, JSON under /v1/ and Go's profiler under
// /debug/pprof/.
//
// # The /v1 API
//
//	GET  /v1/events?source=&sink=&since=&until=&dedup_key=&when=&limit=&after=
//	GET  /v1/events/{id}
//	GET  /v1/sinks
//	GET  /v1/sinks/{sink}/dlq?limit=&after=
//	POST /v1/sinks/{sink}/dlq/retry   {"ids": [...]} or {"all": true}
//	POST /v1/sinks/{sink}/dlq/drop    {"ids": [...]} or {"all": true}
//	POST /v1/replay                   {"sink", "since", "until", "source", "when", "all_events"}
//	POST /v1/reload
//
// Times are RFC 3339 or a duration ago ("1h"). Every error is one line of
// JSON, {"error": "..."}, with its status code. POST calls need
// "Authorization: Bearer <token>" when [Options.Token] is set; without a
// token they are refused with 403 unless [Options.AllowUnauthenticated].
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/rules"
)

// SinkStatus is one sink as /v1/sinks shows it.
type SinkStatus struct {
	Name string `json:"name"`
	// Plugin is the plugin's state: starting, running, backoff or stopped.
	Plugin    string `json:"plugin"`
	PID       int    `json:"pid,omitempty"`
	LastError string `json:"last_error,omitempty"`
	// Ready, Retrying and Dead count the sink's queue entries.
	Ready    int `json:"ready"`
	Retrying int `json:"retrying"`
	Dead     int `json:"dead"`
	// OldestAgeSeconds is how long ago the oldest event still waiting for
	// delivery (ready, in flight or retrying) was received; absent when
	// none waits. The handler fills it from [Options.Log] when it is 0.
	OldestAgeSeconds float64 `json:"oldest_age_seconds,omitempty"`
}

// Options says where the admin API gets its answers. Fields other than
// Ready and Sinks may be left zero: the routes that need them then answer
// 503 (Log) or 501 (Reload).
type Options struct {
	// Ready returns nil when the daemon is ready to serve: the log is open,
	// plugins answered, listeners are bound; else why not.
	Ready func() error
	// Sinks reports every sink. The DLQ and replay routes also use it to
	// answer 404 for a sink that is not configured.
	Sinks func(ctx context.Context) ([]SinkStatus, error)
	// Log is the event log that /v1/events, the DLQ routes and replay use;
	// /v1/rejections needs it to be a [pipeline.RejectionLog] too.
	Log pipeline.Log
	// Reload applies the configuration file again (POST /v1/reload); an
	// error means the new configuration was refused and the old one runs.
	Reload func() error
	// Retarget, if set, says what a replayed event is delivered to sink
	// with: the route and payload (nil: the body) its routes make of it
	// now. Nil means route "replay" and the event's body.
	Retarget func(ev pipeline.Event, sink string) (route string, payload []byte, err error)
	// Token is the bearer token that POST calls must carry. Empty: POST
	// calls are refused with 403, unless AllowUnauthenticated.
	Token []byte
	// AllowUnauthenticated lets POST calls through without a token when
	// Token is empty. The daemon sets it when the admin listener is bound
	// to a loopback address only.
	AllowUnauthenticated bool
	// Logger receives one line per mutating call. Default: discard.
	Logger *slog.Logger
	// ProgressInterval is how often a replay reports progress. Zero
	// means 500ms.
	ProgressInterval time.Duration
	// Metrics, if set, serves GET /metrics (Prometheus).
	Metrics http.Handler
}

// Limits of the list routes.
const (
	defaultLimit = 50
	maxLimit     = 1000
	// replayPage is how many events a replay reads and requeues at a time.
	replayPage = 500
	// listPages bounds the Log.Events calls of one GET /v1/events, so a
	// selective filter answers in bounded time; next tells where to go on.
	listPages = 20
)

type server struct {
	o   Options
	log *slog.Logger
	mux *http.ServeMux
}

// Handler returns the admin API.
func Handler(o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = 500 * time.Millisecond
	}
	s := &server{o: o, log: o.Logger, mux: http.NewServeMux()}
	mux := s.mux
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := o.Ready(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.HandleFunc("GET /v1/sinks", s.sinks)
	mux.HandleFunc("GET /v1/events", s.events)
	mux.HandleFunc("GET /v1/events/{id}", s.event)
	mux.HandleFunc("GET /v1/rejections", s.rejections)
	mux.HandleFunc("GET /v1/sinks/{sink}/dlq", s.deadLetters)
	mux.HandleFunc("POST /v1/sinks/{sink}/dlq/retry", s.mutating(s.settleDead))
	mux.HandleFunc("POST /v1/sinks/{sink}/dlq/drop", s.mutating(s.settleDead))
	mux.HandleFunc("POST /v1/replay", s.mutating(s.replay))
	mux.HandleFunc("POST /v1/reload", s.mutating(s.reload))
	if o.Metrics != nil {
		mux.Handle("GET /metrics", o.Metrics)
	}
	// Go's profiler, for "why is it slow": the admin listener is on
	// loopback by default and never the ingest port.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return s
}

// ServeHTTP serves the mux, turning its own 404 and 405 answers into JSON.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern == "" {
		w = &jsonError{ResponseWriter: w}
	}
	s.mux.ServeHTTP(w, r)
}

// jsonError replaces the plain-text body of the mux's 404 and 405 with a
// JSON one; the mux's headers (Allow) stay.
type jsonError struct {
	http.ResponseWriter
	wrote bool
}

func (j *jsonError) WriteHeader(code int) {
	if j.wrote {
		return
	}
	j.wrote = true
	msg := strings.ToLower(http.StatusText(code))
	if code == http.StatusMethodNotAllowed {
		msg += "; allowed: " + j.Header().Get("Allow")
	}
	j.Header().Del("Content-Length")
	writeError(j.ResponseWriter, code, msg)
}

func (j *jsonError) Write(b []byte) (int, error) {
	if !j.wrote {
		j.WriteHeader(http.StatusOK)
	}
	return len(b), nil
}

// mutating checks the bearer token before h.
func (s *server) mutating(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if len(s.o.Token) == 0 {
			if !s.o.AllowUnauthenticated {
				writeError(w, http.StatusForbidden, "mutating calls are disabled: no admin token is configured; set admin.token_env or admin.token_file")
				return
			}
		} else {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), s.o.Token) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="pipelined admin"`)
				writeError(w, http.StatusUnauthorized, "missing or wrong admin token: send Authorization: Bearer <token>")
				return
			}
		}
		h(w, r)
	}
}

func (s *server) sinks(w http.ResponseWriter, r *http.Request) {
	sinks, err := s.o.Sinks(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if s.o.Log != nil {
		now := time.Now()
		for i := range sinks {
			if sinks[i].OldestAgeSeconds != 0 || sinks[i].Ready+sinks[i].Retrying == 0 {
				continue
			}
			at, err := s.o.Log.Queue(sinks[i].Name).Oldest(r.Context())
			if err == nil && !at.IsZero() {
				sinks[i].OldestAgeSeconds = max(now.Sub(at).Seconds(), 0.001)
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sinks": sinks})
}

// checkSink answers 404 and returns false when sink is not configured.
func (s *server) checkSink(w http.ResponseWriter, r *http.Request, sink string) bool {
	if sink == "" {
		writeError(w, http.StatusBadRequest, "sink is required")
		return false
	}
	if s.o.Sinks == nil {
		return true
	}
	sinks, err := s.o.Sinks(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return false
	}
	names := make([]string, len(sinks))
	for i, st := range sinks {
		if st.Name == sink {
			return true
		}
		names[i] = st.Name
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("unknown sink %q (sinks: %s)", sink, strings.Join(names, ", ")))
	return false
}

// haveLog answers 503 and returns false when there is no log.
func (s *server) haveLog(w http.ResponseWriter) bool {
	if s.o.Log == nil {
		writeError(w, http.StatusServiceUnavailable, "the event log is not open")
		return false
	}
	return true
}

// Event is an event as the API shows it.
type Event struct {
	ID         string            `json:"id"`
	Seq        uint64            `json:"seq"`
	Source     string            `json:"source"`
	ReceivedAt time.Time         `json:"received_at"`
	DedupKey   string            `json:"dedup_key,omitempty"`
	Auth       string            `json:"auth,omitempty"`
	Sinks      []string          `json:"sinks"`
	Headers    map[string]string `json:"headers,omitempty"`
	Body       json.RawMessage   `json:"body"`
}

// EventList is the answer of GET /v1/events. Next, when not empty, is the
// after= of the next page.
type EventList struct {
	Events []Event `json:"events"`
	Next   string  `json:"next,omitempty"`
}

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

// ParseTime reads a time as the API and the CLI take it: RFC 3339, or a
// duration ago ("90m", "1h") counted back from now. Empty gives zero.
func ParseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2025-03-14T15:09:26Z) or a duration ago (1h)", s)
}

// when compiles a when= expression; nil when src is empty.
func compileWhen(src string) (*rules.Program, error) {
	if strings.TrimSpace(src) == "" {
		return nil, nil
	}
	p, err := rules.CompileBool(src)
	if err != nil {
		return nil, fmt.Errorf("when: %w", err)
	}
	return p, nil
}

// matchWhen evaluates p over ev; an event whose body is not JSON, or on
// which p fails, does not match.
func matchWhen(p *rules.Program, ev *pipeline.Event) bool {
	if p == nil {
		return true
	}
	var body any
	if err := json.Unmarshal(ev.Body, &body); err != nil {
		return false
	}
	ok, err := p.Bool(&rules.Env{Body: body, Source: ev.Source, Headers: ev.Headers, ID: ev.ID, ReceivedAt: ev.ReceivedAt})
	return err == nil && ok
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
	f := pipeline.EventFilter{Source: q.Get("source"), Sink: q.Get("sink"), DedupKey: q.Get("dedup_key"), After: q.Get("after")}
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
	when, err := compileWhen(q.Get("when"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	out := EventList{Events: []Event{}}
	for range listPages {
		f.Limit = limit - len(out.Events)
		page, next, err := s.o.Log.Events(r.Context(), f)
		if err != nil {
			writeLogError(w, err)
			return
		}
		for _, e := range page {
			if matchWhen(when, &e.Event) {
				out.Events = append(out.Events, toEvent(e))
			}
		}
		out.Next = next
		if next == "" || len(out.Events) == limit {
			break
		}
		f.After = next
	}
	writeJSON(w, http.StatusOK, out)
}

func parseLimit(s string) (int, error) {
	if s == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxLimit {
		return 0, fmt.Errorf("limit %q: want a number from 1 to %d", s, maxLimit)
	}
	return n, nil
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
	writeJSON(w, http.StatusOK, toEvent(es[0]))
}

// DeadLetter is a dead-letter entry as the API shows it.
type DeadLetter struct {
	ID         string          `json:"id"`
	Seq        uint64          `json:"seq"`
	Source     string          `json:"source"`
	ReceivedAt time.Time       `json:"received_at"`
	Route      string          `json:"route"`
	Attempts   int             `json:"attempts"`
	Error      string          `json:"error"`
	FailedAt   time.Time       `json:"failed_at"`
	Payload    json.RawMessage `json:"payload,omitempty"`
}

// DeadLetterList is the answer of GET /v1/sinks/{sink}/dlq.
type DeadLetterList struct {
	Sink        string       `json:"sink"`
	DeadLetters []DeadLetter `json:"dead_letters"`
	Next        string       `json:"next,omitempty"`
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
	dls, err := s.o.Log.Queue(sink).DeadLetters(r.Context(), after, limit+1)
	if err != nil {
		writeLogError(w, err)
		return
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

// DeadLetterRequest is the body of the DLQ retry and drop calls: ids, or
// all, not both.
type DeadLetterRequest struct {
	IDs []string `json:"ids,omitempty"`
	All bool     `json:"all,omitempty"`
}

// DeadLetterResult answers the DLQ retry and drop calls. Count is how many
// entries were retried or dropped; IDs names them; NotFound lists the ids
// asked for that are not in the sink's dead-letter queue.
type DeadLetterResult struct {
	Sink     string   `json:"sink"`
	Action   string   `json:"action"` // "retry" or "drop"
	Count    int      `json:"count"`
	IDs      []string `json:"ids"`
	NotFound []string `json:"not_found,omitempty"`
}

func (s *server) settleDead(w http.ResponseWriter, r *http.Request) {
	sink := r.PathValue("sink")
	action := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	if !s.haveLog(w) || !s.checkSink(w, r, sink) {
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
	// Find the seqs: the dead-letter queue is read whole (it is kept small
	// by operators), so the answer names exactly what was acted on.
	q := s.o.Log.Queue(sink)
	want := map[string]bool{}
	for _, id := range req.IDs {
		want[id] = true
	}
	res := DeadLetterResult{Sink: sink, Action: action, IDs: []string{}}
	var seqs []uint64
	for after := uint64(0); ; {
		dls, err := q.DeadLetters(r.Context(), after, maxLimit)
		if err != nil {
			writeLogError(w, err)
			return
		}
		for _, d := range dls {
			if req.All || want[d.Event.ID] {
				seqs = append(seqs, d.Seq)
				res.IDs = append(res.IDs, d.Event.ID)
				delete(want, d.Event.ID)
			}
		}
		if len(dls) < maxLimit {
			break
		}
		after = dls[len(dls)-1].Seq
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

// ReplayRequest is the body of POST /v1/replay. Since is required. Only the
// events that were routed to Sink are replayed, unless AllEvents.
type ReplayRequest struct {
	Sink      string `json:"sink"`
	Since     string `json:"since"`
	Until     string `json:"until,omitempty"`
	Source    string `json:"source,omitempty"`
	When      string `json:"when,omitempty"`
	AllEvents bool   `json:"all_events,omitempty"`
}

// ReplayProgress is one line of the NDJSON answer of POST /v1/replay:
// progress lines while it runs, then one with Done (or Error) set.
// Scanned counts the events looked at, Matched those that passed the
// filters, Enqueued those put in the queue, and AlreadyQueued those left
// alone because the queue still held them. At is the ReceivedAt of the
// last event looked at, so a client can draw progress from Since to Until.
type ReplayProgress struct {
	Scanned       int       `json:"scanned"`
	Matched       int       `json:"matched"`
	Enqueued      int       `json:"enqueued"`
	AlreadyQueued int       `json:"already_queued"`
	At            time.Time `json:"at,omitzero"`
	Since         time.Time `json:"since"`
	Until         time.Time `json:"until"`
	Done          bool      `json:"done,omitempty"`
	Error         string    `json:"error,omitempty"`
}

func (s *server) replay(w http.ResponseWriter, r *http.Request) {
	if !s.haveLog(w) {
		return
	}
	var req ReplayRequest
	if !readBody(w, r, &req) {
		return
	}
	if !s.checkSink(w, r, req.Sink) {
		return
	}
	now := time.Now()
	if req.Since == "" {
		writeError(w, http.StatusBadRequest, "since is required (RFC 3339 or a duration ago such as 1h)")
		return
	}
	f := pipeline.EventFilter{Source: req.Source, Limit: replayPage}
	if !req.AllEvents {
		f.Sink = req.Sink
	}
	var err error
	if f.Since, err = ParseTime(req.Since, now); err != nil {
		writeError(w, http.StatusBadRequest, "since: "+err.Error())
		return
	}
	if f.Until, err = ParseTime(req.Until, now); err != nil {
		writeError(w, http.StatusBadRequest, "until: "+err.Error())
		return
	}
	if !f.Until.IsZero() && !f.Until.After(f.Since) {
		writeError(w, http.StatusBadRequest, "until must be after since")
		return
	}
	when, err := compileWhen(req.When)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p := ReplayProgress{Since: f.Since, Until: f.Until}
	if p.Until.IsZero() {
		p.Until = now
	}
	s.log.Info("replay started", "sink", req.Sink, "since", f.Since, "until", f.Until, "when", req.When, "remote", r.RemoteAddr)

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	send := func() {
		enc.Encode(p)
		rc.Flush()
	}
	err = s.runReplay(r.Context(), req.Sink, f, when, &p, send)
	p.Done = err == nil
	if err != nil {
		p.Error = err.Error()
		s.log.Error("replay failed", "sink", req.Sink, "err", err, "scanned", p.Scanned, "enqueued", p.Enqueued)
	} else {
		s.log.Info("replay finished", "sink", req.Sink, "scanned", p.Scanned, "matched", p.Matched, "enqueued", p.Enqueued, "already_queued", p.AlreadyQueued)
	}
	send()
}

// runReplay pages through the log and requeues what matches, calling
// progress every ProgressInterval.
func (s *server) runReplay(ctx context.Context, sink string, f pipeline.EventFilter, when *rules.Program, p *ReplayProgress, progress func()) error {
	q := s.o.Log.Queue(sink)
	last := time.Now()
	for {
		page, next, err := s.o.Log.Events(ctx, f)
		if err != nil {
			return err
		}
		rs := make([]pipeline.Requeue, 0, len(page))
		for _, e := range page {
			p.Scanned++
			p.At = e.ReceivedAt
			if !matchWhen(when, &e.Event) {
				continue
			}
			rq := pipeline.Requeue{Seq: e.Seq, Route: "replay"}
			if s.o.Retarget != nil {
				if rq.Route, rq.Payload, err = s.o.Retarget(e.Event, sink); err != nil {
					return fmt.Errorf("event %s: %w", e.ID, err)
				}
			}
			rs = append(rs, rq)
		}
		p.Matched += len(rs)
		if len(rs) > 0 {
			n, err := q.Requeue(ctx, rs)
			if err != nil {
				return err
			}
			p.Enqueued += n
			p.AlreadyQueued += len(rs) - n
		}
		if next == "" {
			return nil
		}
		f.After = next
		if time.Since(last) >= s.o.ProgressInterval {
			last = time.Now()
			progress()
		}
	}
}

func (s *server) reload(w http.ResponseWriter, r *http.Request) {
	if s.o.Reload == nil {
		writeError(w, http.StatusNotImplemented, "this daemon cannot reload its configuration")
		return
	}
	if err := s.o.Reload(); err != nil {
		writeError(w, http.StatusConflict, "reload refused, the running configuration is unchanged: "+err.Error())
		return
	}
	s.log.Info("configuration reloaded", "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
}

// maxRequest bounds a POST body.
const maxRequest = 1 << 20

// readBody decodes a JSON body into v; an empty body leaves v as it is.
func readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		return false
	}
	return true
}

// writeLogError answers for an error of the log.
func writeLogError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, pipeline.ErrBadCursor):
		code = http.StatusBadRequest
	case errors.Is(err, pipeline.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, pipeline.ErrClosed):
		code = http.StatusServiceUnavailable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = http.StatusServiceUnavailable
	}
	writeError(w, code, err.Error())
}

// writeError writes {"error": msg} on one line.
func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Write(append(b, '\n'))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
