package browser

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/tests/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// screenshots, when set, is the directory the walks write their
// screenshots to (make ui-screenshots: docs/ui).
var screenshots = flag.String("ui.screenshots", "", "write a PNG of each page, at 1280 px and phone width, light and dark, to this directory")

const token = "ui-test-token-0123456789"

// hostile is what the XSS test puts in bodies and headers.
const hostile = `<script>window.pwned=1</script>"><img src=x onerror="window.pwned=1">`

// chromium returns the browser's path, or skips the test when there is
// none (CI installs Debian's chromium package).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium on PATH: apt-get install chromium (CI does) to run the browser tests")
	return ""
}

// newBrowser starts one headless chromium for the test and returns the
// context of its first tab; chromedp.NewContext(ctx) opens more tabs.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// run runs steps in ctx within 30s, failing the test with what.
func run(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	get(t, ctx, what, chromedp.Steps(steps...))
}

// get runs a in ctx within 30s and returns its value, failing the test
// with what.
func get[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, a)
	if err != nil {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		t.Fatalf("%s: %v (page %s)", what, err, loc)
	}
	return v
}

// load runs steps that cause a navigation (a click on a link, a submit) and
// waits until the new page has loaded.
func load(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.RunResponse(c, steps...); err != nil {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		t.Fatalf("%s: %v (page %s)", what, err, loc)
	}
}

// call sends one protocol command to the tab of ctx.
func call[P any](t *testing.T, ctx context.Context, cmd cdp.Command[P, cdp.Empty], params P) {
	t.Helper()
	if _, err := chromedp.Call(ctx, cmd, params); err != nil {
		t.Fatalf("%s: %v", cmd.Method, err)
	}
}

// text returns the text of the first element matching the CSS selector sel.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	return get(t, ctx, "read "+sel, chromedp.Text(chromedp.CSS(sel)))
}

// eventually reloads url in ctx until the text of sel contains want.
func eventually(t *testing.T, ctx context.Context, u, sel, want string) {
	t.Helper()
	var last string
	err := harness.WaitFor(30*time.Second, func() error {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := chromedp.Do(c, chromedp.Navigate(u)); err != nil {
			return err
		}
		var err error
		if last, err = chromedp.Run(c, chromedp.Text(chromedp.CSS(sel))); err != nil {
			return err
		}
		if !strings.Contains(last, want) {
			return fmt.Errorf("%s shows %q", sel, last)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %s never showed %q: %v", u, sel, want, err)
	}
}

// contrastJS lists the visible buttons of the page whose text color has
// less than WCAG's 4.5:1 contrast against their background color.
const contrastJS = `(() => {
  const lum = c => {
    const [r, g, b] = c.match(/[\d.]+/g).slice(0, 3).map(v => {
      v = v / 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const low = [];
  for (const b of document.querySelectorAll("button")) {
    const st = getComputedStyle(b);
    if (b.offsetParent === null || st.backgroundColor === "rgba(0, 0, 0, 0)") continue;
    const [l1, l2] = [lum(st.color), lum(st.backgroundColor)].sort((x, y) => y - x);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    if (ratio < 4.5) low.push(b.textContent.trim() + ": " + st.color + " on " + st.backgroundColor + " = " + ratio.toFixed(2) + ":1");
  }
  return low;
})()`

// pwned reports whether a script of the page's content ran.
func pwned(t *testing.T, ctx context.Context) bool {
	t.Helper()
	return get(t, ctx, "read window.pwned", chromedp.Evaluate[bool](`window.pwned !== undefined`))
}

// shoot writes name-<width>-<scheme>.png of the current page for each
// width and scheme asked, when -ui.screenshots is set.
func shoot(t *testing.T, ctx context.Context, name string, phone, dark bool) {
	t.Helper()
	if *screenshots == "" {
		return
	}
	type view struct {
		w      int64
		scheme string
	}
	views := []view{{1280, "light"}}
	if dark {
		views = append(views, view{1280, "dark"})
	}
	if phone {
		views = append(views, view{390, "light"})
		if dark {
			views = append(views, view{390, "dark"})
		}
	}
	for _, v := range views {
		call(t, ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: v.w, Height: 900, DeviceScaleFactor: 1, Mobile: v.w < 600})
		call(t, ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: v.scheme}}})
		run(t, ctx, "settle", chromedp.Sleep(150*time.Millisecond)) // the layout after the resize
		png := get(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
		file := filepath.Join(*screenshots, fmt.Sprintf("%s-%d-%s.png", name, v.w, v.scheme))
		if err := os.WriteFile(file, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	call(t, ctx, emulation.ClearDeviceMetricsOverride, cdp.Empty{})
	call(t, ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "light"}}})
}

// notCut checks that no part of a last error on the page is cut off from
// sight (it once was past 38 characters, 22 on a phone), at 1280 px and at
// a phone's width.
func notCut(t *testing.T, ctx context.Context, page string) {
	t.Helper()
	for _, w := range []int64{1280, 390} {
		call(t, ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: w, Height: 900, DeviceScaleFactor: 1, Mobile: w < 600})
		run(t, ctx, "settle", chromedp.Sleep(150*time.Millisecond)) // the layout after the resize
		if cut := get(t, ctx, "cut errors", chromedp.Evaluate[[]string](`[...document.querySelectorAll("td.err, td.err *")].filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)`)); len(cut) > 0 {
			t.Errorf("at %d px %s cuts last errors off from sight: %q", w, page, cut)
		}
	}
	call(t, ctx, emulation.ClearDeviceMetricsOverride, cdp.Empty{})
}

// onceThenGone checks, on the page a button's POST led to, that the
// browser shows the page at u, and that a reload shows no result: it got
// the page by a GET after a 303, so a reload does not post again (an
// answer to the POST itself would be posted again, or ask to).
func onceThenGone(t *testing.T, ctx context.Context, u string) {
	t.Helper()
	if loc := get(t, ctx, "location", chromedp.Location()); loc != u {
		t.Errorf("after the button the browser shows %s, want %s", loc, u)
	}
	load(t, ctx, "reload", chromedp.Reload())
	if n := get(t, ctx, "count results", chromedp.Evaluate[int](`document.querySelectorAll("p.flash").length`)); n != 0 {
		t.Errorf("%s reloaded shows %q again", u, text(t, ctx, "p.flash"))
	}
}

// post sends a webhook with extra headers and returns the event's id.
func post(t *testing.T, d *harness.Daemon, body string, h http.Header) string {
	t.Helper()
	code, ans, err := harness.PostWith(harness.Client, d.URL+"/hooks/callkaro", "application/json", h, []byte(body))
	if err != nil || code != 200 {
		t.Fatalf("POST %s = %d %v %v", body, code, ans, err)
	}
	return ans["id"].(string)
}

// TestInspectorInABrowser walks the web UI of a real daemon, with the real
// archive and http sink plugins, in headless Chromium: login, overview
// (a sink down for an hour with its next retry, the only Retry now, last
// errors whole) → events → event and its timeline, a sink answering 503 → its dead letters
// → retry all → delivered, a replay with live progress, the live tail,
// refused requests, a CSRF-less POST refused, and hostile bodies and
// headers shown as text without running. Each button that acts leads
// back to its page, which says what it did once: a reload neither shows
// it again nor posts again.
func TestInspectorInABrowser(t *testing.T) {
	harness.SkipIfShort(t)
	chromium(t)
	recv := harness.NewReceiver(t)
	recv.SetAnswer(harness.Answer(http.StatusServiceUnavailable))
	// billing is down for the day: 503 with Retry-After: 3600, so its
	// event waits an hour for its retry (what the overview says of it).
	billing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":"billing is down for maintenance until 18:00 UTC"}`)
	}))
	t.Cleanup(billing.Close)
	dir := t.TempDir()
	// config is the configuration, with the sink "legacy" (archive's
	// plugin) after the others when withLegacy; the last subtest adds it,
	// then removes it.
	config := func(withLegacy bool) string {
		legacy, to := "", []string{"archive", "crm"}
		if withLegacy {
			legacy = "\n[[sink]]\nname = \"legacy\"\nplugin = \"archive\"\nconfig = { dir = \"" + filepath.Join(dir, "legacy") + "\" }\n"
			to = append(to, "legacy")
		}
		return harness.Listeners("") + "token_env = \"UI_TEST_TOKEN\"\n" + harness.BadgerLog(filepath.Join(dir, "log")) + `
[[source]]
name = "callkaro"
path = "/hooks/callkaro"
dedup_key = "body.data.callSid"
dedup_window = "24h"
auth = { type = "none" }
keep_rejected = "1h"

[[sink]]
name = "archive"
plugin = "archive"
config = { dir = "` + filepath.Join(dir, "archive") + `" }
delivery = { batch_wait = "5ms" }

[[sink]]
name = "crm"
plugin = "http"
config = { url = "` + recv.URL + `" }
delivery = { batch_wait = "5ms", max_attempts = 2, backoff_min = "50ms", backoff_max = "100ms" }

[[sink]]
name = "billing"
plugin = "http"
config = { url = "` + billing.URL + `" }
delivery = { batch_wait = "5ms" }

[[route]]
name = "invoices"
when = 'body.event == "invoice_due"'
to = ["billing"]
` + legacy + harness.AllCallsRoute(to...)
	}
	cfgFile := harness.WriteConfig(t, dir, config(false))
	d, err := harness.StartWith(t, cfgFile, harness.Options{Env: []string{"UI_TEST_TOKEN=" + token}})
	if err != nil {
		t.Fatal(err)
	}
	api := admin.NewClient(d.AdminURL, token, harness.Client)
	base := d.AdminURL

	// Events: one plain, one hostile in body and headers.
	plain := post(t, d, string(harness.CallEvent("ui-plain", "interested")), nil)
	evil := post(t, d, `{"event":"call_ended","data":{"callSid":"ui-evil","note":`+quote(hostile)+`,"link":"javascript:window.pwned=1","html":"<a href=\"javascript:window.pwned=1\">click</a>"}}`,
		http.Header{"X-Evil": {hostile}, "X-Link": {"javascript:window.pwned=1"}})
	// A refused request whose body is hostile too.
	if code, _, _ := harness.PostWith(harness.Client, d.URL+"/hooks/callkaro", "application/json", nil, []byte(`{"broken": "`+hostile)); code != http.StatusBadRequest {
		t.Fatalf("a malformed body got %d, want 400", code)
	}
	// crm answers 503 twice per event: both go to its dead-letter queue.
	harness.Eventually(t, 30*time.Second, func() error {
		st, err := api.Sink(context.Background(), "crm")
		if err != nil || st.Dead != 2 {
			return fmt.Errorf("crm: %+v %v, want 2 dead letters", st, err)
		}
		return nil
	})

	// An invoice for billing, which puts it off for an hour.
	post(t, d, `{"event":"invoice_due","data":{"callSid":"ui-invoice"}}`, nil)
	harness.Eventually(t, 30*time.Second, func() error {
		st, err := api.Sink(context.Background(), "billing")
		if err != nil || st.Retrying != 1 || st.NextRetrySeconds < 3000 {
			return fmt.Errorf("billing: %+v %v, want 1 retrying, its next retry about an hour ahead", st, err)
		}
		return nil
	})

	ctx := newBrowser(t)

	t.Run("login", func(t *testing.T) {
		run(t, ctx, "open the UI", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("token")))
		loc := get(t, ctx, "location", chromedp.Location())
		if !strings.Contains(loc, "/ui/login") {
			t.Fatalf("without a session / led to %s, want the login form", loc)
		}
		shoot(t, ctx, "login", true, true)
		run(t, ctx, "type a wrong token", chromedp.SendKeys(chromedp.ID("token"), "nope"))
		load(t, ctx, "log in with a wrong token", chromedp.Submit(chromedp.ID("token")))
		if got := text(t, ctx, "p.error"); !strings.Contains(got, "not the admin token") {
			t.Errorf("a wrong token shows %q", got)
		}
		run(t, ctx, "type the token", chromedp.SendKeys(chromedp.ID("token"), token))
		load(t, ctx, "log in", chromedp.Submit(chromedp.ID("token")))
		loc = get(t, ctx, "location", chromedp.Location())
		if !strings.HasSuffix(loc, "/ui/") {
			t.Errorf("after login the page is %s, want the overview", loc)
		}
	})

	t.Run("a POST without the CSRF token is refused", func(t *testing.T) {
		res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/ui/"}})
		if err != nil {
			t.Fatalf("read the cookies: %v", err)
		}
		cookies := res.Cookies
		var session string
		for _, c := range cookies {
			if c.Name == "pipelined_session" {
				session = c.Value
				if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict {
					t.Errorf("session cookie: HttpOnly=%v SameSite=%v, want HttpOnly and Strict", c.HTTPOnly, c.SameSite)
				}
			}
		}
		if session == "" {
			t.Fatalf("no session cookie after login: %+v", cookies)
		}
		send := func(form url.Values) int {
			req, _ := http.NewRequest(http.MethodPost, base+"/ui/dlq/crm", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.AddCookie(&http.Cookie{Name: "pipelined_session", Value: session})
			resp, err := harness.Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if code := send(url.Values{"action": {"drop"}, "all": {"1"}, "confirm": {"yes"}}); code != http.StatusForbidden {
			t.Errorf("POST /ui/dlq/crm without csrf = %d, want 403", code)
		}
		if code := send(url.Values{"action": {"drop"}, "all": {"1"}, "confirm": {"yes"}, "csrf": {"forged"}}); code != http.StatusForbidden {
			t.Errorf("POST /ui/dlq/crm with a forged csrf = %d, want 403", code)
		}
		if st, _ := api.Sink(context.Background(), "crm"); st.Dead != 2 {
			t.Errorf("crm has %d dead letters after the refused POSTs, want 2 still", st.Dead)
		}
	})

	t.Run("overview, events, event, timeline", func(t *testing.T) {
		run(t, ctx, "overview", chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.ID("sinks-h")))
		overview := text(t, ctx, "main")
		for _, want := range []string{"archive", "crm", "running", "callkaro", "accepted"} {
			if !strings.Contains(overview, want) {
				t.Errorf("the overview lacks %q:\n%s", want, overview)
			}
		}
		// billing: when its retry is due, and its last error whole, on
		// a phone too (a title cannot be read there).
		for _, want := range []string{"next retry in 59m", "billing is down for maintenance until 18:00 UTC"} {
			if !strings.Contains(overview, want) {
				t.Errorf("the overview lacks %q:\n%s", want, overview)
			}
		}
		// ... shown, not only in the page's text.
		notCut(t, ctx, "the overview")
		shoot(t, ctx, "overview", true, true)
		// Every button's label is legible on its own background, in light
		// and dark: WCAG's 4.5:1 for text (the Retry now buttons once took
		// .small's muted grey over the link blue, about 1.3:1).
		for _, scheme := range []string{"light", "dark"} {
			call(t, ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}})
			low := get(t, ctx, "button contrast", chromedp.Evaluate[[]string](contrastJS))
			// Retry now only where it would do something: billing's
			// retry waits; archive is healthy, crm's events are dead.
			if got := get(t, ctx, "retry-now buttons", chromedp.Evaluate[[]string](`[...document.querySelectorAll('form[action$="/retry-now"]')].map(f => f.getAttribute("action"))`)); !slices.Equal(got, []string{"/ui/sinks/billing/retry-now"}) {
				t.Errorf("the overview's Retry now buttons are %q, want billing's alone", got)
			}
			for _, b := range low {
				t.Errorf("%s: a button's label is not legible: %s", scheme, b)
			}
		}
		call(t, ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "light"}}})
		// The keyboard: the first Tab shows the skip link, which leads to
		// the content; the next ones walk the navigation.
		run(t, ctx, "tab", chromedp.KeyEvent(kb.Tab))
		if got := get(t, ctx, "focus", chromedp.Evaluate[string](`document.activeElement.textContent`)); got != "Skip to content" {
			t.Errorf("the first Tab focuses %q, want the skip link", got)
		}
		run(t, ctx, "tab", chromedp.KeyEvent(kb.Tab), chromedp.KeyEvent(kb.Tab), chromedp.KeyEvent(kb.Tab))
		if got := get(t, ctx, "focus", chromedp.Evaluate[string](`document.activeElement.getAttribute("href")`)); got != "/ui/events" {
			t.Errorf("the fourth Tab focuses %q, want the Events link", got)
		}
		load(t, ctx, "to the events", chromedp.Click(chromedp.CSS(`nav a[href="/ui/events"]`)))
		shoot(t, ctx, "events", true, true)
		load(t, ctx, "to the event", chromedp.Click(chromedp.CSS(`a[href="/ui/events/`+plain+`"]`)))
		if got := text(t, ctx, `article[aria-labelledby="tl-archive"]`); !strings.Contains(got, "delivered") {
			t.Errorf("archive's timeline: %q, want delivered", got)
		}
		page := text(t, ctx, "main")
		for _, want := range []string{plain, "callkaro", "ui-plain", "crm", "dead", "attempt 1 failed", "attempt 2 failed", "503"} {
			if !strings.Contains(page, want) {
				t.Errorf("the event page lacks %q", want)
			}
		}
		shoot(t, ctx, "event", true, true)
	})

	t.Run("Retry now leads back to the overview, which says so once", func(t *testing.T) {
		run(t, ctx, "overview", chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.ID("sinks-h")))
		load(t, ctx, "retry now", chromedp.Click(chromedp.CSS(`form[action="/ui/sinks/billing/retry-now"] button`)))
		if got := text(t, ctx, "p.flash"); !strings.HasPrefix(got, "billing: 1 event(s) waiting for a retry made due now") {
			t.Errorf("after Retry now: %q", got)
		}
		onceThenGone(t, ctx, base+"/ui/")
	})

	t.Run("503 sink, dead letters, retry all, delivered", func(t *testing.T) {
		run(t, ctx, "the DLQ page", chromedp.Navigate(base+"/ui/dlq/crm"), chromedp.WaitVisible(chromedp.CSS(`input[name="seq"]`)))
		dlq := text(t, ctx, "main")
		if !strings.Contains(dlq, plain) || !strings.Contains(dlq, "503") {
			t.Errorf("the DLQ page lacks the event or its error:\n%s", dlq)
		}
		shoot(t, ctx, "dlq", true, true)
		recv.SetAnswer(harness.Answer(http.StatusOK))
		load(t, ctx, "retry all", chromedp.Click(chromedp.CSS(`input[name="all"] ~ button[value="retry"]`)))
		if got := text(t, ctx, "p.flash"); !strings.Contains(got, "Retried 2") {
			t.Errorf("after retry all: %q", got)
		}
		onceThenGone(t, ctx, base+"/ui/dlq/crm")
		eventually(t, ctx, base+"/ui/events/"+plain, `article[aria-labelledby="tl-crm"]`, "attempt 3: delivered")
	})

	t.Run("replay with progress", func(t *testing.T) {
		run(t, ctx, "the replay form", chromedp.Navigate(base+"/ui/replay"), chromedp.WaitVisible(chromedp.ID("r-sink")),
			chromedp.SetValue(chromedp.ID("r-sink"), "archive"), chromedp.SetValue(chromedp.ID("r-since"), "1h"))
		shoot(t, ctx, "replay", true, false)
		load(t, ctx, "start", chromedp.Submit(chromedp.ID("r-since")))
		// The page follows the replay by itself (server-sent events).
		get(t, ctx, "wait for done", chromedp.Poll[bool](`document.getElementById("rp-state").textContent === "done"`, chromedp.WithPollingTimeout(20*time.Second)))
		if got := text(t, ctx, "#rp-enqueued"); got != "2" {
			t.Errorf("replay enqueued %q, want 2 (both events were delivered to archive)", got)
		}
		pct := get(t, ctx, "read the bar", chromedp.Evaluate[string](`String(document.getElementById("rp-bar").value)`))
		if pct != "100" {
			t.Errorf("progress bar at %s when done, want 100", pct)
		}
		shoot(t, ctx, "replayjob", false, false)
	})

	t.Run("live tail", func(t *testing.T) {
		tab, cancel := chromedp.NewContext(ctx)
		defer cancel()
		if err := chromedp.Do(tab); err != nil { // opens the tab: no timeout on this first call
			t.Fatal(err)
		}
		run(t, tab, "the tail", chromedp.Navigate(base+"/ui/tail?source=callkaro"), chromedp.WaitVisible(chromedp.ID("tail")))
		get(t, tab, "the tail connects", chromedp.Poll[bool](`document.getElementById("tail-status").textContent.startsWith("Following")`, chromedp.WithPollingTimeout(10*time.Second)))
		id := post(t, d, string(harness.CallEvent("ui-tail", "interested")), http.Header{"X-Evil": {hostile}})
		run(t, tab, "the new event appears", chromedp.WaitVisible(chromedp.CSS(`#tail a[href="/ui/events/`+id+`"]`)))
		if pwned(t, tab) {
			t.Error("window.pwned is set on the tail page")
		}
		shoot(t, tab, "tail", true, false)
	})

	t.Run("hostile bodies and headers are text", func(t *testing.T) {
		for _, u := range []string{"/ui/events/" + evil, "/ui/events", "/ui/events?when=" + url.QueryEscape(`body.data.note contains "<script>"`), "/ui/refused"} {
			run(t, ctx, "open "+u, chromedp.Navigate(base+u), chromedp.WaitVisible(chromedp.CSS("main")))
			if pwned(t, ctx) {
				t.Errorf("%s: window.pwned is set: a payload ran", u)
			}
			imgs := get(t, ctx, "count images", chromedp.Evaluate[int](`document.querySelectorAll("main img").length`))
			evilLinks := get(t, ctx, "count links", chromedp.Evaluate[int](`[...document.querySelectorAll("a")].filter(a => a.href.startsWith("javascript:")).length`))
			if imgs != 0 || evilLinks != 0 {
				t.Errorf("%s: %d <img> and %d javascript: links in the page, want none", u, imgs, evilLinks)
			}
		}
		run(t, ctx, "the hostile event", chromedp.Navigate(base+"/ui/events/"+evil), chromedp.WaitVisible(chromedp.CSS("pre.body")))
		body := text(t, ctx, "pre.body")
		if !strings.Contains(body, "<script>window.pwned=1</script>") || !strings.Contains(body, "javascript:window.pwned=1") {
			t.Errorf("the body is not shown as text:\n%s", body)
		}
		if h := text(t, ctx, "table.kv"); !strings.Contains(h, `onerror="window.pwned=1"`) {
			t.Errorf("the X-Evil header is not shown as text:\n%s", h)
		}
		run(t, ctx, "refused", chromedp.Navigate(base+"/ui/refused"), chromedp.WaitVisible(chromedp.CSS("article.refusal")))
		if got := text(t, ctx, "article.refusal"); !strings.Contains(got, "<script>") || !strings.Contains(got, "400") {
			t.Errorf("the refused request is not shown with its status and body as text:\n%s", got)
		}
		shoot(t, ctx, "refused", true, false)
		if pwned(t, ctx) {
			t.Error("window.pwned is set")
		}
	})

	t.Run("a removed sink: give up on its queue, drop its dead letters", func(t *testing.T) {
		// legacy is added, paused, given two events, then removed: they
		// wait in its queue, which nothing delivers.
		reload := func(withLegacy bool) {
			t.Helper()
			harness.WriteConfig(t, dir, config(withLegacy))
			if _, err := api.Reload(context.Background()); err != nil {
				t.Fatalf("reload: %v", err)
			}
		}
		reload(true)
		if _, err := api.PauseSink(context.Background(), "legacy", true); err != nil {
			t.Fatal(err)
		}
		waiting := []string{post(t, d, string(harness.CallEvent("ui-legacy-1", "interested")), nil), post(t, d, string(harness.CallEvent("ui-legacy-2", "not_interested")), nil)}
		reload(false)
		harness.Eventually(t, 30*time.Second, func() error {
			if st, err := api.Sink(context.Background(), "legacy"); err != nil || st.Plugin != admin.PluginRemoved || st.Ready != 2 {
				return fmt.Errorf("legacy: %+v %v, want removed with 2 ready", st, err)
			}
			return nil
		})

		run(t, ctx, "overview", chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.ID("sinks-h")))
		load(t, ctx, "to legacy's queue", chromedp.Click(chromedp.CSS(`td a[href="/ui/dlq/legacy"]`)))
		if got := text(t, ctx, "#removed"); !strings.Contains(got, "2 events wait in it") || !strings.Contains(got, "nothing delivers its queue") {
			t.Errorf("legacy's page says %q, want it removed with 2 events waiting", got)
		}
		if got := text(t, ctx, "#no-retry"); !strings.Contains(got, "add the sink back") {
			t.Errorf("legacy's page explains no retry with %q", got)
		}
		if n := get(t, ctx, "count retry buttons", chromedp.Evaluate[int](`document.querySelectorAll('button[value="retry"]').length`)); n != 0 {
			t.Errorf("legacy's page has %d retry buttons, want none (nothing would deliver)", n)
		}
		run(t, ctx, "type a reason", chromedp.SendKeys(chromedp.ID("giveup-reason"), "legacy retired, ticket 12"))
		shoot(t, ctx, "dlq-removed", true, true)
		load(t, ctx, "give up on all", chromedp.Click(chromedp.CSS(`#giveup-form button[value="giveup"]`)))
		if got := text(t, ctx, "p.flash"); !strings.Contains(got, "Gave up on 2 waiting event(s) of legacy") {
			t.Errorf("after give up on all: %q", got)
		}
		onceThenGone(t, ctx, base+"/ui/dlq/legacy")
		page := text(t, ctx, "main")
		for _, want := range append([]string{"No event waits in it.", "given up by an operator: legacy retired, ticket 12"}, waiting...) {
			if !strings.Contains(page, want) {
				t.Errorf("legacy's page after the give-up lacks %q:\n%s", want, page)
			}
		}
		if st, _ := api.Sink(context.Background(), "legacy"); st.Ready+st.Retrying != 0 || st.Dead != 2 {
			t.Errorf("legacy after the give-up: %+v, want 2 dead letters and nothing waiting", st)
		}
		load(t, ctx, "drop all", chromedp.Click(chromedp.CSS(`input[name="all"] ~ button[value="drop"]`)))
		load(t, ctx, "confirm", chromedp.Click(chromedp.CSS(`input[name="confirm"] ~ div button.danger`)))
		if got := text(t, ctx, "p.flash"); !strings.Contains(got, "Dropped 2 dead letter(s) of legacy. Nothing is left of it") {
			t.Errorf("after drop all: %q", got)
		}
		// The dead-letter index it leads to shows last errors whole, as
		// the overview does (billing's), on a phone too.
		if got := text(t, ctx, "main"); !strings.Contains(got, "billing is down for maintenance until 18:00 UTC") {
			t.Errorf("the dead-letter index lacks billing's last error:\n%s", got)
		}
		notCut(t, ctx, "the dead-letter index")
		shoot(t, ctx, "dlqindex", true, false)
		onceThenGone(t, ctx, base+"/ui/dlq")
		if _, err := api.Sink(context.Background(), "legacy"); err == nil {
			t.Error("legacy is still listed once its dead letters were dropped")
		}
	})

	t.Run("every answer carries the CSP", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, base+"/ui/login", nil)
		resp, err := harness.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("Content-Security-Policy = %q", csp)
		}
	})
}

func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}
