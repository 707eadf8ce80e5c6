package inspector_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/inspector"
)

const hostile = `<script>window.pwned=1</script>"><img src=x onerror=alert(1)>`

// serve runs the admin API with the UI on a memlog holding one hostile
// event routed to sink "crm", and returns its URL.
func serve(t *testing.T, token string, loopback bool) (string, string) {
	t.Helper()
	db := memlog.New()
	ctx := context.Background()
	ap, err := db.Append(ctx, []pipeline.Entry{{
		Event:   pipeline.Event{ID: "ev-1", Source: "callkaro", ReceivedAt: time.Now().UTC(), Body: []byte(`{"note":` + jsonString(hostile) + `}`), Headers: map[string]string{"x-evil": hostile}},
		Targets: []pipeline.Target{{Sink: "crm", Route: "all"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ao := admin.Options{
		Log: db,
		Sinks: func(context.Context) ([]admin.SinkStatus, error) {
			return []admin.SinkStatus{{Name: "crm", Plugin: "running"}}, nil
		},
		Token:                []byte(token),
		AllowUnauthenticated: token == "" && loopback,
	}
	ao.UI = inspector.New(inspector.Options{Admin: ao})
	srv := httptest.NewServer(admin.Handler(ao))
	t.Cleanup(srv.Close)
	return srv.URL, ap[0].ID
}

func jsonString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func client(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func TestLoginSessionAndCSRF(t *testing.T) {
	base, id := serve(t, "s3cret", false)
	c := client(t)
	resp, _ := get(t, c, base+"/")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET / = %d to %q, want 302 to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = get(t, c, base+"/ui/events/"+id)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/ui/login?next=") {
		t.Fatalf("GET an event without a session = %d to %q, want 303 to the login", resp.StatusCode, resp.Header.Get("Location"))
	}
	post := func(path string, form url.Values) *http.Response {
		resp, err := c.PostForm(base+path, form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := post("/ui/login", url.Values{"token": {"wrong"}}); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("login with a wrong token = %d, want 401", r.StatusCode)
	}
	r := post("/ui/login", url.Values{"token": {"s3cret"}, "next": {"//evil.example/"}})
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/" {
		t.Errorf("login = %d to %q, want 303 to /ui/ (a next off the UI is ignored)", r.StatusCode, r.Header.Get("Location"))
	}
	var session *http.Cookie
	for _, ck := range r.Cookies() {
		if ck.Name == "pipelined_session" {
			session = ck
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.MaxAge <= 0 {
		t.Fatalf("session cookie = %+v, want HttpOnly, SameSite=Strict, expiring", session)
	}
	resp, page := get(t, c, base+"/ui/events/"+id)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the event with a session = %d", resp.StatusCode)
	}
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("the event page has no CSRF token in its forms")
	}
	for _, tc := range []struct {
		name string
		form url.Values
		want int
	}{
		{"no csrf", url.Values{"sink": {"crm"}}, http.StatusForbidden},
		{"forged csrf", url.Values{"sink": {"crm"}, "csrf": {"AAAA"}}, http.StatusForbidden},
		{"csrf", url.Values{"sink": {"crm"}, "csrf": {m[1]}}, http.StatusSeeOther},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := post("/ui/events/"+id+"/replay", tc.form); r.StatusCode != tc.want {
				t.Errorf("POST replay (%s) = %d, want %d", tc.name, r.StatusCode, tc.want)
			}
		})
	}
	// A form posted from another site's page is refused by the Origin check.
	req, _ := http.NewRequest(http.MethodPost, base+"/ui/login", strings.NewReader("token=s3cret"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != http.StatusForbidden {
		t.Errorf("a cross-origin login = %v %v, want 403", r.StatusCode, err)
	}
}

func TestWithoutTokenOnlyOnLoopback(t *testing.T) {
	for _, tc := range []struct {
		name     string
		loopback bool
		want     int
	}{
		{"loopback", true, http.StatusOK},
		{"not loopback", false, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, _ := serve(t, "", tc.loopback)
			resp, _ := get(t, client(t), base+"/ui/")
			if resp.StatusCode != tc.want {
				t.Errorf("GET /ui/ = %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

// TestHostileContentIsText checks, without a browser, that what an event
// holds reaches the page only escaped, under a strict CSP.
func TestHostileContentIsText(t *testing.T) {
	base, id := serve(t, "", true)
	for _, path := range []string{"/ui/events/" + id, "/ui/events", "/ui/dlq/crm", "/ui/events?when=" + url.QueryEscape(`body.note == "`+strings.ReplaceAll(hostile, `"`, `\"`)+`"`)} {
		resp, page := get(t, client(t), base+path)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d", path, resp.StatusCode)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: CSP %q", path, csp)
		}
		if strings.Contains(page, "<script>window") || strings.Contains(page, "<img src=x") {
			t.Errorf("GET %s: the payload is in the page unescaped", path)
		}
		if strings.Count(page, "<script") != 1 {
			t.Errorf("GET %s: %d script elements, want only app.js", path, strings.Count(page, "<script"))
		}
	}
	_, page := get(t, client(t), base+"/ui/events/"+id)
	if !strings.Contains(page, "&lt;script&gt;window.pwned=1&lt;/script&gt;") {
		t.Error("the event page does not show the body's <script> as text")
	}
}

// TestHugeDedupKeyIsClipped: a sender controls the dedup key (a body
// field, up to max_body); the events list shows its start, not megabytes
// per row, and the event page at most a few KiB of it.
func TestHugeDedupKeyIsClipped(t *testing.T) {
	db := memlog.New()
	key := "KEY-START" + strings.Repeat("x", 500<<10)
	var es []pipeline.Entry
	for i := range 20 {
		es = append(es, pipeline.Entry{Event: pipeline.Event{ID: "ev-" + strings.Repeat("0", i), Source: "s", DedupKey: key, ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)}})
	}
	if _, err := db.Append(context.Background(), es); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(inspector.New(inspector.Options{Admin: admin.Options{Log: db, AllowUnauthenticated: true}}))
	defer srv.Close()
	c := client(t)
	for _, tc := range []struct {
		path string
		max  int
	}{
		{"/ui/events", 64 << 10},
		{"/ui/events/ev-", 64 << 10},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, page := get(t, c, srv.URL+tc.path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s = %d", tc.path, resp.StatusCode)
			}
			if !strings.Contains(page, "KEY-START") {
				t.Errorf("GET %s does not show the dedup key's start", tc.path)
			}
			if len(page) > tc.max {
				t.Errorf("GET %s = %d bytes with a %d-byte dedup key, want at most %d", tc.path, len(page), len(key), tc.max)
			}
		})
	}
}

// TestWrongLoginsDoNotFloodTheLog: each wrong token at the login form is
// refused, but a flood of them writes a handful of log lines, the next
// one saying how many it left out.
func TestWrongLoginsDoNotFloodTheLog(t *testing.T) {
	var buf testlog.Buffer
	ao := admin.Options{Log: memlog.New(), Token: []byte("s3cret"), Logger: slog.New(slog.NewTextHandler(&buf, nil))}
	srv := httptest.NewServer(inspector.New(inspector.Options{Admin: ao}))
	defer srv.Close()
	for i := range 200 {
		resp, err := http.PostForm(srv.URL+"/ui/login", url.Values{"token": {"guess"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := http.StatusUnauthorized
		if i >= admin.GuessBurst {
			want = http.StatusTooManyRequests // see TestTokenGuessesAreLimited
		}
		if resp.StatusCode != want {
			t.Fatalf("wrong login %d = %d, want %d", i, resp.StatusCode, want)
		}
	}
	if n := strings.Count(buf.String(), "ui login refused"); n == 0 || n > 10 {
		t.Errorf("200 wrong logins wrote %d log lines, want between 1 and 10:\n%s", n, buf.String())
	}
}

// TestBadCursorIsTheCallersError: an after= the log did not hand out is a
// 400 saying so, not a 500.
func TestBadCursorIsTheCallersError(t *testing.T) {
	base, _ := serve(t, "", true)
	for _, after := range []string{"garbage", "99999999999999999999999"} {
		resp, page := get(t, client(t), base+"/ui/events?after="+after)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, "cursor") {
			t.Errorf("GET /ui/events?after=%s = %d, want 400 naming the cursor", after, resp.StatusCode)
		}
	}
}

// TestTokenGuessesAreLimited: after GuessBurst wrong tokens from one
// address, by the API's bearer token or the UI's login, that address is
// answered 429 with Retry-After and its tokens are not compared, the
// right one included, on both doors; another address is not held back.
func TestTokenGuessesAreLimited(t *testing.T) {
	ao := admin.Options{Log: memlog.New(), Token: []byte("s3cret"), Guesses: admin.NewGuesses()}
	ao.UI = inspector.New(inspector.Options{Admin: ao})
	srv := httptest.NewServer(admin.Handler(ao))
	defer srv.Close()
	api := func(token string) *http.Response { return eventsWithToken(t, srv.URL, token) }
	login := func(token string) *http.Response {
		resp, err := client(t).PostForm(srv.URL+"/ui/login", url.Values{"token": {token}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := api("s3cret"); r.StatusCode != http.StatusOK {
		t.Fatalf("premise: the API with the right token = %d, want 200", r.StatusCode)
	}
	for i := range admin.GuessBurst {
		door := api
		if i%2 == 1 {
			door = login
		}
		r := door("guess")
		if r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong token %d = %d, want 401", i, r.StatusCode)
		}
	}
	for name, r := range map[string]*http.Response{"API": api("s3cret"), "UI login": login("s3cret")} {
		if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
			t.Errorf("%s with the right token after %d wrong ones = %d (Retry-After %q), want 429 with Retry-After",
				name, admin.GuessBurst, r.StatusCode, r.Header.Get("Retry-After"))
		}
	}
	if w := ao.Guesses.Wait("192.0.2.7:4321"); w != 0 {
		t.Errorf("another address must wait %v, want 0", w)
	}
}

// TestStrongTokenIsNotLockedOut: with a token of StrongToken bytes, wrong
// guesses from the operator's address (a local user's, on loopback) do not
// hold back the right token, on either door; wrong ones are still refused.
func TestStrongTokenIsNotLockedOut(t *testing.T) {
	strong := strings.Repeat("0123456789abcdef", 4) // as openssl rand -hex 32 prints
	ao := admin.Options{Log: memlog.New(), Token: []byte(strong), Guesses: admin.NewGuesses()}
	ao.UI = inspector.New(inspector.Options{Admin: ao})
	srv := httptest.NewServer(admin.Handler(ao))
	defer srv.Close()
	for i := range 2 * admin.GuessBurst {
		if r := eventsWithToken(t, srv.URL, "guess"); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong token %d = %d, want 401", i, r.StatusCode)
		}
	}
	if w := ao.Guesses.Wait("127.0.0.1:1"); w == 0 {
		t.Fatal("premise: the address is not held back after the wrong tokens")
	}
	if r := eventsWithToken(t, srv.URL, strong); r.StatusCode != http.StatusOK {
		t.Errorf("the API with the right token after %d wrong ones = %d, want 200", 2*admin.GuessBurst, r.StatusCode)
	}
	resp, err := client(t).PostForm(srv.URL+"/ui/login", url.Values{"token": {strong}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusUnauthorized {
		t.Errorf("the UI login with the right token after the wrong ones = %d, want it let in", resp.StatusCode)
	}
}

// TestLogoutEndsTheSession: after a logout, a copy of the session cookie
// (kept by another browser, or stolen) no longer opens the UI.
func TestLogoutEndsTheSession(t *testing.T) {
	base, id := serve(t, "s3cret", false)
	c := client(t)
	resp, err := c.PostForm(base+"/ui/login", url.Values{"token": {"s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var copied *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "pipelined_session" {
			copied = ck
		}
	}
	if copied == nil {
		t.Fatalf("login = %d without a session cookie", resp.StatusCode)
	}
	withCopy := func() int {
		req, _ := http.NewRequest(http.MethodGet, base+"/ui/events/"+id, nil)
		req.AddCookie(copied)
		resp, err := client(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := withCopy(); code != http.StatusOK {
		t.Fatalf("premise: the copied cookie opens the event page: %d, want 200", code)
	}
	_, page := get(t, c, base+"/ui/events/"+id)
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("the event page has no CSRF token")
	}
	resp, err = c.PostForm(base+"/ui/logout", url.Values{"csrf": {m[1]}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout = %d, want 303", resp.StatusCode)
	}
	if code := withCopy(); code != http.StatusSeeOther {
		t.Errorf("the copied cookie after logout = %d, want 303 to the login", code)
	}
}

// TestStaticServesFilesOnly: the embedded files are served, their
// directory is not listed.
func TestStaticServesFilesOnly(t *testing.T) {
	base, _ := serve(t, "s3cret", false)
	for path, want := range map[string]int{"/ui/static/app.css": http.StatusOK, "/ui/static/": http.StatusNotFound} {
		resp, body := get(t, client(t), base+path)
		if resp.StatusCode != want || strings.Contains(body, "app.js") && want != http.StatusOK {
			t.Errorf("GET %s = %d %.80q, want %d", path, resp.StatusCode, body, want)
		}
	}
}

// TestDropAllDeadTellsOnDropDead drops every dead letter of a sink from
// the UI: OnDropDead is told which seqs went, as from the admin API, so
// that the keys an order_key holds behind them are released.
func TestDropAllDeadTellsOnDropDead(t *testing.T) {
	db := memlog.New()
	ctx := context.Background()
	if _, err := db.Append(ctx, []pipeline.Entry{{
		Event:   pipeline.Event{ID: "ev-1", Source: "s", ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)},
		Targets: []pipeline.Target{{Sink: "crm", Route: "all", Err: "boom"}},
	}}); err != nil {
		t.Fatal(err)
	}
	var told []uint64
	ao := admin.Options{
		Log: db,
		Sinks: func(context.Context) ([]admin.SinkStatus, error) {
			return []admin.SinkStatus{{Name: "crm", Plugin: "running"}}, nil
		},
		Token:      []byte("s3cret"),
		OnDropDead: func(sink string, seqs []uint64) { told = append(told, seqs...) },
	}
	ao.UI = inspector.New(inspector.Options{Admin: ao})
	srv := httptest.NewServer(admin.Handler(ao))
	t.Cleanup(srv.Close)
	c := client(t)
	if resp, err := c.PostForm(srv.URL+"/ui/login", url.Values{"token": {"s3cret"}}); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	_, page := get(t, c, srv.URL+"/ui/dlq/crm")
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("the dead-letter page has no CSRF token")
	}
	act(t, c, srv.URL, "/ui/dlq/crm", url.Values{"csrf": {m[1]}, "action": {"drop"}, "all": {"1"}, "confirm": {"yes"}}, "/ui/dlq/crm")
	if dls, _ := db.Queue("crm").DeadLetters(ctx, 0, 10); len(dls) != 0 {
		t.Errorf("%d dead letters left after drop all, want 0", len(dls))
	}
	if len(told) != 1 {
		t.Errorf("OnDropDead told seqs %v, want the one dropped", told)
	}
}

// TestSessionCookieSecureBehindTLSProxy: the admin listener speaks plain
// HTTP, so behind a proxy that terminates TLS the session cookie is Secure
// when the proxy says the browser came over HTTPS (X-Forwarded-Proto, or
// Forwarded's proto), at login, without a token on loopback, and at logout;
// without such a header it is not (a browser on plain HTTP would drop it).
func TestSessionCookieSecureBehindTLSProxy(t *testing.T) {
	sessionCookie := func(t *testing.T, resp *http.Response) *http.Cookie {
		t.Helper()
		for _, ck := range resp.Cookies() {
			if ck.Name == "pipelined_session" {
				return ck
			}
		}
		t.Fatalf("answer %d sets no session cookie (premise)", resp.StatusCode)
		return nil
	}
	do := func(t *testing.T, req *http.Request, h http.Header) *http.Response {
		t.Helper()
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := client(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	withToken, _ := serve(t, "s3cret", false)
	loopback, _ := serve(t, "", true)
	for _, tc := range []struct {
		name   string
		header http.Header
		secure bool
	}{
		{"plain HTTP", nil, false},
		{"X-Forwarded-Proto https", http.Header{"X-Forwarded-Proto": {"https"}}, true},
		{"X-Forwarded-Proto HTTPS, then http", http.Header{"X-Forwarded-Proto": {"HTTPS, http"}}, true},
		{"X-Forwarded-Proto http", http.Header{"X-Forwarded-Proto": {"http"}}, false},
		{"X-Forwarded-Proto http, then https", http.Header{"X-Forwarded-Proto": {"http, https"}}, false},
		{"Forwarded proto=https", http.Header{"Forwarded": {`for=192.0.2.60;proto=https;by=203.0.113.43`}}, true},
		{"Forwarded quoted", http.Header{"Forwarded": {`for="[2001:db8::1]";proto="https"`}}, true},
		{"Forwarded proto=http", http.Header{"Forwarded": {"proto=http, proto=https"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, withToken+"/ui/login", strings.NewReader("token=s3cret"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp := do(t, req, tc.header)
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("login = %d, want 303 (premise)", resp.StatusCode)
			}
			login := sessionCookie(t, resp)
			if login.Secure != tc.secure {
				t.Errorf("login's cookie Secure = %v, want %v", login.Secure, tc.secure)
			}

			req, _ = http.NewRequest(http.MethodGet, loopback+"/ui/", nil)
			if ck := sessionCookie(t, do(t, req, tc.header)); ck.Secure != tc.secure {
				t.Errorf("cookie issued without a token on loopback: Secure = %v, want %v", ck.Secure, tc.secure)
			}

			resp, page := getWith(t, withToken+"/ui/", login)
			m := csrfRE.FindStringSubmatch(page)
			if resp.StatusCode != http.StatusOK || m == nil {
				t.Fatalf("GET /ui/ with the login's cookie = %d, with a CSRF token %v; want 200 with one (premise: the logout form)", resp.StatusCode, m != nil)
			}
			req, _ = http.NewRequest(http.MethodPost, withToken+"/ui/logout", strings.NewReader(url.Values{"csrf": {m[1]}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.AddCookie(login)
			resp = do(t, req, tc.header)
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("logout = %d, want 303 (premise)", resp.StatusCode)
			}
			if ck := sessionCookie(t, resp); ck.MaxAge >= 0 || ck.Secure != tc.secure {
				t.Errorf("logout's cookie = %+v, want it expired with Secure = %v", ck, tc.secure)
			}
		})
	}
}

// getWith GETs u with cookie ck and returns the answer and its body.
func getWith(t *testing.T, u string, ck *http.Cookie) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.AddCookie(ck)
	resp, err := client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// TestLoginThroughATLSProxy puts a real reverse proxy that terminates TLS
// (net/http/httputil, setting X-Forwarded-Proto as Caddy and Traefik do)
// in front of the admin listener and logs in through it, as README says
// it works: reached under a loopback address with the browser's Host
// passed on, the login succeeds and its cookie is Secure; a proxy that puts
// the listener's address in Host (nginx's default) fails the Origin check,
// and under another name the Host check refuses the login.
func TestLoginThroughATLSProxy(t *testing.T) {
	base, _ := serve(t, "s3cret", false)
	target, _ := url.Parse(base)
	proxy := func(keepHost bool) *httptest.Server {
		srv := httptest.NewTLSServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.SetXForwarded()
			if keepHost {
				r.Out.Host = r.In.Host
			}
		}})
		t.Cleanup(srv.Close)
		return srv
	}
	for _, tc := range []struct {
		name     string
		keepHost bool
		host     string // the name the browser reaches the proxy under; "": its loopback address
		status   int
		refusal  string // a part of a 403's answer: which check refused
	}{
		{"loopback address, Host passed on", true, "", http.StatusSeeOther, ""},
		{"loopback address, Host rewritten", false, "", http.StatusForbidden, "cross-origin call"},
		{"another name, Host passed on", true, "example.com", http.StatusForbidden, "is not this admin listener"},
		{"another name, Host rewritten", false, "example.com", http.StatusForbidden, "cross-origin call"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := proxy(tc.keepHost)
			u, _ := url.Parse(srv.URL)
			host := u.Host
			if tc.host != "" {
				host = tc.host + ":" + u.Port() // httptest's certificate covers example.com
			}
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/ui/login", strings.NewReader("token=s3cret"))
			req.Host = host
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", "https://"+host) // a browser's form POST says where it came from
			c := srv.Client()
			c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.refusal) {
				t.Fatalf("login through the proxy = %d %s, want %d %s", resp.StatusCode, body, tc.status, tc.refusal)
			}
			if tc.status != http.StatusSeeOther {
				return
			}
			var ck *http.Cookie
			for _, c := range resp.Cookies() {
				if c.Name == "pipelined_session" {
					ck = c
				}
			}
			if ck == nil || !ck.Secure {
				t.Errorf("login through the TLS proxy set cookie %+v, want a Secure session cookie", ck)
			}
		})
	}
}

// TestOverviewWhileRebuilding: during the rebuild of the queues after a
// start, the overview says so in place of counts that are not known yet;
// a batch in flight is shown under its sink's state, and so is an open
// breaker's next probe.
func TestOverviewWhileRebuilding(t *testing.T) {
	ao := admin.Options{
		Log: memlog.New(),
		Sinks: func(context.Context) ([]admin.SinkStatus, error) {
			return []admin.SinkStatus{{Name: "crm", Plugin: "running", Rebuilding: true}, {Name: "archive", Plugin: "running", Ready: 12, InFlight: 500, InFlightSeconds: 42.4},
				{Name: "db", Plugin: "running", QueueError: "jetstream: consumer: no quorum"},
				{Name: "slack", Plugin: "running", Breaker: "open", Ready: 3, NextProbeSeconds: 241.5}}, nil
		},
		AllowUnauthenticated: true,
	}
	ao.UI = inspector.New(inspector.Options{Admin: ao})
	srv := httptest.NewServer(admin.Handler(ao))
	t.Cleanup(srv.Close)
	resp, body := get(t, client(t), srv.URL+"/ui/")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /ui/ = %d", resp.StatusCode)
	}
	if n := strings.Count(body, "rebuilding after the start"); n != 1 {
		t.Errorf("overview says %d times that a queue is rebuilding, want once (crm):\n%s", n, body)
	}
	if !strings.Contains(body, `<td class="num">12</td>`) {
		t.Errorf("overview lacks archive's 12 ready:\n%s", body)
	}
	if n := strings.Count(body, " in flight for "); n != 1 || !strings.Contains(body, ">500 in flight for 42s</div>") {
		t.Errorf("overview shows %d batches in flight, want archive's (500 for 42s):\n%s", n, body)
	}
	if n := strings.Count(body, "next probe in "); n != 1 || !strings.Contains(body, ">next probe in 4m01s</div>") {
		t.Errorf("overview shows %d next probes, want slack's open breaker's (in 4m01s):\n%s", n, body)
	}
	if !strings.Contains(body, `title="jetstream: consumer: no quorum">not known: the log did not answer</td>`) {
		t.Errorf("overview does not say that db's counts are not known, and why:\n%s", body)
	}
}

// oneEventPage serves the inspector over a memlog that holds one event,
// routed to the sink crm, on which settle acts first; it returns the
// event's page.
func oneEventPage(t *testing.T, settle func(q pipeline.Queue)) string {
	t.Helper()
	db := memlog.New()
	ap, err := db.Append(context.Background(), []pipeline.Entry{{
		Event:   pipeline.Event{ID: "ev-r", Source: "callkaro", ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)},
		Targets: []pipeline.Target{{Sink: "crm", Route: "all"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	settle(db.Queue("crm"))
	ao := admin.Options{Log: db, AllowUnauthenticated: true,
		Sinks: func(context.Context) ([]admin.SinkStatus, error) {
			return []admin.SinkStatus{{Name: "crm", Plugin: "running"}}, nil
		}}
	ao.UI = inspector.New(inspector.Options{Admin: ao})
	srv := httptest.NewServer(admin.Handler(ao))
	t.Cleanup(srv.Close)
	resp, body := get(t, client(t), srv.URL+"/ui/events/"+ap[0].ID)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the event's page = %d", resp.StatusCode)
	}
	return body
}

// settleOne fetches the one event of q and settles it as s says.
func settleOne(t *testing.T, q pipeline.Queue, s pipeline.Settlement) uint64 {
	t.Helper()
	ctx := context.Background()
	ds, err := q.Fetch(ctx, 10)
	if err != nil || len(ds) != 1 {
		t.Fatalf("Fetch = %d, %v; want the event", len(ds), err)
	}
	s.Seq = ds[0].Seq
	if err := q.Settle(ctx, []pipeline.Settlement{s}); err != nil {
		t.Fatal(err)
	}
	return s.Seq
}

// TestReplayedDeliveryIsNotAFailure: an event delivered, replayed and
// delivered again shows two attempts on its page, neither of them failed.
func TestReplayedDeliveryIsNotAFailure(t *testing.T) {
	body := oneEventPage(t, func(q pipeline.Queue) {
		seq := settleOne(t, q, pipeline.Settlement{Outcome: pipeline.Ack})
		if n, err := q.Requeue(context.Background(), []pipeline.Requeue{{Seq: seq, Route: "all"}}); err != nil || n != 1 {
			t.Fatalf("Requeue = %d, %v", n, err)
		}
		settleOne(t, q, pipeline.Settlement{Outcome: pipeline.Ack})
	})
	if strings.Contains(body, "the latest failed") || strings.Contains(body, `class="warn"`) {
		t.Errorf("the page of an event delivered twice says a delivery failed:\n%s", body)
	}
	for _, want := range []string{"1 earlier attempt(s), none failed; then replayed", "attempt 2: delivered"} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q:\n%s", want, body)
		}
	}
}

// TestRetryingDeliverySaysWhenItIsDue: the page of an event whose attempt
// failed says when the next one is due.
func TestRetryingDeliverySaysWhenItIsDue(t *testing.T) {
	due := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	body := oneEventPage(t, func(q pipeline.Queue) {
		settleOne(t, q, pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: due, Err: "503 Service Unavailable"})
	})
	want := `<span class="what">retrying: the next attempt is due</span> <time datetime="2031-05-06T07:08:09Z">`
	if !strings.Contains(body, want) {
		t.Errorf("the page lacks %q:\n%s", want, body)
	}
}

// eventsWithToken calls GET /v1/events of the admin API at base with the
// bearer token; the answer's body is closed.
func eventsWithToken(t *testing.T, base, token string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestGiveUpButton: an event under way at a sink has a button that gives
// up on it (as pipelined dlq add does); the page says what became of it.
func TestGiveUpButton(t *testing.T) {
	db := memlog.New()
	ap, err := db.Append(context.Background(), []pipeline.Entry{{
		Event:   pipeline.Event{ID: "ev-1", Source: "callkaro", ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)},
		Targets: []pipeline.Target{{Sink: "crm", Route: "all"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var set dispatch.GiveUps
	ao := admin.Options{
		Log: db,
		Sinks: func(context.Context) ([]admin.SinkStatus, error) {
			return []admin.SinkStatus{{Name: "crm", Plugin: "running"}}, nil
		},
		AllowUnauthenticated: true,
		GiveUps:              func(string) admin.GiveUpSet { return &set },
	}
	ao.UI = inspector.New(inspector.Options{Admin: ao})
	srv := httptest.NewServer(admin.Handler(ao))
	t.Cleanup(srv.Close)
	c := client(t)
	_, page := get(t, c, srv.URL+"/ui/events/"+ap[0].ID)
	if !strings.Contains(page, `action="/ui/events/`+ap[0].ID+`/giveup"`) {
		t.Fatalf("the page of a queued event has no give-up button:\n%s", page)
	}
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token on the page")
	}
	page = act(t, c, srv.URL, "/ui/events/"+ap[0].ID+"/giveup", url.Values{"csrf": {m[1]}, "sink": {"crm"}, "reason": {"test data"}}, "/ui/events/"+ap[0].ID)
	if !strings.Contains(flashOf(page), "Given up: the event goes to the dead-letter queue of crm") {
		t.Fatalf("POST giveup shows %q", flashOf(page))
	}
	if set.Len() != 1 {
		t.Errorf("crm's give-ups hold %d entries, want 1", set.Len())
	}
	// Without give-ups (the JetStream backend), no button.
	ao.GiveUps = nil
	ao.UI = inspector.New(inspector.Options{Admin: ao})
	srv2 := httptest.NewServer(admin.Handler(ao))
	t.Cleanup(srv2.Close)
	if _, page := get(t, client(t), srv2.URL+"/ui/events/"+ap[0].ID); strings.Contains(page, "/giveup") {
		t.Error("a daemon that cannot give up on events shows the button")
	}
}

// TestGivenUpDeliverySaysWhy: an event given up on after a failed attempt
// shows the operator's reason on its dead step: no attempt carries it.
func TestGivenUpDeliverySaysWhy(t *testing.T) {
	body := oneEventPage(t, func(q pipeline.Queue) {
		settleOne(t, q, pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: time.Now(), Err: "503 Service Unavailable"})
		settleOne(t, q, pipeline.Settlement{Outcome: pipeline.Dead, Err: "given up by an operator: bad phone number", NotAttempted: true})
	})
	for _, want := range []string{
		`<span class="what">attempt 1 failed</span>`,
		`<span class="what">dead: in the dead-letter queue</span><div class="err">given up by an operator: bad phone number</div>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q:\n%s", want, body)
		}
	}
}

// TestHeldDeliverySaysSo: a delivery held back (order_key, or an open
// breaker's probes) says so instead of a next attempt long past.
func TestHeldDeliverySaysSo(t *testing.T) {
	body := oneEventPage(t, func(q pipeline.Queue) {
		settleOne(t, q, pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: time.Now(), Err: "503 Service Unavailable"})
		settleOne(t, q, pipeline.Settlement{Outcome: pipeline.Hold})
	})
	if want := `<span class="what">held back: it waits for an earlier event of its order_key`; !strings.Contains(body, want) {
		t.Errorf("the page lacks %q:\n%s", want, body)
	}
	if strings.Contains(body, "the next attempt is due") {
		t.Error("a held delivery's page gives a time for its next attempt")
	}
}

// TestDroppedDeliverySaysSo: an event whose dead letter an operator
// dropped shows dropped, with when, and no retry button: the page no
// longer says it is in the dead-letter queue.
func TestDroppedDeliverySaysSo(t *testing.T) {
	body := oneEventPage(t, func(q pipeline.Queue) {
		seq := settleOne(t, q, pipeline.Settlement{Outcome: pipeline.Dead, Err: "410 Gone"})
		if n, err := q.DropDead(context.Background(), []uint64{seq}); err != nil || n != 1 {
			t.Fatalf("DropDead = %d, %v; want 1", n, err)
		}
	})
	for _, want := range []string{
		`<span class="badge bad">dropped</span>`,
		`<span class="what">dropped from the dead-letter queue by an operator: not delivered here unless replayed</span> <time datetime=`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q:\n%s", want, body)
		}
	}
	for _, unwanted := range []string{"dead: in the dead-letter queue", "Retry from the dead-letter queue"} {
		if strings.Contains(body, unwanted) {
			t.Errorf("the page of a dropped event says %q", unwanted)
		}
	}
}

// TestRetryNowButton: the overview's "Retry now" on a sink makes its
// retry waiting an hour due now and probes its open breaker, as pipelined
// sinks retry-now does, behind the session and its CSRF token; a removed
// sink has no button and is refused.
func TestRetryNowButton(t *testing.T) {
	db := memlog.New()
	if _, err := db.Append(context.Background(), []pipeline.Entry{{
		Event:   pipeline.Event{ID: "ev-1", Source: "callkaro", ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)},
		Targets: []pipeline.Target{{Sink: "crm", Route: "all"}},
	}}); err != nil {
		t.Fatal(err)
	}
	q := db.Queue("crm")
	settleOne(t, q, pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "503 Service Unavailable"})
	var probed []string
	ao := admin.Options{
		Log: db,
		Sinks: func(context.Context) ([]admin.SinkStatus, error) {
			return []admin.SinkStatus{{Name: "crm", Plugin: "running", Breaker: "open"}, {Name: "old", Plugin: admin.PluginRemoved, Ready: 1}}, nil
		},
		Token:    []byte("s3cret"),
		ProbeNow: func(sink string) bool { probed = append(probed, sink); return true },
	}
	ao.UI = inspector.New(inspector.Options{Admin: ao})
	srv := httptest.NewServer(admin.Handler(ao))
	t.Cleanup(srv.Close)
	c := client(t)
	if r, err := c.PostForm(srv.URL+"/ui/login", url.Values{"token": {"s3cret"}}); err != nil || r.StatusCode != http.StatusSeeOther {
		t.Fatalf("login = %v, %v", r, err)
	}
	_, page := get(t, c, srv.URL+"/ui/")
	if !strings.Contains(page, `action="/ui/sinks/crm/retry-now"`) {
		t.Fatalf("the overview has no Retry now button for crm:\n%s", page)
	}
	if strings.Contains(page, `action="/ui/sinks/old/retry-now"`) {
		t.Error("the overview has a Retry now button for a removed sink")
	}
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token on the overview")
	}
	post := func(path string, form url.Values) (int, string) {
		resp, err := c.PostForm(srv.URL+path, form)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	if code, _ := post("/ui/sinks/crm/retry-now", url.Values{"csrf": {"AAAA"}}); code != http.StatusForbidden {
		t.Errorf("Retry now with a forged CSRF token = %d, want 403", code)
	}
	if code, _ := post("/ui/sinks/old/retry-now", url.Values{"csrf": {m[1]}}); code != http.StatusConflict {
		t.Errorf("Retry now of a removed sink = %d, want 409", code)
	}
	if code, _ := post("/ui/sinks/nope/retry-now", url.Values{"csrf": {m[1]}}); code != http.StatusNotFound {
		t.Errorf("Retry now of an unknown sink = %d, want 404", code)
	}
	if len(probed) != 0 {
		t.Fatalf("refused calls probed %v", probed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if ds, _ := q.Fetch(ctx, 1); len(ds) != 0 {
		t.Fatal("the retry an hour away was fetched before Retry now")
	}
	page = act(t, c, srv.URL, "/ui/sinks/crm/retry-now", url.Values{"csrf": {m[1]}}, "/ui/")
	if got := flashOf(page); got != "crm: 1 event(s) waiting for a retry made due now; its breaker is open: probing now (every event waiting goes once a probe succeeds)." {
		t.Fatalf("Retry now shows %q", got)
	}
	if !slices.Equal(probed, []string{"crm"}) {
		t.Errorf("ProbeNow calls = %v, want [crm]", probed)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ds, err := q.Fetch(ctx, 1); err != nil || len(ds) != 1 || ds[0].Attempt != 2 {
		t.Errorf("Fetch after Retry now = %v, %v; want the event, due now, at its second attempt", ds, err)
	}
}

// slowHasteningLog is a log whose queues make one retry due per
// HastenRetries call, each after pageTime: a retry-now of many pages on a
// slow disk.
type slowHasteningLog struct {
	*memlog.Log
	pageTime time.Duration
}

func (l slowHasteningLog) Queue(sink string) pipeline.Queue {
	return slowHastener{l.Log.Queue(sink).(pipeline.RetryHastener), l.pageTime}
}

type slowHastener struct {
	pipeline.RetryHastener
	pageTime time.Duration
}

func (q slowHastener) HastenRetries(ctx context.Context, w *pipeline.RetryWalk, max int) (int, error) {
	time.Sleep(q.pageTime)
	return q.RetryHastener.HastenRetries(ctx, w, min(max, 1))
}

// TestRetryNowButtonOutlivesTheWriteTimeout: the UI's Retry now of a queue
// whose pages take longer, together, than the admin listener's write
// timeout still gets its page, as pipelined sinks retry-now gets its
// answer: the timeout bounds a page, not the call.
func TestRetryNowButtonOutlivesTheWriteTimeout(t *testing.T) {
	const writeTimeout = 200 * time.Millisecond
	db := memlog.New()
	var es []pipeline.Entry
	for _, id := range []string{"ev-1", "ev-2", "ev-3"} {
		es = append(es, pipeline.Entry{
			Event:   pipeline.Event{ID: id, Source: "callkaro", ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "crm", Route: "all"}},
		})
	}
	if _, err := db.Append(context.Background(), es); err != nil {
		t.Fatal(err)
	}
	q := db.Queue("crm")
	ds, err := q.Fetch(context.Background(), 10)
	if err != nil || len(ds) != len(es) {
		t.Fatalf("Fetch = %d, %v; want %d", len(ds), err, len(es))
	}
	var ss []pipeline.Settlement
	for _, d := range ds {
		ss = append(ss, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "503"})
	}
	if err := q.Settle(context.Background(), ss); err != nil {
		t.Fatal(err)
	}
	ao := admin.Options{
		Log: slowHasteningLog{db, writeTimeout},
		Sinks: func(context.Context) ([]admin.SinkStatus, error) {
			return []admin.SinkStatus{{Name: "crm", Plugin: "running"}}, nil
		},
		Token: []byte("s3cret"),
	}
	ao.UI = inspector.New(inspector.Options{Admin: ao})
	srv := httptest.NewUnstartedServer(admin.Handler(ao))
	srv.Config.WriteTimeout = writeTimeout
	srv.Start()
	t.Cleanup(srv.Close)
	c := client(t)
	if r, err := c.PostForm(srv.URL+"/ui/login", url.Values{"token": {"s3cret"}}); err != nil || r.StatusCode != http.StatusSeeOther {
		t.Fatalf("login = %v, %v", r, err)
	}
	_, page := get(t, c, srv.URL+"/ui/")
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token on the overview")
	}
	start := time.Now()
	resp, err := c.PostForm(srv.URL+"/ui/sinks/crm/retry-now", url.Values{"csrf": {m[1]}})
	if err != nil {
		t.Fatalf("Retry now taking %v with a write timeout of %v: %v", time.Since(start), writeTimeout, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("Retry now = %d to %q, %v, want 303 to /ui/:\n%s", resp.StatusCode, resp.Header.Get("Location"), err, body)
	}
	if _, page := get(t, c, srv.URL+"/ui/"); !strings.Contains(flashOf(page), "crm: 3 event(s) waiting for a retry made due now") {
		t.Fatalf("the overview after Retry now shows %q", flashOf(page))
	}
	if took := time.Since(start); took < 2*writeTimeout {
		t.Fatalf("the call took %v, not longer than the write timeout %v (the premise)", took, writeTimeout)
	}
}
