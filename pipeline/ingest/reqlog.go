package ingest

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/internal/lograte"
	"github.com/pipelined/pipelined/pipeline/telemetry"
)

// The per-webhook log line. Every request gets one line at INFO:
//
//	webhook accepted   source, event_id, dedup_key, sinks, delivery_id, remote
//	webhook duplicate  source, event_id (the first event's), dedup_key, delivery_id, remote
//	webhook ignored    source, reason (the source's ignore rule; rate-limited as refusals)
//	webhook refused    source, status, reason, remote (and suppressed)
//
// delivery_id is the value of the header the source's auth names for one
// delivery (webhook-id for Standard Webhooks), when it does and the request
// has it: it tells two copies of one event apart, with remote.
//
// Config.LogRequests turns off the first three; refusals are always logged,
// at most refusalBurst lines at once and then one per refusalEvery for each
// source and kind of refusal (its metrics outcome, a small fixed set), so
// that a flood of bad requests cannot flood the journal: the line that
// follows a gap carries suppressed=N, the refusals it did not log.

const (
	refusalEvery = time.Second
	refusalBurst = 5
	// maxLogged bounds a dedup key or reason in a log line: a dedup key
	// can be as long as a body.
	maxLogged = 256
)

// refusalLog rate-limits refusal lines per source and outcome.
type refusalLog struct {
	mu   sync.Mutex
	keys map[refusalKey]*lograte.Burst
}

type refusalKey struct{ source, outcome string }

// maxRefusalKeys bounds the limiter map; sources come from the
// configuration and outcomes from a fixed set, so it is only reached after
// many reloads that renamed sources, and then the map starts again.
const maxRefusalKeys = 4096

// take reports whether a refusal of source with outcome is logged now, and
// how many were suppressed since the last one that was.
func (r *refusalLog) take(source, outcome string, now time.Time) (ok bool, suppressed int) {
	r.mu.Lock()
	k := refusalKey{source, outcome}
	b, found := r.keys[k]
	if !found {
		if r.keys == nil || len(r.keys) >= maxRefusalKeys {
			r.keys = make(map[refusalKey]*lograte.Burst)
		}
		b = lograte.NewBurst(refusalBurst, refusalEvery)
		r.keys[k] = b
	}
	r.mu.Unlock()
	return b.AllowAt(now)
}

func clip(s string) string {
	if len(s) <= maxLogged {
		return s
	}
	return s[:maxLogged] + "…"
}

// logAccepted writes the line of an appended request r to src.
func (h *Handler) logAccepted(st *state, src *Source, e *pipeline.Entry, res pipeline.Appended, r *http.Request) {
	if !st.cfg.LogRequests {
		return
	}
	// Checked first, and attributes rather than key-value pairs: below
	// the level (-log-level warn) the line costs no allocation; above it,
	// one for the sinks and one for the attributes past slog's five
	// inline ones (BenchmarkLogAccepted).
	ctx := context.Background()
	if !h.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	log := h.log
	if e.Event.TraceParent != "" { // tracing is on
		log = log.With(telemetry.LogArgs(e.Event.TraceParent)...)
	}
	// The request's delivery id (when the source's auth names one) and
	// its remote address tell two copies of one event apart: CallKaro
	// sends each call from its account-level and agent-level webhooks.
	// Read from the event's headers (lower-case names, UTF-8), which
	// costs no allocation, unlike http.Header.Get with a lower-case name.
	var delivery slog.Attr
	if src.DeliveryHeader != "" {
		id := e.Event.Headers[src.DeliveryHeader]
		if id == "" && src.DeliveryHeader == "webhook-id" {
			id = e.Event.Headers["svix-id"] // the Svix spelling
		}
		if id != "" {
			delivery = slog.String("delivery_id", clip(id))
		}
	}
	remote := slog.String("remote", r.RemoteAddr)
	if res.Duplicate {
		log.LogAttrs(ctx, slog.LevelInfo, "webhook duplicate", slog.String("source", src.Name), slog.String("event_id", res.ID),
			slog.String("dedup_key", clip(e.DedupKey)), delivery, remote)
		return
	}
	sinks := make([]string, len(e.Targets))
	for i, t := range e.Targets {
		sinks[i] = t.Sink
	}
	log.LogAttrs(ctx, slog.LevelInfo, "webhook accepted", slog.String("source", src.Name), slog.String("event_id", res.ID),
		slog.String("dedup_key", clip(e.DedupKey)), slog.Any("sinks", sinks), delivery, remote)
}

// logRefused writes the line of a refused request, rate-limited.
func (h *Handler) logRefused(ctx context.Context, source, remote string, d *Decision) {
	ok, suppressed := h.refusals.take(source, d.Outcome, time.Now())
	if !ok {
		return
	}
	reason := d.Error
	if d.LogReason != "" {
		reason = d.LogReason
	}
	if d.Status == 0 && reason == "" {
		reason = "the client closed the request before the event was written"
	}
	attrs := []slog.Attr{
		slog.String("source", source), slog.Int("status", d.Status), slog.String("reason", clip(reason)),
		slog.String("remote", remote),
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed))
	}
	attrs = append(attrs, telemetry.LogAttrs(ctx)...)
	h.log.LogAttrs(context.Background(), slog.LevelInfo, "webhook refused", attrs...)
}

// logIgnored writes the line of a request that the source's ignore rule
// answered, rate-limited per source as refusals are: a sender's new event
// type can arrive as fast as its others.
func (h *Handler) logIgnored(st *state, source string, d *Decision) {
	if !st.cfg.LogRequests {
		return
	}
	ok, suppressed := h.refusals.take(source, d.Outcome, time.Now())
	if !ok {
		return
	}
	reason := d.Error
	if d.LogReason != "" {
		reason = d.LogReason
	}
	attrs := []slog.Attr{slog.String("source", source), slog.String("reason", clip(reason))}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed))
	}
	h.log.LogAttrs(context.Background(), slog.LevelInfo, "webhook ignored", attrs...)
}
