package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"net/url"
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
	// Reload applies the configuration file again (POST /v1/reload) and
	// returns the keys it changed that take effect only at a restart (the
	// daemon keeps their running values) and those that the file cannot
	// change (see [ReloadResult]); an error means the new configuration was
	// refused and the old one runs. The handler sets Status.
	Reload func() (ReloadResult, error)
	// Retarget, if set, says what a replayed event is delivered to sink
	// with: the route and payload (nil: the body) its routes make of it
	// now. Nil means route "replay" and the event's body.
	Retarget func(ev pipeline.Event, sink string) (route string, payload []byte, err error)
	// Pause pauses (paused true) or resumes a sink's delivery, keeping
	// the state across restarts, for POST /v1/sinks/{sink}/pause and
	// /resume; it reports whether the state changed. Nil answers 503.
	Pause func(sink string, paused bool) (changed bool, err error)
	// ProbeNow, if set, makes the open circuit breaker of sink probe at
	// once, for POST /v1/sinks/{sink}/retry-now, and reports whether the
	// breaker was open. Nil: retry-now only makes retries due.
	ProbeNow func(sink string) (probing bool)
	// OnDropDead, if set, is told which dead letters of a sink an
	// operator dropped, after the log removed them, so that a key held
	// behind one (delivery.order_on_dead = "block") goes on.
	OnDropDead func(sink string, seqs []uint64)
	// GiveUps returns the entries of sink that an operator gave up on,
	// for POST /v1/sinks/{sink}/dlq/add, or nil when the sink has no
	// dispatcher (a reload removed it). Nil answers 501.
	GiveUps func(sink string) GiveUpSet
	// LockRemoved, if set, locks the queue of sink, which a reload
	// removed, against a reload that brings the sink back, for one page
	// of [GiveUpAll]: it returns once it holds the lock, and unlock ends
	// it. GiveUpAll asks [Options.GiveUps] whether the sink is still
	// removed once it holds the lock, and moves the page under it; a
	// reload that brings the sink back marks it configured, then waits
	// for the page that holds the lock before its dispatcher starts. So a
	// page never overlaps a dispatcher of its queue, and a reload waits
	// for one page at most. Nil: nothing keeps a reload from overlapping a
	// page (a test's log that no dispatcher reads).
	LockRemoved func(sink string) (unlock func())
	// Token is the bearer token that every call under /v1/ and /debug/
	// must carry. Empty: those calls are refused with 403, unless
	// AllowUnauthenticated. /healthz, /readyz and /metrics are always open.
	Token []byte
	// AllowUnauthenticated lets calls under /v1/ and /debug/ through
	// without a token when Token is empty. The daemon sets it when the
	// admin listener is bound to a loopback address only.
	AllowUnauthenticated bool
	// Pprof serves Go's profiler under /debug/pprof/ (behind the token
	// like /v1/). False: those paths answer 404.
	Pprof bool
	// Hosts are the names the Host header of a call under /v1/ or /debug/
	// may carry besides loopback names and addresses and the address the
	// connection arrived on: the host of the admin listener. Any other
	// Host is refused with 403 (DNS rebinding).
	Hosts []string
	// Logger receives one line per mutating call. Default: discard.
	Logger *slog.Logger
	// ProgressInterval is how often a replay reports progress. Zero
	// means 500ms.
	ProgressInterval time.Duration
	// Metrics, if set, serves GET /metrics (Prometheus).
	Metrics http.Handler
	// UI, if set, is the web UI ([admin] ui): it serves everything under
	// /ui/, and GET / redirects there. Its calls pass the Host and Origin
	// checks of the API; the UI authenticates them itself (a session
	// cookie from the token, and a CSRF token on every POST). Nil: /ui/
	// answers 404 like any unknown path.
	UI http.Handler
	// Guesses limits wrong tokens per client address; the UI's login
	// shares it. Nil: Handler makes one of its own.
	Guesses *Guesses
	// TrustedProxies are the reverse proxies whose X-Forwarded-For is
	// believed for that address (see [Options.Client]).
	TrustedProxies []netip.Prefix
}

// Limits of the list routes.
const (
	defaultLimit = 50
	maxLimit     = 1000
	// replayPage is how many events a replay reads and requeues at a
	// time: each with its body, up to max_body.
	replayPage = 64
	// listPages bounds the Log.Events calls of one GET /v1/events, so a
	// selective filter answers in bounded time; next tells where to go on.
	listPages = 20
	// whenChunk and whenBudget bound a GET /v1/events with a when=: the
	// log is read whenChunk events at a time, and no new chunk is read
	// after whenBudget (each evaluation is bounded by the expression
	// budget, so one chunk costs at most whenChunk of those); next tells
	// where to go on.
	whenChunk  = 16
	whenBudget = time.Second
	// pageBytes bounds the bodies and headers of one GET /v1/events
	// answer (at least one event is answered): bodies are the senders',
	// up to max_body each, so limit=1000 could otherwise hold a GiB. The
	// log is read firstChunk events at a time at first, then as many as
	// the sizes seen so far say fit; next tells where to go on.
	pageBytes  = 4 << 20
	firstChunk = 16
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
	if o.Guesses == nil {
		o.Guesses = NewGuesses()
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
	mux.HandleFunc("POST /v1/sinks/{sink}/dlq/retry", s.settleDead)
	mux.HandleFunc("POST /v1/sinks/{sink}/dlq/drop", s.settleDead)
	mux.HandleFunc("POST /v1/sinks/{sink}/dlq/add", s.giveUp)
	mux.HandleFunc("POST /v1/sinks/{sink}/pause", s.pause)
	mux.HandleFunc("POST /v1/sinks/{sink}/resume", s.pause)
	mux.HandleFunc("POST /v1/sinks/{sink}/retry-now", s.retryNow)
	mux.HandleFunc("POST /v1/replay", s.replay)
	mux.HandleFunc("POST /v1/reload", s.reload)
	if o.Metrics != nil {
		mux.Handle("GET /metrics", o.Metrics)
	}
	if o.UI != nil {
		mux.Handle("/ui/", o.UI)
		mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	}
	// Go's profiler, for "why is it slow", only when [admin] pprof =
	// true: a profile shows the daemon's memory, secrets included.
	if o.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return s
}

// ServeHTTP serves the mux, turning its own 404 and 405 answers into JSON.
// Calls under /v1/ and /debug/ pass [server.guard] first, whatever the
// route, so that an unknown path tells a stranger nothing either.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.o.UI != nil && (r.URL.Path == "/" || r.URL.Path == "/ui" || strings.HasPrefix(r.URL.Path, "/ui/")) {
		if s.browserGuard(w, r) {
			s.mux.ServeHTTP(w, r)
		}
		return
	}
	if protected(r.URL.Path) && !s.guard(w, r) {
		return
	}
	if _, pattern := s.mux.Handler(r); pattern == "" {
		w = &jsonError{ResponseWriter: w}
	}
	s.mux.ServeHTTP(w, r)
}

// protected reports whether path is one that needs the token: everything
// but /healthz, /readyz and /metrics.
func protected(path string) bool {
	switch path {
	case "/healthz", "/readyz", "/metrics":
		return false
	}
	return true
}

// guard refuses, and answers for, a call to a protected path that a
// browser page of another site could have made (a Host that is not this
// listener's, a foreign Origin, a POST that is not JSON) or that lacks the
// token. It reports whether the call may go on. Every answer to such a
// call says Cache-Control: no-store.
func (s *server) guard(w http.ResponseWriter, r *http.Request) bool {
	// Answers carry events' bodies and headers: no cache keeps them (a
	// proxy in front of the admin listener, a browser's disk cache).
	w.Header().Set("Cache-Control", "no-store")
	if !s.browserGuard(w, r) {
		return false
	}
	if r.Method == http.MethodPost {
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, "send Content-Type: application/json with every POST")
			return false
		}
	}
	if len(s.o.Token) == 0 {
		if !s.o.AllowUnauthenticated {
			writeError(w, http.StatusForbidden, "the admin API is disabled: no admin token is configured and the listener is not on loopback; set admin.token_env or admin.token_file")
			return false
		}
		return true
	}
	client := s.o.Client(r)
	if wait := s.o.GuessWait(client); wait > 0 {
		TooManyGuesses(w, wait)
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("too many wrong admin tokens from this address: try again in %v", wait.Round(time.Second)))
		return false
	}
	if authz := r.Header.Get("Authorization"); !tokenMatches(authz, s.o.Token) {
		if authz != "" { // a guess; a call without a token is not
			s.o.Guesses.Wrong(client)
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="pipelined admin"`)
		writeError(w, http.StatusUnauthorized, "missing or wrong admin token: send Authorization: Bearer <token>")
		return false
	}
	return true
}

// browserGuard refuses, and answers for, a call whose Host is not this
// listener's or whose Origin is another site's; it reports whether the
// call may go on. The UI's calls pass it and then authenticate themselves.
func (s *server) browserGuard(w http.ResponseWriter, r *http.Request) bool {
	if !s.hostAllowed(r) {
		writeError(w, http.StatusForbidden, "host "+strconv.Quote(r.Host)+" is not this admin listener: call it by its address (or localhost)")
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r.Host) {
		writeError(w, http.StatusForbidden, "cross-origin call from "+strconv.Quote(o)+" refused: the admin API is not for browser pages of other sites")
		return false
	}
	return true
}

// TokenMatches reports whether secret is token, in time that tells nothing
// of either (it compares SHA-256 digests). The UI's login uses it.
func TokenMatches(secret string, token []byte) bool {
	g := sha256.Sum256([]byte(strings.TrimSpace(secret)))
	t := sha256.Sum256(token)
	return subtle.ConstantTimeCompare(g[:], t[:]) == 1
}

// tokenMatches reports whether the Authorization header value carries
// token with the Bearer scheme (in any case, RFC 9110 11.1). It compares
// SHA-256 digests, so that the time taken tells nothing of the token's
// length.
func tokenMatches(authorization string, token []byte) bool {
	scheme, got, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	g := sha256.Sum256([]byte(strings.TrimSpace(got)))
	t := sha256.Sum256(token)
	return subtle.ConstantTimeCompare(g[:], t[:]) == 1
}

// hostAllowed reports whether r's Host names this listener: a loopback
// name or address, the address the connection arrived on, or one of
// [Options.Hosts].
func (s *server) hostAllowed(r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if host == "" {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.IsLoopback() {
			return true
		}
		if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			if ap, err := netip.ParseAddrPort(la.String()); err == nil && ap.Addr().Unmap() == a.Unmap() {
				return true
			}
		}
	}
	for _, h := range s.o.Hosts {
		if strings.EqualFold(host, h) {
			return true
		}
	}
	return false
}

// sameOrigin reports whether the Origin header origin is that of a page
// served by host (the request's Host) itself.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && strings.EqualFold(u.Host, host)
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

// checkSink answers 404 and returns false when sink is not configured.
func (s *server) checkSink(w http.ResponseWriter, r *http.Request, sink string) bool {
	_, ok := s.findSink(w, r, sink)
	return ok
}

// findSink is checkSink that also returns the sink's status (the zero
// SinkStatus when [Options.Sinks] is nil).
func (s *server) findSink(w http.ResponseWriter, r *http.Request, sink string) (SinkStatus, bool) {
	if sink == "" {
		writeError(w, http.StatusBadRequest, "sink is required")
		return SinkStatus{}, false
	}
	if s.o.Sinks == nil {
		return SinkStatus{}, true
	}
	sinks, err := s.o.Sinks(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return SinkStatus{}, false
	}
	names := make([]string, len(sinks))
	for i, st := range sinks {
		if st.Name == sink {
			return st, true
		}
		names[i] = st.Name
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("unknown sink %q (sinks: %s)", sink, strings.Join(names, ", ")))
	return SinkStatus{}, false
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
	// Who asked; the daemon logs what came of it.
	s.log.Info("reload requested", "remote", r.RemoteAddr)
	res, err := s.o.Reload()
	if err != nil {
		// The daemon's errors begin "reload: ", which this says already.
		writeError(w, http.StatusConflict, "reload refused, the running configuration is unchanged: "+strings.TrimPrefix(err.Error(), "reload: "))
		return
	}
	res.Status = "reloaded"
	writeJSON(w, http.StatusOK, res)
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
	writeError(w, logStatus(err), err.Error())
}

// logStatus is the HTTP status that answers an error of the log.
func logStatus(err error) int {
	switch {
	case errors.Is(err, pipeline.ErrBadCursor):
		return http.StatusBadRequest
	case errors.Is(err, pipeline.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, pipeline.ErrClosed):
		return http.StatusServiceUnavailable
	case errors.Is(err, pipeline.ErrNotSupported):
		return http.StatusNotImplemented
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
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
