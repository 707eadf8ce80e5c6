package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/auth"
	"github.com/pipelined/pipelined/pipeline/internal/forwarded"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/pipeline/rules"
	"github.com/pipelined/pipelined/pipeline/telemetry"
	"github.com/pipelined/pipelined/pipeline/writer"
)

// Appender is the writer, as ingest sees it.
type Appender interface {
	// Append returns once e is durable, with its id and whether it was a
	// duplicate.
	Append(ctx context.Context, e pipeline.Entry) (pipeline.Appended, error)
}

// Source is one [[source]], compiled.
type Source struct {
	Name string
	Path string
	// DedupKey computes the dedup key; nil means no dedup.
	DedupKey    *rules.Program
	DedupWindow time.Duration
	// Verifier checks each request's authentication; nil accepts all
	// (auth type "none").
	Verifier auth.Verifier
	// DedupHeader, when DedupKey is nil, names a header whose value is
	// the dedup key (webhook-id for Standard Webhooks).
	DedupHeader string
	// DeliveryHeader, when set, names the header (lower-case) that
	// identifies one delivery (webhook-id for Standard Webhooks, whose
	// svix-id spelling is read too): the accepted and duplicate log lines
	// print its value as delivery_id, so two copies of one event can be
	// told apart.
	DeliveryHeader string
	// Limiter, when not nil, bounds the rate of authenticated requests.
	Limiter *rate.Limiter
	// Allow, when not empty, lists the client addresses accepted.
	Allow []netip.Prefix
	// Ignore, when not nil and true for a request that passed
	// authentication, has it acknowledged (200 {"ignored": true}) but not
	// stored nor routed; an error counts as false (see [Config.Decide]).
	Ignore *rules.Program
	// Accept, when not nil, must be true for an event to be accepted;
	// false or an error is answered 422 (see [Config.Decide]).
	Accept *rules.Program
	// Schema, when not nil, is a JSON Schema every body must match, else
	// 422 with the violations.
	Schema *rules.Schema
	// KeepRejected, when more than 0, keeps this source's rejected
	// requests (401, 400, 413, 415, 422) that long through Config.Audit.
	KeepRejected time.Duration
	// DropHeaders are lower-case header names never stored with an event
	// or a rejected request nor shown to rules, besides those always
	// dropped (credentials and signatures): the header the source's auth
	// reads and its drop_headers.
	DropHeaders []string
	// Redactor, when not nil, removes the source's url-token (its query
	// parameter's value and each configured token, however encoded) from
	// every header value stored with an event or a rejected request or
	// shown to rules (a proxy may pass the URL on in X-Forwarded-Uri, say).
	Redactor *auth.Redactor
	// AllowDuplicateKeys accepts a body with a key twice in one object
	// (rules, the schema and the dedup key then see the last value). By
	// default such a body is refused with 400: JSON readers disagree on
	// which value counts, so what the rules checked need not be what a
	// sink's reader sees.
	AllowDuplicateKeys bool
	// AllowInvalidUTF8 accepts a body with bytes that are not UTF-8 or
	// with a lone surrogate escape (\ud800), which the rules, the schema
	// and the dedup key see as U+FFFD, as encoding/json does. By default
	// such a body is refused with 400: two events that differ only there
	// would have one dedup key, and the second be dropped as a duplicate;
	// and a sink's reader may refuse the body (PostgreSQL's jsonb does).
	AllowInvalidUTF8 bool
	// KeepRejectedMax, when more than 0, bounds the bytes of this source's
	// kept rejections (keep_rejected_max): the oldest are dropped first.
	KeepRejectedMax int64
}

// Config is what a [Handler] serves; [Handler.Swap] replaces it at once.
type Config struct {
	Sources []Source
	Router  *rules.Router
	// MaxBody bounds a request body, in bytes.
	MaxBody int64
	// MaxConcurrent bounds the authenticated requests handled at once (0:
	// no bound); a request takes its slot once it is authenticated.
	MaxConcurrent int
	// MaxBodyMemory bounds the memory that the bodies of the
	// authenticated requests in flight take together, each counted at
	// [DecodeCost] times its length (0: no bound), taken after the slot.
	MaxBodyMemory int64
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// Metrics, if set, counts requests by source and outcome, route
	// matches and rule errors. Set it on every Config given to Swap.
	Metrics *metrics.Metrics
	// Audit, if set, keeps the rejected requests of sources with
	// KeepRejected. Set it on every Config given to Swap.
	Audit *Audit
	// LogRequests logs one line per accepted or duplicate webhook at INFO
	// ([server] log_requests); refusals are logged either way, rate-limited
	// (see reqlog.go).
	LogRequests bool
	// Tracing, when not nil, traces each request (see trace.go); nil is
	// off and costs nothing. Set it on every Config given to Swap.
	Tracing *telemetry.Tracer
}

// Stats counts what the handler saw; read it with [Handler.Stats].
type Stats struct {
	Accepted, Duplicates, Rejected, RuleErrors, Unavailable int64
	// Unprocessable counts 422s (they count in Rejected too).
	Unprocessable int64
	// Unauthorized counts 401s, Limited 429s (they count in Rejected too).
	Unauthorized, Limited int64
	// Ignored counts requests the source's ignore rule acknowledged
	// without storing them.
	Ignored int64
}

// Handler serves every source. It is safe for concurrent use.
type Handler struct {
	app Appender
	log *slog.Logger
	cur atomic.Pointer[state]

	accepted, duplicates, rejected, ruleErrors, unavailable atomic.Int64
	unauthorized, limited                                   atomic.Int64
	unprocessable, ignored                                  atomic.Int64

	refusals refusalLog
}

type state struct {
	cfg    Config
	byPath map[string]*Source
	// redactors are the url-token sources' (see redact).
	redactors []*auth.Redactor
	slots     chan struct{} // MaxConcurrent tokens; nil when unbounded
	mem       *bodyMemory   // nil when unbounded
}

// redact removes from s every url-token source's token and parameter
// value (see [auth.Redactor]): for what is said of a request no source
// took, whose path may hold one.
func (st *state) redact(s string) string {
	for _, r := range st.redactors {
		s = r.Redact(s)
	}
	return s
}

// New returns a handler that serves cfg and appends through app.
func New(cfg Config, app Appender, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{app: app, log: logger}
	h.Swap(cfg)
	return h
}

// Swap makes the handler serve cfg from the next request on, and creates
// its sources' request counters and its rules' error counters at zero
// (metrics.Metrics.InitSource, InitRuleError). The requests in flight
// keep their slots and shares of body memory, counted against the new
// bounds too when those are unchanged (fresh ones would let the old and
// new requests together take twice a bound, at every reload).
func (h *Handler) Swap(cfg Config) {
	st := &state{cfg: cfg, byPath: make(map[string]*Source, len(cfg.Sources))}
	old := h.cur.Load()
	switch {
	case old != nil && old.slots != nil && cap(old.slots) == cfg.MaxConcurrent:
		st.slots = old.slots
	case cfg.MaxConcurrent > 0:
		st.slots = make(chan struct{}, cfg.MaxConcurrent)
	}
	switch {
	case old != nil && old.mem != nil && old.mem.max == cfg.MaxBodyMemory:
		st.mem = old.mem
	case cfg.MaxBodyMemory > 0:
		st.mem = &bodyMemory{max: cfg.MaxBodyMemory}
	}
	for i := range cfg.Sources {
		src := &cfg.Sources[i]
		st.byPath[PathKey(src.Path)] = src
		if src.Redactor != nil {
			st.redactors = append(st.redactors, src.Redactor)
		}
		cfg.Metrics.InitSource(src.Name)
		for _, expr := range sourceRules {
			if _, ok := src.rule(expr); ok {
				cfg.Metrics.InitRuleError(src.Name, expr)
			}
		}
	}
	if cfg.Router != nil {
		cfg.Router.Exprs(cfg.Metrics.InitRuleError)
	}
	h.cur.Store(st)
}

// Router returns the router in force.
func (h *Handler) Router() *rules.Router { return h.cur.Load().cfg.Router }

// Stats returns the handler's counters.
func (h *Handler) Stats() Stats {
	return Stats{
		Accepted:    h.accepted.Load(),
		Duplicates:  h.duplicates.Load(),
		Rejected:    h.rejected.Load(),
		RuleErrors:  h.ruleErrors.Load(),
		Unavailable: h.unavailable.Load(),

		Unauthorized:  h.unauthorized.Load(),
		Limited:       h.limited.Load(),
		Unprocessable: h.unprocessable.Load(),
		Ignored:       h.ignored.Load(),
	}
}

// Response is the body of a 2xx answer.
type Response struct {
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"`
}

// ServeHTTP implements [http.Handler].
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := h.cur.Load()
	if st.cfg.Tracing != nil {
		h.serveTraced(w, r, st, start)
		return
	}
	source, outcome := h.serve(w, r, st, start)
	st.cfg.Metrics.IngestRequest(source, outcome, time.Since(start))
}

// serve answers r and returns its source's name ("" when the path is
// unknown) and its outcome, one of the metrics.Outcome constants. What
// depends on the connection (path, method, client address, request slots,
// the rate limiter) is checked here; what depends on the request is
// [Config.Decide]'s. received is when ServeHTTP began: the event's
// received_at.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, st *state, received time.Time) (source, outcome string) {
	path, err := RequestPath(r.URL)
	if err != nil {
		return "", h.refuse(w, r, st, "", Decision{Status: http.StatusBadRequest, Outcome: metrics.OutcomeNotFound, Error: st.redact(err.Error())})
	}
	src, ok := st.byPath[path]
	if !ok {
		// A sender's mistyped URL may hold a token (/hooks/x&token=…).
		return "", h.refuse(w, r, st, "", Decision{Status: http.StatusNotFound, Outcome: metrics.OutcomeNotFound,
			Error: "no source is configured at path " + strconv.Quote(st.redact(path))})
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return src.Name, h.refuse(w, r, st, src.Name, Decision{Status: http.StatusMethodNotAllowed, Outcome: metrics.OutcomeMethodNotAllowed,
			Error: "method " + r.Method + " is not allowed: send webhooks with POST"})
	}
	if len(src.Allow) > 0 {
		if ip, ok := forwarded.ClientIP(r, st.cfg.TrustedProxies); !ok || !forwarded.In(src.Allow, ip) {
			return src.Name, h.refuse(w, r, st, src.Name, Decision{Status: http.StatusForbidden, Outcome: metrics.OutcomeForbidden,
				Error: "address " + ip.String() + " is not allowed to send to source " + strconv.Quote(src.Name)})
		}
	}
	raw := r.Body
	req := Request{
		Header:        r.Header,
		Body:          r.Body,
		ContentLength: r.ContentLength,
		ReceivedAt:    received,
		ID:            newID(),
		RemoteAddr:    r.RemoteAddr,
		Query:         r.URL.RawQuery,
		Context:       r.Context(),
	}
	if r.ContentLength < 0 {
		// Not declared (chunked): MaxBytesReader makes the server close
		// the connection after an oversized one. A declared length is
		// checked before the body is read, and net/http reads no byte
		// past it.
		req.Body = http.MaxBytesReader(w, r.Body, st.cfg.MaxBody)
	}
	if src.Limiter != nil {
		req.Admit = src.admit
	}
	// A slot and a share of body memory are taken once the request is
	// authenticated (see decide). Until then, reading the body is bounded
	// by the server's read timeout and max_conns_per_ip.
	held := inflight{st: st}
	defer held.release()
	d := st.cfg.decide(src, req, &held)
	if d.Ignored {
		h.ignored.Add(1)
		writeJSON(w, http.StatusOK, Ignored{Ignored: true, Reason: d.Error})
		h.logIgnored(st, src.Name, &d)
		if d.Rejection != nil {
			st.cfg.Audit.Keep(*d.Rejection)
		}
		return src.Name, d.Outcome
	}
	if !d.Accepted() {
		h.sourceRuleFailure(st, src, &d)
		if d.Status == http.StatusRequestEntityTooLarge {
			w.Header().Set("Connection", "close")
			outcome := h.refuse(w, r, st, src.Name, d)
			linger(w, r, raw, st.cfg.MaxBody)
			return src.Name, outcome
		}
		return src.Name, h.refuse(w, r, st, src.Name, d)
	}
	if st.cfg.Tracing != nil {
		telemetry.Stamp(r.Context(), &d.Entry.Event)
		// The sender's tracestate is its own text, stored and sent on.
		d.Entry.Event.TraceState = src.Redactor.Redact(d.Entry.Event.TraceState)
	}
	h.sourceRuleFailure(st, src, &d)
	h.ruleFailures(st, src, &d)
	res, err := h.app.Append(r.Context(), d.Entry)
	if err != nil {
		return src.Name, h.refuse(w, r, st, src.Name, appendFailed(err, r.Context().Err() != nil))
	}
	outcome = metrics.OutcomeAccepted
	if res.Duplicate {
		h.duplicates.Add(1)
		outcome = metrics.OutcomeDuplicate
	} else {
		h.accepted.Add(1)
		countRoutes(st.cfg.Metrics, d.Entry.Targets)
	}
	if st.cfg.Tracing != nil {
		telemetry.Appended(r.Context(), res.ID, d.Entry.DedupKey, res.Duplicate)
	}
	writeAccepted(w, res.ID, res.Duplicate)
	h.logAccepted(st, src, &d.Entry, res, r)
	return src.Name, outcome
}

// After a 413, the rest of the body is read and thrown away, at most
// lingerBodies times max_body and for at most lingerFor, before the
// connection is closed, as nginx's lingering close does: a sender that
// writes its whole body before it reads (Python's urllib, most SDKs)
// then reads the 413, where closing with its data unread would reset the
// connection under it.
const (
	lingerBodies = 4
	lingerFor    = 3 * time.Second
)

// linger sends the answer already written, then reads and discards what
// is left of body within the bounds above. A sender that waits for 100
// Continue has sent no body and is not waited for.
func linger(w http.ResponseWriter, r *http.Request, body io.Reader, maxBody int64) {
	if strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		return
	}
	rc := http.NewResponseController(w)
	rc.EnableFullDuplex() // HTTP/2 is full duplex already: an error here changes nothing
	if rc.Flush() != nil {
		return
	}
	rc.SetReadDeadline(time.Now().Add(lingerFor))
	io.Copy(io.Discard, io.LimitReader(body, lingerBodies*maxBody))
}

// admit takes a token of the source's rate limiter: it returns 0, or how
// long to wait when there is none (and then takes none).
func (s *Source) admit() time.Duration {
	res := s.Limiter.Reserve()
	d := res.Delay()
	if d > 0 {
		res.Cancel()
	}
	return d
}

// ruleFailures logs and counts the rule errors of an accepted decision.
func (h *Handler) ruleFailures(st *state, src *Source, d *Decision) {
	log := h.log
	if tp := d.Entry.Event.TraceParent; tp != "" && (d.DedupKeyErr != nil || len(d.RouteErrs) > 0) { // tracing is on
		log = log.With(telemetry.LogArgs(tp)...)
	}
	if d.DedupKeyErr != nil {
		h.ruleErrors.Add(1)
		st.cfg.Metrics.DedupKeyError(src.Name)
		log.Warn("dedup key failed; event accepted without dedup", "source", src.Name, "event_id", d.Entry.Event.ID, "err", d.DedupKeyErr)
	}
	for _, err := range d.RouteErrs {
		h.ruleErrors.Add(1)
		route, expr := "", ""
		if re, ok := errors.AsType[*rules.RouteError](err); ok {
			route, expr = re.Route, re.Expr
		}
		st.cfg.Metrics.RuleError(route, expr)
		if log.Enabled(context.Background(), slog.LevelWarn) { // the arguments cost allocations
			log.Warn("rule failed", "source", src.Name, "event_id", d.Entry.Event.ID, "err", err)
		}
	}
}

// The expr labels of a source's rules, in pipelined_rule_errors_total and
// Decision.RuleExpr.
const (
	ruleIgnore = "ignore"
	ruleAccept = "accept"
	ruleSchema = "schema"
)

// sourceRules lists them.
var sourceRules = [...]string{ruleIgnore, ruleAccept, ruleSchema}

// rule returns what names src's rule of label expr in a log line (the
// expression, or the schema's file), and whether src has that rule.
func (src *Source) rule(expr string) (string, bool) {
	switch {
	case expr == ruleIgnore && src.Ignore != nil:
		return src.Ignore.Source(), true
	case expr == ruleAccept && src.Accept != nil:
		return src.Accept.Source(), true
	case expr == ruleSchema && src.Schema != nil:
		return src.Schema.Name(), true
	}
	return "", false
}

// sourceRuleFailure logs and counts the runtime error of a source's
// ignore or accept rule, or a body too costly to check against its
// schema: the metric's route label is then the source's name, its expr
// label "ignore", "accept" or "schema". The error holds no value of the
// event; the line names the rule (the schema's file).
func (h *Handler) sourceRuleFailure(st *state, src *Source, d *Decision) {
	if d.RuleErr == nil {
		return
	}
	h.ruleErrors.Add(1)
	st.cfg.Metrics.RuleError(src.Name, d.RuleExpr)
	rule, _ := src.rule(d.RuleExpr)
	h.log.Warn("rule failed", "source", src.Name, "expr", d.RuleExpr, "rule", rule, "err", d.RuleErr)
}

// appendFailed is the refusal of an event the log could not take. When
// the client went away (canceled) for another reason than the log's
// state, nobody reads the answer: it has no Status.
func appendFailed(err error, canceled bool) Decision {
	switch {
	case errors.Is(err, writer.ErrOverloaded):
		return unavailable("event log is overloaded: retry shortly")
	case errors.Is(err, pipeline.ErrHalted):
		return unavailable("event log stopped writing after a failed write, and pipelined restarts to recover it: retry shortly")
	case errors.Is(err, pipeline.ErrFull):
		return unavailable("event log is full (no disk space): retry later")
	case errors.Is(err, pipeline.ErrClosed):
		return unavailable("pipelined is shutting down: retry shortly")
	case errors.Is(err, writer.ErrAbandoned):
		// Not committed, and never will be by this process: the stop
		// gave up on a log that did not commit in time.
		return unavailable("pipelined is shutting down and its event log did not commit the event in time: retry shortly")
	case errors.Is(err, pipeline.ErrTooBig):
		// One event that the log cannot store in one write (a JetStream
		// server's max_payload under max_body): a retry would fail the
		// same way, so not 503.
		return Decision{Status: http.StatusRequestEntityTooLarge, Outcome: metrics.OutcomeTooLarge,
			Error: "event too large for the event log to store in one write: a retry would fail the same way"}
	case canceled:
		return Decision{Outcome: metrics.OutcomeCanceled}
	}
	return unavailable("event log cannot take the event: retry later")
}

// inflight is what one request holds while the handler serves it: one
// of its state's slots, and a share of its body memory. It lives on the
// handler's stack: no allocation per request.
type inflight struct {
	st    *state
	slot  bool
	share int64
}

func (f *inflight) takeSlot() bool {
	if f.st.slots == nil {
		return true
	}
	select {
	case f.st.slots <- struct{}{}:
		f.slot = true
		return true
	default:
		return false
	}
}

func (f *inflight) takeMemory(n int64) (ok bool) {
	if f.st.mem == nil {
		return true
	}
	f.share, ok = f.st.mem.take(n)
	return ok
}

// release gives back what f took.
func (f *inflight) release() {
	if f.slot {
		<-f.st.slots
	}
	if f.share > 0 {
		f.st.mem.give(f.share)
	}
}

// unavailable is the refusal of a request that pipelined cannot take now.
func unavailable(reason string) Decision {
	return Decision{Status: http.StatusServiceUnavailable, Outcome: metrics.OutcomeUnavailable, Error: reason}
}

// refuse answers a refusal of a request to source ("" for an unknown
// path), counts it, logs it (rate-limited) and hands it to the audit when
// its source keeps rejected requests. It returns d.Outcome. A refusal
// without Status (the client left) is counted as unavailable and not
// answered.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, st *state, source string, d Decision) string {
	h.logRefused(r.Context(), source, r.RemoteAddr, &d)
	switch d.Status {
	case 0:
		h.unavailable.Add(1)
		return d.Outcome
	case http.StatusServiceUnavailable:
		h.unavailable.Add(1)
		w.Header().Set("Retry-After", "1")
	case http.StatusUnauthorized:
		h.unauthorized.Add(1)
		h.rejected.Add(1)
	case http.StatusTooManyRequests:
		h.limited.Add(1)
		h.rejected.Add(1)
	case http.StatusUnprocessableEntity:
		h.unprocessable.Add(1)
		h.rejected.Add(1)
	default:
		h.rejected.Add(1)
	}
	if d.Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(int(d.RetryAfter/time.Second)+1))
	}
	writeJSON(w, d.Status, errorBody{Error: d.Error, Violations: d.Violations})
	if d.Rejection != nil {
		st.cfg.Audit.Keep(*d.Rejection)
	}
	return d.Outcome
}

// countRoutes counts each route that chose a sink of targets once, for an
// event that was appended (a duplicate is not routed again). Router
// appends a route's targets together, so a route is counted when its name
// differs from the previous target's. A route whose every sink an earlier
// route chose already adds no target and is not counted.
func countRoutes(m *metrics.Metrics, targets []pipeline.Target) {
	if m == nil {
		return
	}
	for i, t := range targets {
		if i == 0 || t.Route != targets[i-1].Route {
			m.RouteMatched(t.Route)
		}
	}
}

// PathKey is a source's path as [RequestPath] returns it for a request
// that spells it the usual way: escaped as [url.URL.EscapedPath] escapes.
func PathKey(path string) string {
	return (&url.URL{Path: path}).EscapedPath()
}

// RequestPath returns the path of a request as it was sent, escapes and
// all, which is what is matched against each source's [PathKey]: a path
// that names a source only once unescaped (/hooks/%68m for /hooks/hm)
// names none. A path with an escaped "/" (%2F) is an error: it would mean
// one thing to pipelined and another to a proxy in front of it.
func RequestPath(u *url.URL) (string, error) {
	p := u.EscapedPath()
	for i := 0; i+2 < len(p); i++ {
		if p[i] == '%' && p[i+1] == '2' && (p[i+2] == 'f' || p[i+2] == 'F') {
			return "", errors.New("path " + strconv.Quote(p) + " has an escaped \"/\" (%2F): send the path of a source as written in its configuration")
		}
	}
	return p, nil
}

// newID returns a new event id: a UUIDv7, so ids sort by time.
func newID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

// Ignored is the answer to a request the source's ignore rule matched:
// acknowledged, so the sender does not retry, and not stored.
type Ignored struct {
	Ignored bool   `json:"ignored"`
	Reason  string `json:"reason"`
}

type errorBody struct {
	Error string `json:"error"`
	// Violations lists what a source's JSON Schema found wrong (422).
	Violations []string `json:"violations,omitempty"`
}

// writeAccepted answers 200 with the [Response] for id, as writeJSON
// would, without reflection: an accepted webhook is the hot path.
func writeAccepted(w http.ResponseWriter, id string, duplicate bool) {
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' {
			writeJSON(w, http.StatusOK, Response{ID: id, Duplicate: duplicate})
			return
		}
	}
	buf := answers.Get().(*[128]byte) // w.Write's argument escapes: pooled, not per request
	defer answers.Put(buf)
	b := append(buf[:0], `{"id":"`...)
	b = append(b, id...)
	if duplicate {
		b = append(b, `","duplicate":true}`+"\n"...)
	} else {
		b = append(b, `","duplicate":false}`+"\n"...)
	}
	hs := w.Header()
	hs["Content-Type"] = jsonContentType
	if len(b) < len(contentLengths) {
		hs["Content-Length"] = contentLengths[len(b)]
	} else {
		hs["Content-Length"] = []string{strconv.Itoa(len(b))}
	}
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// answers are writeAccepted's buffers: an io.Writer keeps nothing of what
// it is given once Write returns.
var answers = sync.Pool{New: func() any { return new([128]byte) }}

// jsonContentType is the Content-Type of every answer; net/http only
// reads a header's values, so one slice serves them all.
var jsonContentType = []string{"application/json"}

// contentLengths are the Content-Length values of the short answers
// writeAccepted writes (an id of 36 bytes makes 60 or 59), shared the same
// way as jsonContentType.
var contentLengths = func() (c [128][]string) {
	for n := range c {
		c[n] = []string{strconv.Itoa(n)}
	}
	return c
}()

// writeJSON answers v as one line of JSON, without HTML escaping: a
// reason reads `<token>` and `&&`, not `\u003ctoken\u003e`.
func writeJSON(w http.ResponseWriter, code int, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(v) // ends in a newline
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(code)
	w.Write(b.Bytes())
}
