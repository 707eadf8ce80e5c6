package inspector

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/internal/lograte"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/pipeline/writer"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// SessionTTL is how long a session cookie of the UI is valid after login.
const SessionTTL = 12 * time.Hour

// ScanBudget bounds the time one page of events spends looking for events
// that match a filter the log has no index for (a when expression); the
// page then offers to continue from where it stopped.
const ScanBudget = 100 * time.Millisecond

// ContentSecurityPolicy is sent with every answer of the UI: nothing but
// the UI's own files, no inline script or style, no framing.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Options says where the UI gets its data: the admin API's own options
// (the log, the sinks, retargeting for replays, the token) and the
// daemon's counters and live events.
type Options struct {
	// Admin are the options the admin API runs with: Log, Sinks, Retarget,
	// Token, AllowUnauthenticated, ProgressInterval and Logger are used.
	Admin admin.Options
	// SinkNames, if set, lists the configured sinks cheaply, for the forms'
	// choices; nil: the names come from Admin.Sinks, which counts queues.
	SinkNames func() []string
	// Counts, if set, reads the counters the overview draws rates from.
	Counts func() metrics.Counts
	// Subscribe, if set, feeds the live tail: it returns a subscription to
	// the entries appended from now on, of one source when source is not
	// empty, that counts those it had no room for ([writer.Writer.Subscribe]).
	// Nil: the tail page says it is not available.
	Subscribe func(buf int, source string) *writer.Subscription
}

// UI is the web UI. Its zero value is not usable: create it with [New],
// run its background work with [UI.Run].
type UI struct {
	o     Options
	log   *slog.Logger
	mux   *http.ServeMux
	key   atomic.Pointer[[]byte] // signs sessions; a new one ends them all
	pages map[string]*template.Template

	stop     chan struct{} // closed when Run returns: streams end
	stopOnce sync.Once

	ratesMu sync.Mutex
	samples []sample // one every sampleEvery, the oldest first

	jobsMu sync.Mutex
	jobs   []*job // replays, the newest last
	jobSeq int
	jobCtx context.Context
	cancel context.CancelFunc
	jobsWG sync.WaitGroup

	streams chan struct{} // a slot per open event stream (see maxStreams)

	tailPing time.Duration // how often a live tail pings: tailPingEvery, shorter in tests

	// revoked holds the sessions logged out before they expired, by
	// cookie value, with their expiry: at most maxRevoked of them.
	revokedMu sync.Mutex
	revoked   map[string]time.Time

	// loginLog lets a wrong login write a log line 5 at once, then one a
	// second, like ingest's refusals, saying how many were left out
	// since the last line, so that guessing the token cannot flood the
	// journal.
	loginLog *lograte.Burst
}

// maxStreams bounds the server-sent event streams open at once: live
// tails and replay progress together.
const maxStreams = 16

// New returns the UI. It panics if its embedded templates do not parse
// (a programmer error caught by every test).
func New(o Options) *UI {
	if o.Admin.Logger == nil {
		o.Admin.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Admin.Guesses == nil {
		o.Admin.Guesses = admin.NewGuesses()
	}
	u := &UI{revoked: map[string]time.Time{}, o: o, log: o.Admin.Logger, mux: http.NewServeMux(), stop: make(chan struct{}), streams: make(chan struct{}, maxStreams),
		tailPing: tailPingEvery, loginLog: lograte.NewBurst(5, time.Second)}
	u.rekey()
	u.jobCtx, u.cancel = context.WithCancel(context.Background())
	u.pages = parsePages()
	static, _ := fs.Sub(staticFS, "static")
	fileServer := http.StripPrefix("/ui/static/", http.FileServerFS(static))
	u.mux.Handle("GET /ui/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") { // files only, no listings
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=3600")
		fileServer.ServeHTTP(w, r)
	}))
	u.mux.HandleFunc("GET /ui/login", u.loginPage)
	u.mux.HandleFunc("POST /ui/login", u.login)
	u.mux.HandleFunc("POST /ui/logout", u.authed(u.logout))
	u.mux.HandleFunc("GET /ui/{$}", u.authed(u.overview))
	u.mux.HandleFunc("POST /ui/sinks/{sink}/retry-now", u.authed(u.retryNow))
	u.mux.HandleFunc("GET /ui/events", u.authed(u.events))
	u.mux.HandleFunc("GET /ui/events/{id}", u.authed(u.event))
	u.mux.HandleFunc("POST /ui/events/{id}/replay", u.authed(u.replayOne))
	u.mux.HandleFunc("POST /ui/events/{id}/retry", u.authed(u.retryOne))
	u.mux.HandleFunc("POST /ui/events/{id}/giveup", u.authed(u.giveUpOne))
	u.mux.HandleFunc("GET /ui/dlq", u.authed(u.dlqIndex))
	u.mux.HandleFunc("GET /ui/dlq/{sink}", u.authed(u.dlq))
	u.mux.HandleFunc("POST /ui/dlq/{sink}", u.authed(u.dlqAction))
	u.mux.HandleFunc("GET /ui/refused", u.authed(u.refused))
	u.mux.HandleFunc("GET /ui/replay", u.authed(u.replayPage))
	u.mux.HandleFunc("POST /ui/replay", u.authed(u.replayStart))
	u.mux.HandleFunc("GET /ui/replay/{job}", u.authed(u.replayJob))
	u.mux.HandleFunc("GET /ui/replay/{job}/stream", u.authed(u.replayStream))
	u.mux.HandleFunc("GET /ui/tail", u.authed(u.tailPage))
	u.mux.HandleFunc("GET /ui/tail/stream", u.authed(u.tailStream))
	return u
}

// Run samples the counters for the overview's rates until ctx ends, then
// ends the streams the UI serves and cancels and waits for the replays it
// started. The daemon runs it for as long as it serves.
func (u *UI) Run(ctx context.Context) {
	defer u.jobsWG.Wait()
	defer u.cancel()
	defer u.stopOnce.Do(func() { close(u.stop) })
	u.sample(time.Now())
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			u.sample(now)
		}
	}
}

// ServeHTTP serves the UI with its security headers.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin") // no-referrer would make the browser send "Origin: null" with the forms
	if _, pattern := u.mux.Handler(r); pattern == "" {
		u.fail(w, r, http.StatusNotFound, "There is no such page.")
		return
	}
	u.mux.ServeHTTP(w, r)
}

// session is what a handler knows of the caller.
type session struct {
	csrf  string
	value string // the cookie's value
	// flash is the result of the action that redirected here, shown once
	// (see flash.go); or a note a handler adds to the page it draws.
	flash string
}

const cookieName = "pipelined_session"

// authed wraps h: the caller needs a valid session (with a token, from the
// login form; without one, on a loopback listener, issued at once), and a
// POST needs the session's CSRF token in its form field "csrf".
func (u *UI) authed(h func(http.ResponseWriter, *http.Request, session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if len(u.o.Admin.Token) == 0 && !u.o.Admin.AllowUnauthenticated {
			u.fail(w, r, http.StatusForbidden, "The UI is disabled: no admin token is configured and the admin listener is not on loopback. Set admin.token_env or admin.token_file.")
			return
		}
		value := ""
		if c, err := r.Cookie(cookieName); err == nil && u.validSession(c.Value, time.Now()) {
			value = c.Value
		}
		if value == "" {
			if len(u.o.Admin.Token) > 0 {
				if r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, "/stream") {
					http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
					return
				}
				u.fail(w, r, http.StatusUnauthorized, "Log in first: your session is missing or expired.")
				return
			}
			value = u.newSession(w, r)
		}
		s := session{csrf: u.csrfFor(value), value: value}
		if r.Method == http.MethodGet {
			s.flash = u.takeFlash(w, r, value)
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
			got := r.PostFormValue("csrf")
			if subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
				u.fail(w, r, http.StatusForbidden, "This form is stale or did not come from this page (missing or wrong CSRF token). Reload the page and try again.")
				return
			}
		}
		h(w, r, s)
	}
}

// newSession sets a new session cookie and returns its value: 8 bytes of
// expiry (unix seconds) and 16 random bytes, then a dot and their HMAC.
func (u *UI) newSession(w http.ResponseWriter, r *http.Request) string {
	exp := time.Now().Add(SessionTTL)
	b := binary.BigEndian.AppendUint64(nil, uint64(exp.Unix()))
	nonce := make([]byte, 16)
	rand.Read(nonce)
	b = append(b, nonce...)
	v := base64.RawURLEncoding.EncodeToString(b) + "." + base64.RawURLEncoding.EncodeToString(u.mac("session", b))
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: v, Path: "/ui/", Expires: exp, MaxAge: int(SessionTTL.Seconds()),
		HttpOnly: true, Secure: overHTTPS(r), SameSite: http.SameSiteStrictMode})
	return v
}

// overHTTPS reports whether the browser reached the UI over HTTPS: the
// connection is TLS, or a proxy that terminates TLS in front of the admin
// listener (which speaks plain HTTP) says so, with X-Forwarded-Proto:
// https (Caddy and Traefik send it; nginx with proxy_set_header
// X-Forwarded-Proto $scheme) or Forwarded: proto=https (RFC 7239). The
// first value counts: it is the one the proxy nearest the browser wrote.
// The session cookie is then Secure. The headers are believed from anyone
// because Secure can only restrict: it keeps the browser from sending the
// cookie over plain HTTP, and a browser that did reach the UI over plain
// HTTP drops a Secure cookie (it cannot log in: a visible failure, never
// a leak). A browser page cannot add these headers to a request.
func overHTTPS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	if v := r.Header.Get("X-Forwarded-Proto"); v != "" {
		first, _, _ := strings.Cut(v, ",")
		return strings.EqualFold(strings.TrimSpace(first), "https")
	}
	if v := r.Header.Get("Forwarded"); v != "" {
		first, _, _ := strings.Cut(v, ",")
		for pair := range strings.SplitSeq(first, ";") {
			k, val, _ := strings.Cut(strings.TrimSpace(pair), "=")
			if strings.EqualFold(strings.TrimSpace(k), "proto") {
				return strings.EqualFold(strings.Trim(strings.TrimSpace(val), `"`), "https")
			}
		}
	}
	return false
}

func (u *UI) validSession(v string, now time.Time) bool {
	p, m, ok := strings.Cut(v, ".")
	if !ok {
		return false
	}
	b, err1 := base64.RawURLEncoding.DecodeString(p)
	mac, err2 := base64.RawURLEncoding.DecodeString(m)
	if err1 != nil || err2 != nil || len(b) != 24 || !hmac.Equal(mac, u.mac("session", b)) {
		return false
	}
	if now.Unix() >= int64(binary.BigEndian.Uint64(b[:8])) {
		return false
	}
	u.revokedMu.Lock()
	_, out := u.revoked[v]
	u.revokedMu.Unlock()
	return !out
}

// rekey draws a new key for sessions: those signed with the old one no
// longer open the UI.
func (u *UI) rekey() {
	key := make([]byte, 32)
	rand.Read(key)
	u.key.Store(&key)
}

// maxRevoked bounds the sessions remembered as logged out; past it the
// UI draws a new key, which ends every session (everyone logs in again).
const maxRevoked = 10000

// revoke ends the session with cookie value v before it expires: a copy
// of the cookie no longer opens the UI.
func (u *UI) revoke(v string, now time.Time) {
	u.revokedMu.Lock()
	defer u.revokedMu.Unlock()
	for s, exp := range u.revoked {
		if !now.Before(exp) {
			delete(u.revoked, s)
		}
	}
	if len(u.revoked) >= maxRevoked {
		u.rekey()
		clear(u.revoked)
		return
	}
	u.revoked[v] = now.Add(SessionTTL)
}

func (u *UI) csrfFor(session string) string {
	return base64.RawURLEncoding.EncodeToString(u.mac("csrf", []byte(session)))
}

func (u *UI) mac(purpose string, b []byte) []byte {
	h := hmac.New(sha256.New, *u.key.Load())
	h.Write([]byte(purpose))
	h.Write([]byte{0})
	h.Write(b)
	return h.Sum(nil)
}

func (u *UI) loginPage(w http.ResponseWriter, r *http.Request) {
	if len(u.o.Admin.Token) == 0 {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return
	}
	u.render(w, r, http.StatusOK, "login", page{Title: "Log in", Data: loginData{Next: safeNext(r.URL.Query().Get("next"))}})
}

type loginData struct {
	Next  string
	Error string
}

// login exchanges the admin token for a session cookie. It needs no CSRF
// token (there is no session yet); the admin server's Origin check
// refuses a login form posted from another site.
func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	if len(u.o.Admin.Token) == 0 {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	next := safeNext(r.PostFormValue("next"))
	client := u.o.Admin.Client(r)
	if wait := u.o.Admin.GuessWait(client); wait > 0 {
		admin.TooManyGuesses(w, wait)
		u.render(w, r, http.StatusTooManyRequests, "login", page{Title: "Log in", Data: loginData{Next: next,
			Error: fmt.Sprintf("Too many wrong tokens from your address: try again in %v.", wait.Round(time.Second))}})
		return
	}
	if !admin.TokenMatches(r.PostFormValue("token"), u.o.Admin.Token) {
		u.o.Admin.Guesses.Wrong(client)
		if ok, n := u.loginLog.AllowAt(time.Now()); ok {
			u.log.Warn("ui login refused: wrong token", "remote", r.RemoteAddr, "suppressed", n)
		}
		u.render(w, r, http.StatusUnauthorized, "login", page{Title: "Log in", Data: loginData{Next: next, Error: "That is not the admin token."}})
		return
	}
	u.newSession(w, r)
	u.log.Info("ui login", "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (u *UI) logout(w http.ResponseWriter, r *http.Request, s session) {
	u.revoke(s.value, time.Now())
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/ui/", MaxAge: -1, HttpOnly: true, Secure: overHTTPS(r), SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// safeNext keeps a redirect after login on the UI.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/ui/"
	}
	return next
}

// page is what every template gets.
type page struct {
	Title string
	Nav   string // the nav entry that is current
	CSRF  string
	// Authed shows the logout button (a token is configured).
	Authed bool
	Flash  string
	Error  string
	Data   any
}

// render executes the named page into a buffer first, so that a template
// error is a 500 and never half a page.
func (u *UI) render(w http.ResponseWriter, r *http.Request, code int, name string, p page) {
	t := u.pages[name]
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, "layout", p); err != nil {
		u.log.Error("ui template failed", "page", name, "err", err)
		http.Error(w, "the page could not be drawn: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(b.Bytes())
}

// fail answers with an error page.
func (u *UI) fail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	u.render(w, r, code, "error", page{Title: http.StatusText(code), Error: msg})
}

// pg fills the common fields of a page, the session's flash among them.
func (u *UI) pg(s session, nav, title string, data any) page {
	return page{Title: title, Nav: nav, CSRF: s.csrf, Authed: len(u.o.Admin.Token) > 0, Flash: s.flash, Data: data}
}
