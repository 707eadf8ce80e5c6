package inspector_test

import (
	"context"
	"encoding/base64"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/inspector"
)

// flashRE finds the result of an action that a page shows at its top.
var flashRE = regexp.MustCompile(`<p class="flash" role="status">([^<]*)</p>`)

// flashOf returns the result the page shows, as text, or "".
func flashOf(page string) string {
	if m := flashRE.FindStringSubmatch(page); m != nil {
		return html.UnescapeString(m[1])
	}
	return ""
}

// act posts form to path with c and checks that the action answers
// Post/Redirect/Get: 303 See Other to the page at want, which shows the
// result once: a second GET of it (a reload) shows none. It returns the
// page as the redirect showed it, with the result.
func act(t *testing.T, c *http.Client, base, path string, form url.Values, want string) string {
	t.Helper()
	resp, err := c.PostForm(base+path, form)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != want {
		t.Fatalf("POST %s = %d to %q, want 303 See Other to %s:\n%s", path, resp.StatusCode, resp.Header.Get("Location"), want, b)
	}
	resp, page := get(t, c, base+want)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s after POST %s = %d, want 200:\n%s", want, path, resp.StatusCode, page)
	}
	if flashOf(page) == "" {
		t.Fatalf("GET %s after POST %s shows no result:\n%s", want, path, page)
	}
	if resp, page := get(t, c, base+want); resp.StatusCode != http.StatusOK || flashOf(page) != "" {
		t.Errorf("GET %s again (a reload) = %d, showing %q, want 200 without the result", want, resp.StatusCode, flashOf(page))
	}
	return page
}

// flashCookie returns the flash cookie an answer sets, or nil.
func flashCookie(resp *http.Response) *http.Cookie {
	for _, ck := range resp.Cookies() {
		if ck.Name == "pipelined_flash" {
			return ck
		}
	}
	return nil
}

// prgUI serves the UI, behind a token, over a memlog with the events ev-0
// to ev-5 routed to the sink crm: ev-0 delivered, ev-1 to ev-3 dead, ev-4
// retrying in an hour (crm's breaker is open), ev-5 queued. It returns the
// UI's URL, a logged-in client, crm's queue, crm's give-ups and the sinks
// ProbeNow was called for.
func prgUI(t *testing.T) (string, *http.Client, pipeline.Queue, *dispatch.GiveUps, *[]string) {
	t.Helper()
	db := memlog.New()
	ctx := context.Background()
	entry := func(i int) pipeline.Entry {
		return pipeline.Entry{
			Event:   pipeline.Event{ID: "ev-" + strconv.Itoa(i), Source: "callkaro", ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "crm", Route: "all"}},
		}
	}
	if _, err := db.Append(ctx, []pipeline.Entry{entry(0), entry(1), entry(2), entry(3), entry(4)}); err != nil {
		t.Fatal(err)
	}
	q := db.Queue("crm")
	ds, err := q.Fetch(ctx, 10)
	if err != nil || len(ds) != 5 {
		t.Fatalf("Fetch = %d, %v; want 5", len(ds), err)
	}
	ss := []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Ack}}
	for _, d := range ds[1:4] {
		ss = append(ss, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Dead, Err: "410 Gone"})
	}
	ss = append(ss, pipeline.Settlement{Seq: ds[4].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "503 Service Unavailable"})
	if err := q.Settle(ctx, ss); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Append(ctx, []pipeline.Entry{entry(5)}); err != nil {
		t.Fatal(err)
	}
	var set dispatch.GiveUps
	var probed []string
	ao := admin.Options{
		Log: db,
		Sinks: func(context.Context) ([]admin.SinkStatus, error) {
			return []admin.SinkStatus{{Name: "crm", Plugin: "running", Breaker: "open"}}, nil
		},
		Token:    []byte("s3cret"),
		GiveUps:  func(string) admin.GiveUpSet { return &set },
		ProbeNow: func(sink string) bool { probed = append(probed, sink); return true },
	}
	ao.UI = inspector.New(inspector.Options{Admin: ao})
	srv := httptest.NewServer(admin.Handler(ao))
	t.Cleanup(srv.Close)
	return srv.URL, login(t, srv.URL), q, &set, &probed
}

// login returns a client logged in to the UI at base with the token s3cret.
func login(t *testing.T, base string) *http.Client {
	t.Helper()
	c := client(t)
	resp, err := c.PostForm(base+"/ui/login", url.Values{"token": {"s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login = %d, want 303", resp.StatusCode)
	}
	return c
}

// csrfOf returns the CSRF token of the page at u.
func csrfOf(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	_, page := get(t, c, u)
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("%s has no CSRF token:\n%s", u, page)
	}
	return m[1]
}

// TestActionsRedirectWithTheirResultOnce: every button of the UI that acts
// (Retry now; an event's replay, retry and give-up; dead letters' retry
// and drop) answers 303 See Other to the page it was pressed on, which
// says what the action did once: a reload of that page shows nothing and
// does nothing again. The confirmation of a drop is still a page, and a
// refused action still answers its status with a page that says why,
// with no result to show elsewhere.
func TestActionsRedirectWithTheirResultOnce(t *testing.T) {
	base, c, q, set, probed := prgUI(t)
	ctx := context.Background()
	csrf := csrfOf(t, c, base+"/ui/")
	stats := func() pipeline.QueueStats {
		t.Helper()
		st, err := q.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := stats(); st != (pipeline.QueueStats{Ready: 1, Retrying: 1, Dead: 3}) {
		t.Fatalf("premise: crm's queue = %+v, want ev-5 ready, ev-4 retrying, 3 dead", st)
	}

	msg := flashOf(act(t, c, base, "/ui/sinks/crm/retry-now", url.Values{"csrf": {csrf}}, "/ui/"))
	if want := "crm: 1 event(s) waiting for a retry made due now; its breaker is open: probing now (every event waiting goes once a probe succeeds)."; msg != want {
		t.Errorf("Retry now says %q, want %q", msg, want)
	}
	if !slices.Equal(*probed, []string{"crm"}) {
		t.Errorf("ProbeNow calls after Retry now and a reload = %v, want [crm] once", *probed)
	}

	if msg := flashOf(act(t, c, base, "/ui/events/ev-0/replay", url.Values{"csrf": {csrf}, "sink": {"crm"}}, "/ui/events/ev-0")); msg != "Queued for crm." {
		t.Errorf("Replay says %q", msg)
	}
	if st := stats(); st.Ready+st.Retrying != 3 || st.Dead != 3 {
		t.Errorf("crm's queue after the replay = %+v, want ev-0 queued again, once", st)
	}

	if msg := flashOf(act(t, c, base, "/ui/events/ev-1/retry", url.Values{"csrf": {csrf}, "sink": {"crm"}}, "/ui/events/ev-1")); msg != "Retrying: moved from the dead-letter queue of crm." {
		t.Errorf("Retry says %q", msg)
	}
	if st := stats(); st.Ready+st.Retrying != 4 || st.Dead != 2 {
		t.Errorf("crm's queue after the retry = %+v, want ev-1 out of the dead-letter queue, queued", st)
	}

	msg = flashOf(act(t, c, base, "/ui/events/ev-5/giveup", url.Values{"csrf": {csrf}, "sink": {"crm"}, "reason": {"bad data"}}, "/ui/events/ev-5"))
	if want := "Given up: the event goes to the dead-letter queue of crm at its next turn, instead of to the sink."; msg != want {
		t.Errorf("Give up says %q, want %q", msg, want)
	}
	if set.Len() != 1 {
		t.Errorf("crm's give-ups hold %d entries, want 1", set.Len())
	}

	dls, err := q.DeadLetters(ctx, 0, 10)
	if err != nil || len(dls) != 2 {
		t.Fatalf("DeadLetters = %d, %v; want ev-2 and ev-3", len(dls), err)
	}
	retry := url.Values{"csrf": {csrf}, "action": {"retry"}, "seq": {strconv.FormatUint(dls[0].Seq, 10)}}
	if msg := flashOf(act(t, c, base, "/ui/dlq/crm", retry, "/ui/dlq/crm")); msg != "Retried 1 dead letter(s) of crm." {
		t.Errorf("Retry selected says %q", msg)
	}
	if st := stats(); st.Dead != 1 {
		t.Errorf("crm's queue after the retry of one dead letter = %+v, want 1 dead", st)
	}

	drop := url.Values{"csrf": {csrf}, "action": {"drop"}, "seq": {strconv.FormatUint(dls[1].Seq, 10)}}
	code, page := postForm(t, c, base+"/ui/dlq/crm", drop)
	if code != http.StatusOK || !strings.Contains(page, "Drop 1 selected dead letter of <strong>crm</strong>?") {
		t.Fatalf("POST drop selected = %d, want the confirmation page:\n%s", code, page)
	}
	drop.Set("confirm", "yes")
	if msg := flashOf(act(t, c, base, "/ui/dlq/crm", drop, "/ui/dlq/crm")); msg != "Dropped 1 dead letter(s) of crm." {
		t.Errorf("Drop, confirmed, says %q", msg)
	}
	if st := stats(); st.Dead != 0 {
		t.Errorf("crm's queue after the drop = %+v, want no dead letter", st)
	}

	// Nothing selected: nothing done, the page again, saying why.
	code, page = postForm(t, c, base+"/ui/dlq/crm", url.Values{"csrf": {csrf}, "action": {"retry"}})
	if code != http.StatusOK || !strings.Contains(flashOf(page), "Select at least one dead letter") {
		t.Errorf("POST retry of nothing selected = %d, showing %q, want 200 asking for a selection", code, flashOf(page))
	}

	// Refused actions keep their status and page, and leave no result to
	// show on the next page.
	for _, tc := range []struct {
		path string
		form url.Values
		code int
		says string
	}{
		{"/ui/events/ev-0/replay", url.Values{"csrf": {csrf}, "sink": {"nope"}}, http.StatusBadRequest, "Sink &#34;nope&#34; is not configured."},
		{"/ui/sinks/nope/retry-now", url.Values{"csrf": {csrf}}, http.StatusNotFound, "Unknown sink &#34;nope&#34;."},
		{"/ui/dlq/crm", url.Values{"csrf": {csrf}, "action": {"shred"}, "all": {"1"}}, http.StatusBadRequest, "action: retry, drop or giveup"},
		{"/ui/dlq/crm", url.Values{"csrf": {"forged"}, "action": {"retry"}, "all": {"1"}}, http.StatusForbidden, "missing or wrong CSRF token"},
	} {
		resp, err := c.PostForm(base+tc.path, tc.form)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.says) || flashCookie(resp) != nil {
			t.Errorf("POST %s %v = %d (flash cookie %v), want %d saying %q:\n%s", tc.path, tc.form, resp.StatusCode, flashCookie(resp), tc.code, tc.says, b)
		}
	}
	for _, p := range []string{"/ui/", "/ui/events/ev-0", "/ui/dlq/crm"} {
		if _, page := get(t, c, base+p); flashOf(page) != "" {
			t.Errorf("GET %s after refused actions shows %q", p, flashOf(page))
		}
	}
}

// TestFlashIsTheUIsOwn: the result a page shows after a redirect comes
// from the UI alone. Its cookie is HttpOnly, SameSite=Strict, short-lived
// and for the UI's paths; it waits for its own page (another page opened
// meanwhile neither shows nor clears it); another session's copy of it,
// or a cookie whose message was changed, shows nothing and is cleared.
func TestFlashIsTheUIsOwn(t *testing.T) {
	base, c, _, _, _ := prgUI(t)
	csrf := csrfOf(t, c, base+"/ui/")
	resp, err := c.PostForm(base+"/ui/events/ev-0/replay", url.Values{"csrf": {csrf}, "sink": {"crm"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ck := flashCookie(resp)
	if resp.StatusCode != http.StatusSeeOther || ck == nil {
		t.Fatalf("POST replay = %d with flash cookie %v, want 303 with one", resp.StatusCode, ck)
	}
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/ui/" || ck.MaxAge <= 0 || ck.MaxAge > 300 {
		t.Errorf("flash cookie = %+v, want HttpOnly, SameSite=Strict, Path=/ui/, a few minutes at most", ck)
	}

	// Another session's copy: nothing shown, the cookie cleared.
	other := login(t, base)
	u, _ := url.Parse(base + "/ui/")
	other.Jar.SetCookies(u, []*http.Cookie{{Name: ck.Name, Value: ck.Value, Path: "/ui/"}})
	resp, page := get(t, other, base+"/ui/events/ev-0")
	if flashOf(page) != "" {
		t.Errorf("another session's copy of the flash cookie shows %q", flashOf(page))
	}
	if got := flashCookie(resp); got == nil || got.MaxAge >= 0 {
		t.Errorf("another session's copy of the flash cookie is not cleared: %v", got)
	}

	// Changed: another message under the original's signature, or not a
	// flash at all.
	payload, mac, _ := strings.Cut(ck.Value, ".")
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil || !strings.Contains(string(raw), "Queued for crm.") {
		t.Fatalf("premise: the flash cookie's first part holds the message: %q, %v", raw, err)
	}
	changed := base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(raw), "Queued for crm.", "Session over: log in at evil.example", 1))) + "." + mac
	for _, v := range []string{changed, "hello", "." + ck.Value, ck.Value + "x"} {
		req, _ := http.NewRequest(http.MethodGet, base+"/ui/events/ev-0", nil)
		req.AddCookie(&http.Cookie{Name: ck.Name, Value: v})
		resp, err := noJar(c).Do(withSession(t, c, base, req))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || flashOf(string(b)) != "" {
			t.Errorf("GET with flash cookie %q = %d showing %q, want 200 showing nothing", v, resp.StatusCode, flashOf(string(b)))
		}
		if got := flashCookie(resp); got == nil || got.MaxAge >= 0 {
			t.Errorf("the changed flash cookie %q is not cleared: %v", v, got)
		}
	}

	// Another page first: it shows nothing and leaves the flash to its
	// own page.
	if _, page := get(t, c, base+"/ui/dlq/crm"); flashOf(page) != "" {
		t.Errorf("the dead-letter page shows the replay's result %q", flashOf(page))
	}
	if _, page := get(t, c, base+"/ui/events/ev-0"); flashOf(page) != "Queued for crm." {
		t.Errorf("the event's page, opened second, shows %q, want the replay's result", flashOf(page))
	}
	if _, page := get(t, c, base+"/ui/events/ev-0"); flashOf(page) != "" {
		t.Errorf("the event's page, reloaded, shows %q again", flashOf(page))
	}
}

// noJar returns a client like c without its cookie jar: the request
// carries exactly the cookies it was given.
func noJar(c *http.Client) *http.Client {
	return &http.Client{CheckRedirect: c.CheckRedirect}
}

// withSession adds to req the session cookie c holds for the UI at base.
func withSession(t *testing.T, c *http.Client, base string, req *http.Request) *http.Request {
	t.Helper()
	u, _ := url.Parse(base + "/ui/")
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == "pipelined_session" {
			req.AddCookie(ck)
			return req
		}
	}
	t.Fatal("the client holds no session cookie")
	return req
}
