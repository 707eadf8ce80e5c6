package admin

import (
	"bytes"
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
)

// Options says where the admin API gets its answers. Fields other than
// Ready and Sinks may be left zero: the routes that need them then answer
// 503 (Log) or 501 (Reload).
type Options struct {
	// Ready returns nil when the daemon is ready to serve, else why not.
	// ReadyChecks, when set, is used instead.
	Ready func() error
	// ReadyChecks runs the checks of GET /readyz: the daemon is ready when
	// every one is OK. The daemon's are: the log is open and writable, the
	// listeners are bound, the writer answers. A sink's health is never
	// one of them (it is in /v1/sinks).
	ReadyChecks func(ctx context.Context) []ReadyCheck
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
	// Pause pauses (paused true) or resumes a sink's delivery, keeping
	// the state across restarts, for POST /v1/sinks/{sink}/pause and
	// /resume; it reports whether the state changed. Nil answers 503.
	Pause func(sink string, paused bool) (changed bool, err error)
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
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /v1/sinks", s.sinks)
	mux.HandleFunc("GET /v1/events", s.events)
	mux.HandleFunc("GET /v1/events/{id}", s.event)
	mux.HandleFunc("GET /v1/rejections", s.rejections)
	mux.HandleFunc("GET /v1/sinks/{sink}/dlq", s.deadLetters)
	mux.HandleFunc("POST /v1/sinks/{sink}/dlq/retry", s.mutating(s.settleDead))
	mux.HandleFunc("POST /v1/sinks/{sink}/dlq/drop", s.mutating(s.settleDead))
	mux.HandleFunc("POST /v1/sinks/{sink}/pause", s.mutating(s.pause))
	mux.HandleFunc("POST /v1/sinks/{sink}/resume", s.mutating(s.pause))
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
	case errors.Is(err, pipeline.ErrNotSupported):
		code = http.StatusNotImplemented
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = http.StatusServiceUnavailable
	}
	writeError(w, code, err.Error())
}

// writeError writes {"error": msg} on one line, not HTML-escaped (an
// error reads `<token>`, not `\u003ctoken\u003e`).
func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(map[string]string{"error": msg})
}

// writeJSON encodes v before it writes code: an answer that cannot be
// encoded is a 500 that says so, never a 200 with an empty body.
func writeJSON(w http.ResponseWriter, code int, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		writeError(w, http.StatusInternalServerError, "encode the answer: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(b.Bytes())
}

// readyz answers GET /readyz: 200 when every check passed, else 503 with
// the first failure; ?verbose lists every check.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	var checks []ReadyCheck
	if s.o.ReadyChecks != nil {
		checks = s.o.ReadyChecks(r.Context())
	} else {
		c := ReadyCheck{Name: "ready", OK: true}
		if err := s.o.Ready(); err != nil {
			c.OK, c.Error = false, err.Error()
		}
		checks = []ReadyCheck{c}
	}
	ans := Readiness{Status: "ready"}
	code := http.StatusOK
	for _, c := range checks {
		if !c.OK {
			ans.Status, ans.Error, code = "not ready", c.Name+": "+c.Error, http.StatusServiceUnavailable
			if s.o.ReadyChecks == nil {
				ans.Error = c.Error
			}
			break
		}
	}
	if r.URL.Query().Has("verbose") {
		ans.Checks = checks
	}
	writeJSON(w, code, ans)
}
