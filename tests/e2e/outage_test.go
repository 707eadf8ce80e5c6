package e2e

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// TestOutageWaitsAndPauseHolds plays a CRM that is down for longer than the
// old retry budget (12 attempts) with the defaults' shape (no max_attempts,
// max_age 72h, breaker after 5 failed calls), scaled down: the breaker
// opens (pipelined sinks, /metrics, one log line), the event is tried more
// than 12 times and stays out of the DLQ, and only one probe at a time
// goes out. The operator pauses the sink, the CRM comes back, the
// daemon restarts: the pause holds (nothing reaches the CRM while another
// sink gets a new event) until `pipelined sinks resume`, and then every
// event arrives.
func TestOutageWaitsAndPauseHolds(t *testing.T) {
	crm := harness.NewReceiver(t)
	crm.SetAnswer(func(string, []byte) (int, string) { return http.StatusServiceUnavailable, "crm is down" })
	audit := harness.NewReceiver(t)

	dir := t.TempDir()
	cfgFile := harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+fmt.Sprintf(`
[[sink]]
name = "crm"
plugin = "http"
config = { url = %q }
delivery = { batch_wait = "5ms", backoff_min = "10ms", backoff_max = "200ms", breaker_probe = "100ms" }

[[sink]]
name = "audit"
plugin = "http"
config = { url = %q }
delivery = { batch_wait = "5ms" }
`, crm.URL, audit.URL)+harness.AllCallsRoute("crm", "audit"))
	d := harness.Start(t, cfgFile)

	post := func(d *harness.Daemon, sid string) string {
		t.Helper()
		code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(sid, "interested"))
		if err != nil || code != 200 {
			t.Fatalf("POST %s = %d %v %v", sid, code, ans, err)
		}
		return ans["id"].(string)
	}
	first := post(d, "outage-1")
	harness.Eventually(t, 20*time.Second, func() error {
		if got := sinksColumn(t, d.CLI(t, "sinks"), "crm", "BREAKER"); got != "open" {
			return fmt.Errorf("pipelined sinks: crm BREAKER = %q, want open", got)
		}
		return nil
	})
	opened := time.Now()
	if got := d.Metric(t, `pipelined_sink_breaker_open{sink="crm"}`); got != "1" {
		t.Errorf(`pipelined_sink_breaker_open{sink="crm"} = %q, want 1`, got)
	}
	second := post(d, "outage-2")
	// Longer than the old budget: the events are probed past 12 attempts
	// (the probe is the oldest ready event, so the two may take turns).
	harness.Eventually(t, 30*time.Second, func() error {
		if n := len(crm.Attempts()[first]); n <= 12 {
			return fmt.Errorf("the CRM saw %d attempts of the first event, want more than 12", n)
		}
		return nil
	})
	if dl := d.DeadLetters(t, "crm"); len(dl) != 0 {
		t.Errorf("crm's DLQ holds %d events after an outage longer than 12 attempts, want 0", len(dl))
	}
	// While open only probes go out, one per breaker_probe (100ms, then
	// 200ms): at most one request per 100ms after the 5 failed calls.
	requests := 0
	for _, at := range crm.Attempts() {
		requests += len(at)
	}
	if limit := 5 + int(time.Since(opened)/(100*time.Millisecond)) + 1; requests > limit {
		t.Errorf("the CRM got %d requests in the %v since the breaker opened, want at most %d (one probe at a time)", requests, time.Since(opened), limit)
	}
	if n := strings.Count(d.Log(), "sink circuit breaker opened"); n != 1 {
		t.Errorf("log has %d lines \"sink circuit breaker opened\", want 1", n)
	}
	// That line is the one an operator reads (the failed deliveries are
	// not logged one by one): it says why, the CRM's answer, and what to
	// run once the CRM is back.
	for _, line := range strings.Split(d.Log(), "\n") {
		if strings.Contains(line, "sink circuit breaker opened") && (!strings.Contains(line, `"last_error":"POST `) || !strings.Contains(line, "503 Service Unavailable") ||
			!strings.Contains(line, `"when_back":"pipelined sinks retry-now crm"`)) {
			t.Errorf("the line that says the breaker opened does not say why (the CRM's 503), or what to run when it is back:\n%s", line)
		}
	}

	// Maintenance: pause, the CRM is fixed, the daemon restarts.
	if out := d.CLI(t, "sinks", "pause", "crm"); !strings.Contains(out, "sink crm paused") {
		t.Errorf("pipelined sinks pause crm = %q, want it to say paused", out)
	}
	// A pause holds what comes next, not a probe already sent: count the
	// attempts, and fix the CRM, once the daemon has stopped (its shutdown
	// finishes the call in flight).
	d.Signal(syscall.SIGTERM)
	<-d.Exited()
	before := len(crm.Attempts()[first])
	crm.SetAnswer(func(string, []byte) (int, string) { return http.StatusOK, "" })
	d = harness.Start(t, cfgFile)
	if got := sinksColumn(t, d.CLI(t, "sinks"), "crm", "PAUSED"); got != "paused" {
		t.Errorf("after a restart: pipelined sinks crm PAUSED = %q, want paused", got)
	}
	// And /metrics says so, for alerts that tell a paused sink from a
	// lagging one (examples/prometheus/alerts.yml).
	if got, other := d.Metric(t, `pipelined_sink_paused{sink="crm"}`), d.Metric(t, `pipelined_sink_paused{sink="audit"}`); got != "1" || other != "0" {
		t.Errorf("after a restart: /metrics pipelined_sink_paused crm = %q, audit = %q; want 1 and 0", got, other)
	}
	third := post(d, "outage-3")
	// audit delivers the new event: crm's dispatcher had the same chance.
	harness.Eventually(t, 20*time.Second, func() error {
		if audit.Accepted()[third] == 0 {
			return fmt.Errorf("audit has not received %s yet", third)
		}
		return nil
	})
	if got := crm.Accepted(); len(got) != 0 || len(crm.Attempts()[first]) != before {
		t.Fatalf("paused crm received %v (first event attempts %d, %d before the pause), want nothing", got, len(crm.Attempts()[first]), before)
	}

	if out := d.CLI(t, "sinks", "resume", "crm"); !strings.Contains(out, "sink crm resumed") {
		t.Errorf("pipelined sinks resume crm = %q, want it to say resumed", out)
	}
	if got := d.Metric(t, `pipelined_sink_paused{sink="crm"}`); got != "0" {
		t.Errorf("after resume: /metrics pipelined_sink_paused{sink=\"crm\"} = %q, want 0", got)
	}
	harness.Eventually(t, 20*time.Second, func() error {
		got := crm.Accepted()
		for _, id := range []string{first, second, third} {
			if got[id] == 0 {
				return fmt.Errorf("the CRM has not received %s after resume (got %v)", id, got)
			}
		}
		return nil
	})
	queuesEmpty(t, d, 20*time.Second)
	if dl := d.DeadLetters(t, "crm"); len(dl) != 0 {
		t.Errorf("crm's DLQ holds %d events, want 0", len(dl))
	}
}

// TestHTTPSinkWaitsOutAnExpiredToken: the CRM's token expired, so it
// answers every request 401. That is the destination's outage, not a fault
// of the events: the http sink retries, the breaker opens, nothing goes to
// the dead-letter queue, the sink's last error says the status and the
// CRM's words, and each order key's events wait in order. Once the token is
// renewed (200) every event arrives, in order. A second sink, whose
// operator listed 401 in permanent_status, dead-letters the same answers
// as asked.
func TestHTTPSinkWaitsOutAnExpiredToken(t *testing.T) {
	var (
		mu        sync.Mutex
		delivered []string // webhook-ids answered 200, in the order answered
		expired   atomic.Bool
	)
	expired.Store(true)
	crm := harness.NewReceiver(t)
	crm.SetAnswer(func(id string, _ []byte) (int, string) {
		if expired.Load() {
			return http.StatusUnauthorized, `{"error":"token expired"}`
		}
		mu.Lock()
		delivered = append(delivered, id)
		mu.Unlock()
		return http.StatusOK, ""
	})
	strict := harness.NewReceiver(t)
	strict.SetAnswer(func(string, []byte) (int, string) { return http.StatusUnauthorized, `{"error":"token expired"}` })

	dir := t.TempDir()
	d := harness.Start(t, harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+fmt.Sprintf(`
[[sink]]
name = "crm"
plugin = "http"
config = { url = %q }
delivery = { batch_wait = "5ms", backoff_min = "10ms", backoff_max = "200ms", breaker_probe = "100ms", order_key = 'body.data.post_call.lead_status' }

[[sink]]
name = "strict"
plugin = "http"
config = { url = %q, permanent_status = [400, 401, 413, 422] }
delivery = { batch_wait = "5ms" }
`, crm.URL, strict.URL)+harness.AllCallsRoute("crm", "strict")))

	const n = 10
	var ids []string
	byKey := map[string][]string{} // order key → ids in log order
	for i := range n {
		lead := []string{"interested", "not_interested"}[i%2]
		code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(fmt.Sprintf("token-%d", i), lead))
		if err != nil || code != http.StatusOK {
			t.Fatalf("POST %d = %d %v %v", i, code, ans, err)
		}
		id := ans["id"].(string)
		ids = append(ids, id)
		byKey[lead] = append(byKey[lead], id)
	}

	// The outage: retried until the breaker opens, and not one dead letter.
	harness.Eventually(t, 20*time.Second, func() error {
		s := d.Sinks(t)["crm"]
		if s.Dead != 0 {
			t.Fatalf("crm's DLQ holds %d events after 401 answers, want 0 (a 401 is an outage to wait out): %v", s.Dead, d.DeadLetters(t, "crm"))
		}
		if s.Breaker != "open" {
			return fmt.Errorf("crm breaker = %q, want open", s.Breaker)
		}
		if tries := len(crm.Attempts()[ids[0]]); tries < 3 {
			return fmt.Errorf("the CRM saw %d attempts of the first event, want it retried", tries)
		}
		return nil
	})
	if s := d.Sinks(t)["crm"]; !strings.Contains(s.LastError, "401 Unauthorized") || !strings.Contains(s.LastError, "token expired") {
		t.Errorf("crm last_error = %q, want the status and the CRM's answer", s.LastError)
	}
	// The operator who listed 401 in permanent_status gets dead letters.
	harness.Eventually(t, 20*time.Second, func() error {
		if dl := d.DeadLetters(t, "strict"); len(dl) != n {
			return fmt.Errorf("strict's DLQ holds %d events, want %d (permanent_status lists 401)", len(dl), n)
		}
		return nil
	})
	for _, dl := range d.DeadLetters(t, "strict") {
		if !strings.Contains(dl.Error, "401 Unauthorized") || !strings.Contains(dl.Error, "token expired") {
			t.Errorf("strict dead letter %s error = %q, want the status and the receiver's answer", dl.ID, dl.Error)
		}
	}

	// The token is renewed: every event arrives, none dead, each key's in log order.
	expired.Store(false)
	harness.Eventually(t, 30*time.Second, func() error {
		got := crm.Accepted()
		for _, id := range ids {
			if got[id] == 0 {
				return fmt.Errorf("the CRM has %d of %d events after the token was renewed; %s is missing", len(got), n, id)
			}
		}
		return nil
	})
	if dl := d.DeadLetters(t, "crm"); len(dl) != 0 {
		t.Errorf("crm's DLQ holds %d events, want 0", len(dl))
	}
	mu.Lock()
	defer mu.Unlock()
	seen := map[string]bool{}
	got := map[string][]string{}
	for _, id := range delivered {
		if seen[id] { // a redelivery after a 2xx: allowed, at least once
			continue
		}
		seen[id] = true
		for key, kids := range byKey {
			if slices.Contains(kids, id) {
				got[key] = append(got[key], id)
			}
		}
	}
	for key, want := range byKey {
		if !slices.Equal(got[key], want) {
			t.Errorf("order key %q: the CRM got %v, want the log order %v", key, got[key], want)
		}
	}
}

// TestBreakerProbeMaxBoundsTheWaitAfterAnOutage: a CRM down for long
// enough that the breaker's probe interval, doubling from breaker_probe,
// would have grown to seconds (to backoff_max, an hour by default, after
// a day) comes back, and its queue starts to drain within
// breaker_probe_max of its return, not at the next probe of a grown
// interval. Meanwhile `pipelined sinks` and /v1/sinks say when the next
// probe goes.
func TestBreakerProbeMaxBoundsTheWaitAfterAnOutage(t *testing.T) {
	const probeMax = 400 * time.Millisecond
	var down atomic.Bool
	down.Store(true)
	crm := harness.NewReceiver(t)
	crm.SetAnswer(func(string, []byte) (int, string) {
		if down.Load() {
			return http.StatusServiceUnavailable, "crm is down"
		}
		return http.StatusOK, ""
	})
	// backoff_max is the default, 1h: without breaker_probe_max the
	// probes would come 0.1, 0.3, 0.7, 1.5, 3.1, 6.3 and 12.7 s after the
	// breaker opened.
	d := startWithCRM(t, fmt.Sprintf(`config = { url = %q }
delivery = { batch_wait = "5ms", backoff_min = "10ms", breaker_probe = "100ms", breaker_probe_max = %q }`, crm.URL, probeMax.String()))

	const n = 50
	var ids []string
	for i := range n {
		code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(fmt.Sprintf("long-outage-%d", i), "interested"))
		if err != nil || code != http.StatusOK {
			t.Fatalf("POST %d = %d %v %v", i, code, ans, err)
		}
		ids = append(ids, ans["id"].(string))
	}
	harness.Eventually(t, 20*time.Second, func() error {
		if s := d.Sinks(t)["crm"]; s.Breaker != "open" {
			return fmt.Errorf("crm breaker = %q, want open", s.Breaker)
		}
		return nil
	})
	opened := time.Now()
	// The operator sees when the next probe goes (between probes).
	harness.Eventually(t, 10*time.Second, func() error {
		s := d.Sinks(t)["crm"]
		if s.NextProbeSeconds <= 0 || s.NextProbeSeconds > probeMax.Seconds() {
			return fmt.Errorf("/v1/sinks crm next_probe_seconds = %v, want in (0, %v]", s.NextProbeSeconds, probeMax.Seconds())
		}
		return nil
	})
	harness.Eventually(t, 10*time.Second, func() error {
		if got := sinksColumn(t, d.CLI(t, "sinks"), "crm", "NEXT_PROBE_SECONDS"); got != "1" {
			return fmt.Errorf("pipelined sinks: crm NEXT_PROBE_SECONDS = %q, want 1 (at most 0.4 s, rounded up)", got)
		}
		return nil
	})
	// The outage goes on: 8 s after the breaker opened.
	time.Sleep(time.Until(opened.Add(8 * time.Second)))
	if got := len(crm.Accepted()); got != 0 {
		t.Fatalf("the CRM accepted %d events while down", got)
	}
	down.Store(false)
	back := time.Now()
	harness.Eventually(t, 30*time.Second, func() error {
		got := crm.Accepted()
		for _, id := range ids {
			if got[id] == 0 {
				return fmt.Errorf("the CRM has %d of %d events since it came back %v ago", len(got), n, time.Since(back).Round(time.Millisecond))
			}
		}
		return nil
	})
	// breaker_probe_max, the batch and slack for a loaded machine; without
	// the bound the next probe came 4.7 s after the CRM's return.
	if took := time.Since(back); took > probeMax+2*time.Second {
		t.Errorf("the queue drained %v after the CRM came back, want within breaker_probe_max %v (and the time to deliver)", took, probeMax)
	}
	if s := d.Sinks(t)["crm"]; s.Breaker != "closed" || s.NextProbeSeconds != 0 {
		t.Errorf("after the drain: crm breaker = %q, next_probe_seconds = %v; want closed and none", s.Breaker, s.NextProbeSeconds)
	}
}

// TestBackAfterRetryAfterOutage: the CRM is down for maintenance and
// answers 429 with Retry-After: 3600. The failed calls that open the
// breaker schedule their events an hour ahead; new calls keep coming and
// the probes take them. Once the CRM is back and a probe gets through,
// every event is delivered at once, those of the failed calls included:
// the sink is back, they do not wait out the hour behind it.
func TestBackAfterRetryAfterOutage(t *testing.T) {
	var (
		mu        sync.Mutex
		delivered = map[string]int{}
		throttled int
		down      atomic.Bool
	)
	down.Store(true)
	crm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		defer mu.Unlock()
		if down.Load() {
			throttled++
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"error":"maintenance"}`)
			return
		}
		delivered[r.Header.Get("webhook-id")]++
	}))
	t.Cleanup(crm.Close)
	throttledSoFar := func() int {
		mu.Lock()
		defer mu.Unlock()
		return throttled
	}

	d := startWithCRM(t, fmt.Sprintf(`config = { url = %q }
delivery = { batch_wait = "5ms", breaker_failures = 2, breaker_probe = "200ms", breaker_probe_max = "400ms" }`, crm.URL))

	var ids []string
	post := func(sid string) {
		t.Helper()
		code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(sid, "interested"))
		if err != nil || code != http.StatusOK {
			t.Fatalf("POST %s = %d %v %v", sid, code, ans, err)
		}
		ids = append(ids, ans["id"].(string))
	}
	for i := range 20 {
		post(fmt.Sprintf("maintenance-%d", i))
	}
	harness.Eventually(t, 20*time.Second, func() error {
		if s := d.Sinks(t)["crm"]; s.Breaker != "open" || s.Retrying == 0 {
			return fmt.Errorf("crm breaker = %q with %d retrying, want open with the throttled events retrying", s.Breaker, s.Retrying)
		}
		return nil
	})
	// Calls go on during the maintenance; the probes take them and fail.
	for i := range 5 {
		post(fmt.Sprintf("during-%d", i))
	}
	before := throttledSoFar()
	harness.Eventually(t, 10*time.Second, func() error {
		if throttledSoFar() == before {
			return errors.New("no probe has reached the CRM since the breaker opened")
		}
		return nil
	})
	down.Store(false)
	back := time.Now()
	harness.Eventually(t, 20*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if delivered[id] == 0 {
				return fmt.Errorf("the CRM has %d of %d events %v after it came back (the rest wait for Retry-After: 3600?)", len(delivered), len(ids), time.Since(back).Round(time.Millisecond))
			}
		}
		return nil
	})
	queuesEmpty(t, d, 10*time.Second)
	d.WaitLog(t, "retries of the failed calls that opened the breaker brought forward", 1, 5*time.Second)
}

// TestHTTPSink503RetryAfterSendsNoMoreOfTheBatch: the CRM is down for
// maintenance and answers 503 with Retry-After: 3600, and a backlog waits
// with the breaker closed (as after a restart, or a retry-now on a
// restarted daemon). Before, the http sink went on through the batch after
// the first 503, so every event of it was refused and cost an attempt: a
// few restarts and retry-nows dead-lettered a whole backlog (max_attempts
// = 3) that the CRM had never once taken. As after a 429, only the event
// that got the 503 is attempted; the rest of the batch is answered not
// attempted and waits the hour the CRM asked for, at no attempt's cost.
func TestHTTPSink503RetryAfterSendsNoMoreOfTheBatch(t *testing.T) {
	var requests atomic.Int64
	crm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		requests.Add(1)
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":"maintenance"}`)
	}))
	t.Cleanup(crm.Close)
	d := startWithCRM(t, fmt.Sprintf(`config = { url = %q }
delivery = { batch_wait = "5ms", max_attempts = 1 }`, crm.URL))

	// The backlog: paused while it comes in, so that it goes in one batch.
	d.CLI(t, "sinks", "pause", "crm")
	const n = 10
	ids := make([]string, n)
	for i := range n {
		code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(fmt.Sprintf("backlog-%d", i), "interested"))
		if err != nil || code != http.StatusOK {
			t.Fatalf("POST %d = %d %v %v", i, code, ans, err)
		}
		ids[i] = ans["id"].(string)
	}
	d.CLI(t, "sinks", "resume", "crm")
	harness.Eventually(t, 20*time.Second, func() error {
		if s := d.Sinks(t)["crm"]; s.Dead+s.Retrying != n {
			return fmt.Errorf("crm: %d dead, %d retrying, %d ready; want the batch of %d settled", s.Dead, s.Retrying, s.Ready, n)
		}
		return nil
	})
	if got := requests.Load(); got != 1 {
		t.Errorf("the CRM got %d requests for a batch of %d after answering 503 with Retry-After: 3600, want 1", got, n)
	}
	if s := d.Sinks(t)["crm"]; s.Dead != 1 || s.Retrying != n-1 {
		t.Errorf("crm: %d dead, %d retrying; want 1 dead (the event that got the 503, max_attempts = 1) and %d waiting, never attempted", s.Dead, s.Retrying, n-1)
	}
	// The last event of the batch was never sent: no attempt counted.
	for _, line := range strings.Split(d.CLI(t, "events", "show", ids[n-1]), "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[0] == "crm" && f[1] == "all-calls" && f[3] != "0" {
			t.Errorf("the last event of the batch, never sent: %q, want 0 attempts", line)
		}
	}
}

// TestHTTPSinkPlain503OpensTheBreakerAfterFewRequests: the CRM is down
// and answers 503 without Retry-After (a gateway with nothing behind it),
// and a backlog of 60 waits in batches of 20. Before, the http sink sent
// every event of each batch and each cost an attempt: 100 requests before
// the breaker opened after 5 failed calls (2,500 with batch_max = 500).
// Now each call sends one request and answers the rest not attempted: the
// breaker still opens after breaker_failures calls (each call's one
// request is an attempt that failed), the CRM having had one request a
// call, and the events not sent have no attempt counted.
func TestHTTPSinkPlain503OpensTheBreakerAfterFewRequests(t *testing.T) {
	var requests atomic.Int64
	crm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		requests.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "no healthy upstream")
	}))
	t.Cleanup(crm.Close)
	const failures = 5
	d := startWithCRM(t, fmt.Sprintf(`config = { url = %q }
delivery = { batch_max = 20, batch_wait = "5ms", backoff_min = "100ms", backoff_max = "1s", breaker_failures = %d, breaker_probe = "1h" }`, crm.URL, failures))

	d.CLI(t, "sinks", "pause", "crm")
	const n = 60
	ids := make([]string, n)
	for i := range n {
		code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(fmt.Sprintf("down-%d", i), "interested"))
		if err != nil || code != http.StatusOK {
			t.Fatalf("POST %d = %d %v %v", i, code, ans, err)
		}
		ids[i] = ans["id"].(string)
	}
	d.CLI(t, "sinks", "resume", "crm")
	harness.Eventually(t, 30*time.Second, func() error {
		if s := d.Sinks(t)["crm"]; s.Breaker != "open" {
			return fmt.Errorf("crm breaker %q, want open", s.Breaker)
		}
		return nil
	})
	if got := requests.Load(); got != failures {
		t.Errorf("the CRM got %d requests before the breaker opened, want %d (one a call, breaker_failures = %d)", got, failures, failures)
	}
	d.WaitLog(t, "http receiver unavailable: rest of the batch not sent", 1, 5*time.Second)
	// The last event was never sent: no attempt counted.
	for _, line := range strings.Split(d.CLI(t, "events", "show", ids[n-1]), "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[0] == "crm" && f[1] == "all-calls" && f[3] != "0" {
			t.Errorf("the last event of the backlog, never sent: %q, want 0 attempts", line)
		}
	}
}

// TestSlowReceiverDrainsABacklog: the CRM is back after an outage but
// slow, 200 ms a request, and 320 events wait: one batch, one request at a
// time, would take 64 s, longer than the daemon gives a Deliver call (60
// s). A call out of time has none of its results recorded, so before the
// http sink stopped in time every call ran out of it: the CRM got the
// same events again and again and the queue never drained. Now every
// event arrives once, in two calls.
func TestSlowReceiverDrainsABacklog(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute and more")
	}
	crm := harness.NewReceiver(t)
	crm.SetAnswer(func(string, []byte) (int, string) {
		time.Sleep(200 * time.Millisecond)
		return http.StatusOK, ""
	})
	d := startWithCRM(t, fmt.Sprintf(`config = { url = %q, timeout = "1s" }`, crm.URL))

	// The outage, played by a pause: the events wait, then go in one batch.
	d.CLI(t, "sinks", "pause", "crm")
	const n = 320
	var ids []string
	for i := range n {
		code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(fmt.Sprintf("slow-%d", i), "interested"))
		if err != nil || code != http.StatusOK {
			t.Fatalf("POST %d = %d %v %v", i, code, ans, err)
		}
		ids = append(ids, ans["id"].(string))
	}
	d.CLI(t, "sinks", "resume", "crm")
	harness.Eventually(t, 150*time.Second, func() error {
		got := crm.Accepted()
		for _, id := range ids {
			if got[id] == 0 {
				return fmt.Errorf("the CRM has %d of %d events", len(got), n)
			}
		}
		return nil
	})
	for id, c := range crm.Accepted() {
		if c != 1 {
			t.Errorf("the CRM took event %s %d times, want once (no call out of time)", id, c)
		}
	}
	if strings.Contains(d.Log(), "delivery took longer than") {
		t.Errorf("a Deliver call ran out of time:\n%s", d.Log())
	}
	d.WaitLog(t, "http receiver slow: rest of the batch not sent within the call's time", 1, 5*time.Second)
	queuesEmpty(t, d, 10*time.Second)
}

// startWithCRM starts the daemon on the CallKaro source with one http
// sink, crm, to which every call is routed; sink holds the sink's own
// lines (its config and delivery tables).
func startWithCRM(t *testing.T, sink string) *harness.Daemon {
	t.Helper()
	dir := t.TempDir()
	return harness.Start(t, harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+
		"\n[[sink]]\nname = \"crm\"\nplugin = \"http\"\n"+sink+"\n"+harness.AllCallsRoute("crm")))
}
