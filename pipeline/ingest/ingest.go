// Package ingest is the HTTP side of pipelined: one handler serves every
// [[source]] by its path. For each request it checks method, content type,
// size and JSON (P7), computes the dedup key, evaluates every route, hands
// the event to the writer and answers 2xx only once the writer says the
// event is durable (P1).
package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/auth"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/pipeline/rules"
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
	// Limiter, when not nil, bounds the rate of authenticated requests.
	Limiter *rate.Limiter
	// Allow, when not empty, lists the client addresses accepted.
	Allow []netip.Prefix
	// Accept, when not nil, must be true for an event to be accepted;
	// false or an error is answered 422 (see [Validate]).
	Accept *rules.Program
	// Schema, when not nil, is a JSON Schema every body must match, else
	// 422 with the violations.
	Schema *rules.Schema
	// KeepRejected, when more than 0, keeps this source's rejected
	// requests (401, 400, 413, 415, 422) that long through Config.Audit.
	KeepRejected time.Duration
}

// Config is what a [Handler] serves; [Handler.Swap] replaces it at once.
type Config struct {
	Sources []Source
	Router  *rules.Router
	// MaxBody bounds a request body, in bytes.
	MaxBody int64
	// MaxConcurrent bounds the requests handled at once (0: no bound).
	MaxConcurrent int
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// Metrics, if set, counts requests by source and outcome, route
	// matches and rule errors. Set it on every Config given to Swap.
	Metrics *metrics.Metrics
	// Audit, if set, keeps the rejected requests of sources with
	// KeepRejected. Set it on every Config given to Swap.
	Audit *Audit
}

// Stats counts what the handler saw; read it with [Handler.Stats].
type Stats struct {
	Accepted, Duplicates, Rejected, RuleErrors, Unavailable int64
	// Unprocessable counts 422s (they count in Rejected too).
	Unprocessable int64
	// Unauthorized counts 401s, Limited 429s (they count in Rejected too).
	Unauthorized, Limited int64
}

// Handler serves every source. It is safe for concurrent use.
type Handler struct {
	app Appender
	log *slog.Logger
	cur atomic.Pointer[state]

	accepted, duplicates, rejected, ruleErrors, unavailable atomic.Int64
	unauthorized, limited                                   atomic.Int64
	unprocessable                                           atomic.Int64
}

type state struct {
	cfg    Config
	byPath map[string]*Source
	slots  chan struct{} // MaxConcurrent tokens; nil when unbounded
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

// Swap makes the handler serve cfg from the next request on.
func (h *Handler) Swap(cfg Config) {
	st := &state{cfg: cfg, byPath: make(map[string]*Source, len(cfg.Sources))}
	if cfg.MaxConcurrent > 0 {
		st.slots = make(chan struct{}, cfg.MaxConcurrent)
	}
	for i := range cfg.Sources {
		st.byPath[cfg.Sources[i].Path] = &cfg.Sources[i]
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
	source, outcome := h.serve(w, r, st)
	st.cfg.Metrics.IngestRequest(source, outcome, time.Since(start))
}

// serve answers r and returns its source's name ("" when the path is
// unknown) and its outcome, one of the metrics.Outcome constants.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, st *state) (source, outcome string) {
	received := time.Now()
	src, ok := st.byPath[r.URL.Path]
	if !ok {
		h.reject(w, http.StatusNotFound, "no source is configured at path "+strconv.Quote(r.URL.Path))
		return "", metrics.OutcomeNotFound
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.reject(w, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed: send webhooks with POST")
		return src.Name, metrics.OutcomeMethodNotAllowed
	}
	if len(src.Allow) > 0 {
		if ip, ok := clientIP(r, st.cfg.TrustedProxies); !ok || !allowed(src.Allow, ip) {
			h.reject(w, http.StatusForbidden, "address "+ip.String()+" is not allowed to send to source "+strconv.Quote(src.Name))
			return src.Name, metrics.OutcomeForbidden
		}
	}
	if st.slots != nil {
		select {
		case st.slots <- struct{}{}:
			defer func() { <-st.slots }()
		default:
			h.unavailable.Add(1)
			h.unavailable503(w, "too many requests in flight: retry shortly")
			return src.Name, metrics.OutcomeUnavailable
		}
	}
	if !IsJSON(r.Header.Get("Content-Type")) {
		msg := "content type " + strconv.Quote(r.Header.Get("Content-Type")) + " is not JSON: send Content-Type: application/json"
		h.reject(w, http.StatusUnsupportedMediaType, msg)
		h.keep(st, src, r, received, http.StatusUnsupportedMediaType, msg, nil, nil)
		return src.Name, metrics.OutcomeUnsupportedMediaType
	}
	max := st.cfg.MaxBody
	if r.ContentLength > max {
		msg := fmt.Sprintf("body of %d bytes is larger than the limit of %d bytes", r.ContentLength, max)
		h.reject(w, http.StatusRequestEntityTooLarge, msg)
		h.keep(st, src, r, received, http.StatusRequestEntityTooLarge, msg, nil, nil)
		return src.Name, metrics.OutcomeTooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			msg := fmt.Sprintf("body is larger than the limit of %d bytes", max)
			h.reject(w, http.StatusRequestEntityTooLarge, msg)
			h.keep(st, src, r, received, http.StatusRequestEntityTooLarge, msg, nil, body)
			return src.Name, metrics.OutcomeTooLarge
		}
		h.reject(w, http.StatusBadRequest, "read body: "+err.Error())
		return src.Name, metrics.OutcomeReadError
	}
	authName := "none"
	if src.Verifier != nil {
		if err := src.Verifier.Verify(r.Header, body, time.Now()); err != nil {
			h.unauthorized.Add(1)
			reason := "authentication failed"
			var ae *auth.Error
			if errors.As(err, &ae) {
				reason = ae.Reason
			}
			h.log.Info("request refused: authentication failed", "source", src.Name, "reason", reason, "remote", r.RemoteAddr)
			h.reject(w, http.StatusUnauthorized, reason)
			h.keep(st, src, r, received, http.StatusUnauthorized, reason, nil, body)
			return src.Name, metrics.OutcomeUnauthorized
		}
		authName = src.Verifier.Name()
	}
	if src.Limiter != nil {
		res := src.Limiter.Reserve()
		if d := res.Delay(); d > 0 {
			res.Cancel()
			h.limited.Add(1)
			w.Header().Set("Retry-After", strconv.Itoa(int(d/time.Second)+1))
			h.reject(w, http.StatusTooManyRequests, "source "+strconv.Quote(src.Name)+" is over its rate: retry after the Retry-After delay")
			return src.Name, metrics.OutcomeRateLimited
		}
	}
	doc, err := Decode(body)
	if err != nil {
		msg := "body is not valid JSON: " + jsonError(err)
		h.reject(w, http.StatusBadRequest, msg)
		h.keep(st, src, r, received, http.StatusBadRequest, msg, nil, body)
		return src.Name, metrics.OutcomeBadJSON
	}

	ev := pipeline.Event{
		ID:         newID(),
		Source:     src.Name,
		ReceivedAt: time.Now().UTC(),
		Headers:    Headers(r.Header),
		Body:       body,
		Auth:       authName,
	}
	env := &rules.Env{Body: doc, Source: ev.Source, Headers: ev.Headers, ID: ev.ID, ReceivedAt: ev.ReceivedAt}
	if code, reason, violations := Validate(src, env); code != 0 {
		h.unprocessable.Add(1)
		h.rejected.Add(1)
		writeJSON(w, code, errorBody{Error: reason, Violations: violations})
		h.keep(st, src, r, received, code, reason, violations, body)
		return src.Name, metrics.OutcomeUnprocessable
	}
	entry := pipeline.Entry{Event: ev, DedupWindow: src.DedupWindow}
	switch {
	case src.DedupKey != nil:
		key, err := src.DedupKey.String(env)
		if err != nil {
			h.ruleErrors.Add(1)
			st.cfg.Metrics.DedupKeyError(src.Name)
			h.log.Warn("dedup key failed; event accepted without dedup", "source", src.Name, "event_id", ev.ID, "err", err)
		}
		entry.DedupKey = key
	case src.DedupHeader != "":
		entry.DedupKey = r.Header.Get(src.DedupHeader)
	}
	if st.cfg.Router != nil {
		var errs []error
		entry.Targets, errs = st.cfg.Router.Route(env)
		for _, err := range errs {
			h.ruleErrors.Add(1)
			route, expr := "", ""
			if re := (*rules.RouteError)(nil); errors.As(err, &re) {
				route, expr = re.Route, re.Expr
			}
			st.cfg.Metrics.RuleError(route, expr)
			h.log.Warn("rule failed", "source", src.Name, "event_id", ev.ID, "err", err)
		}
	}

	res, err := h.app.Append(r.Context(), entry)
	if err != nil {
		h.unavailable.Add(1)
		switch {
		case errors.Is(err, writer.ErrOverloaded):
			h.unavailable503(w, "event log is overloaded: retry shortly")
		case errors.Is(err, pipeline.ErrFull):
			h.unavailable503(w, "event log is full (no disk space): retry later")
		case errors.Is(err, pipeline.ErrClosed):
			h.unavailable503(w, "pipelined is shutting down: retry shortly")
		case r.Context().Err() != nil:
			// The client went away; nobody reads the answer.
			return src.Name, metrics.OutcomeCanceled
		default:
			h.unavailable503(w, "event log cannot take the event: retry later")
		}
		return src.Name, metrics.OutcomeUnavailable
	}
	outcome = metrics.OutcomeAccepted
	if res.Duplicate {
		h.duplicates.Add(1)
		outcome = metrics.OutcomeDuplicate
	} else {
		h.accepted.Add(1)
		countRoutes(st.cfg.Metrics, entry.Targets)
	}
	writeJSON(w, http.StatusOK, Response{ID: res.ID, Duplicate: res.Duplicate})
	return src.Name, outcome
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

func (h *Handler) reject(w http.ResponseWriter, code int, msg string) {
	h.rejected.Add(1)
	writeError(w, code, msg)
}

// keep hands a rejected request to the audit when its source keeps them.
func (h *Handler) keep(st *state, src *Source, r *http.Request, at time.Time, code int, reason string, violations []string, body []byte) {
	if src.KeepRejected <= 0 || st.cfg.Audit == nil {
		return
	}
	st.cfg.Audit.Keep(rejection(src, r, at, code, reason, violations, body))
}

func (h *Handler) unavailable503(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, msg)
}

// clientIP returns the address of the client: the peer's, or, when the peer
// is a trusted proxy, the last address in X-Forwarded-For that is not one.
func clientIP(r *http.Request, trusted []netip.Prefix) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	ip := ap.Addr().Unmap()
	if !allowed(trusted, ip) {
		return ip, true
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return ip, false // a garbled header from behind a trusted proxy: refuse
		}
		ip = a.Unmap()
		if !allowed(trusted, ip) {
			return ip, true
		}
	}
	return ip, true
}

func allowed(list []netip.Prefix, ip netip.Addr) bool {
	for _, p := range list {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// IsJSON reports whether a Content-Type is JSON: application/json or any
// application/*+json type, with any parameters.
func IsJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// secretHeaders are never stored with an event nor shown to rules.
var secretHeaders = map[string]bool{
	"authorization":       true,
	"proxy-authorization": true,
	"cookie":              true,
}

// Headers returns request headers as events keep them: lower-case names,
// the first value of each, without those that carry credentials.
func Headers(hs http.Header) map[string]string {
	out := make(map[string]string, len(hs))
	for k, v := range hs {
		lk := strings.ToLower(k)
		if secretHeaders[lk] || len(v) == 0 {
			continue
		}
		out[lk] = v[0]
	}
	return out
}

// newID returns a new event id: a UUIDv7, so ids sort by time.
func newID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

// Decode decodes a JSON body as rules see it: numbers as float64, so rules
// compare them with plain literals. A number too big for a float64 (valid
// JSON all the same) is kept as its text; the stored body is never changed.
func Decode(body []byte) (any, error) {
	var doc any
	err := json.Unmarshal(body, &doc)
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) || !strings.HasPrefix(te.Value, "number") {
		return doc, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	return numbers(doc), nil
}

// numbers replaces each json.Number in v by its float64, or by its text
// when it does not fit one.
func numbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		if f, err := v.Float64(); err == nil {
			return f
		}
		return v.String()
	case map[string]any:
		for k, e := range v {
			v[k] = numbers(e)
		}
	case []any:
		for i, e := range v {
			v[i] = numbers(e)
		}
	}
	return v
}

// jsonError says where JSON went wrong, in one line.
func jsonError(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s (at byte %d)", se.Error(), se.Offset)
	}
	return err.Error()
}

type errorBody struct {
	Error string `json:"error"`
	// Violations lists what a source's JSON Schema found wrong (422).
	Violations []string `json:"violations,omitempty"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
