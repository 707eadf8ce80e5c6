package ingest

import (
	"net/http"
	"time"

	"github.com/pipelined/pipelined/pipeline/telemetry"
)

// serveTraced is ServeHTTP with tracing on: the request gets a server span
// (a child of the sender's when it sent a traceparent) that the event's
// trace context is taken from, and that ends with the answer's status.
func (h *Handler) serveTraced(w http.ResponseWriter, r *http.Request, st *state, start time.Time) {
	ctx, sp := st.cfg.Tracing.StartRequest(r)
	sw := &statusWriter{ResponseWriter: w}
	r = r.WithContext(ctx)
	source, outcome := h.serve(sw, r, st, start)
	st.cfg.Metrics.IngestRequest(source, outcome, time.Since(start))
	telemetry.EndRequest(sp, r, source, outcome, sw.status)
}

// statusWriter remembers the status answered.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (see linger).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
