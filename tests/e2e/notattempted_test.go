package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// TestSlowReceiverCostsNoAttempts: the http sink starts a request only
// while it can end (its timeout) 2 s before the Deliver call's deadline
// (60 s): with timeout = "57s" and a receiver that takes 300 ms a request,
// a call sends the first few events of its batch and answers the rest
// not attempted (sdk.NotAttempted). Those cost no attempt: with
// max_attempts = 2, every one of a batch of 12 events, sent a few per
// call, is delivered, each once and at its first attempt, and none goes
// to the dead-letter queue, though the later ones were answered not
// attempted two and three times (which, counted as retries, put them in
// the dead-letter queue before the fix). The premise is checked by the
// daemon's own count, pipelined_deliveries_total{outcome="not_attempted"}.
// Real parts: the daemon and the http plugin as built, a Badger log, and
// a receiver on loopback.
func TestSlowReceiverCostsNoAttempts(t *testing.T) {
	const n = 12
	recv := harness.NewReceiver(t)
	var mu sync.Mutex
	attempts := map[string][]int{} // the envelope's attempt, by event id
	recv.SetAnswer(func(id string, body []byte) (int, string) {
		var env struct {
			Attempt int `json:"attempt"`
		}
		json.Unmarshal(body, &env)
		mu.Lock()
		attempts[id] = append(attempts[id], env.Attempt)
		mu.Unlock()
		time.Sleep(300 * time.Millisecond)
		return 200, ""
	})

	dir := t.TempDir()
	cfgFile := harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+fmt.Sprintf(`
[[sink]]
name = "crm"
plugin = "http"
config = { url = %q, body = "envelope", timeout = "57s" }
delivery = { batch_max = 100, batch_wait = "500ms", max_attempts = 2, backoff_min = "50ms", backoff_max = "200ms" }
`, recv.URL)+harness.AllCallsRoute("crm"))
	d := harness.Start(t, cfgFile)

	var ids []string
	for i := range n {
		code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(fmt.Sprintf("slow-%02d", i), "interested"))
		if err != nil || code != 200 {
			t.Fatalf("POST %d = %d %v %v", i, code, ans, err)
		}
		ids = append(ids, ans["id"].(string))
	}

	harness.Eventually(t, 60*time.Second, func() error {
		if got := len(recv.Accepted()); got != n {
			return fmt.Errorf("receiver accepted %d of %d events; dead letters: %d", got, n, len(d.DeadLetters(t, "crm")))
		}
		return nil
	})
	queuesEmpty(t, d, 20*time.Second)

	// The premise: events were answered not attempted, more times than
	// max_attempts allows attempts for some of them (with 12 events a few
	// a call, the last ones at least twice).
	notAttempted, _ := strconv.Atoi(d.Metric(t, `pipelined_deliveries_total{outcome="not_attempted",sink="crm"}`))
	t.Logf("%d events delivered; %d answers not attempted", n, notAttempted)
	if notAttempted < n {
		t.Fatalf(`pipelined_deliveries_total{outcome="not_attempted"} = %d, want at least %d: the receiver was not slow enough for the test's premise (some events answered not attempted twice)`, notAttempted, n)
	}
	if dl := d.DeadLetters(t, "crm"); len(dl) != 0 {
		t.Errorf("dead letters = %d (first: %+v), want none: events not attempted must not run out of max_attempts", len(dl), dl[0])
	}
	if retried := d.Metric(t, `pipelined_deliveries_total{outcome="retried",sink="crm"}`); retried != "0" {
		t.Errorf(`pipelined_deliveries_total{outcome="retried"} = %s, want 0: nothing failed, nothing was retried`, retried)
	}
	mu.Lock()
	for _, id := range ids {
		if got := attempts[id]; len(got) != 1 || got[0] != 1 {
			t.Errorf("event %s reached the receiver with attempts %v, want once, at attempt 1", id, got)
		}
	}
	mu.Unlock()

	// No phantom attempt in the event's record (GET /v1/events/{id}):
	// one attempt, delivered, no failure listed.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range ids {
		ev, err := d.Admin().Event(ctx, id)
		if err != nil {
			t.Fatalf("GET /v1/events/%s: %v", id, err)
		}
		if len(ev.Deliveries) != 1 {
			t.Fatalf("event %s: %d delivery records, want 1 (crm)", id, len(ev.Deliveries))
		}
		if r := ev.Deliveries[0]; r.State != "delivered" || r.Attempts != 1 || len(r.Failures) != 0 || r.LastError != "" {
			t.Errorf("event %s at crm: state %s, %d attempts, failures %+v, last error %q; want delivered at its one attempt, no failure",
				id, r.State, r.Attempts, r.Failures, r.LastError)
		}
	}
}

// TestThrottledBatchCostsNoAttempts: after a 429 the http sink sends no
// more of the batch and answers the rest not attempted, after the 429's
// Retry-After. The receiver throttles its first two requests (Retry-After:
// 1): the event it throttled twice has had its two attempts (max_attempts
// = 2) and is a dead letter, rightly; the nine behind it were not sent
// with it, twice, and arrive once each, at attempt 1, no sooner than the
// Retry-After, none dead (counted as retries before the fix, they all ran
// out of attempts with it).
func TestThrottledBatchCostsNoAttempts(t *testing.T) {
	const n = 10
	var mu sync.Mutex
	requests := 0
	var throttledAt []time.Time
	var firstAfter time.Time       // when the first request after the throttling came
	attempts := map[string][]int{} // the envelope's attempt, by event id, of the requests answered 200
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var env struct {
			Attempt int `json:"attempt"`
		}
		json.Unmarshal(body, &env)
		mu.Lock()
		defer mu.Unlock()
		requests++
		if requests <= 2 {
			throttledAt = append(throttledAt, time.Now())
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		if firstAfter.IsZero() {
			firstAfter = time.Now()
		}
		id := r.Header.Get("webhook-id")
		attempts[id] = append(attempts[id], env.Attempt)
	}))
	t.Cleanup(recv.Close)
	accepted := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(attempts)
	}

	dir := t.TempDir()
	cfgFile := harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+fmt.Sprintf(`
[[sink]]
name = "crm"
plugin = "http"
config = { url = %q, body = "envelope" }
delivery = { batch_max = 100, batch_wait = "500ms", max_attempts = 2, backoff_min = "50ms", backoff_max = "200ms" }
`, recv.URL)+harness.AllCallsRoute("crm"))
	d := harness.Start(t, cfgFile)
	for i := range n {
		code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(fmt.Sprintf("throttled-%02d", i), "interested"))
		if err != nil || code != 200 {
			t.Fatalf("POST %d = %d %v %v", i, code, ans, err)
		}
	}
	harness.Eventually(t, 30*time.Second, func() error {
		if got := accepted(); got != n-1 {
			return fmt.Errorf("receiver accepted %d events, want %d; dead letters: %d", got, n-1, len(d.DeadLetters(t, "crm")))
		}
		return nil
	})
	queuesEmpty(t, d, 20*time.Second)

	notAttempted, _ := strconv.Atoi(d.Metric(t, `pipelined_deliveries_total{outcome="not_attempted",sink="crm"}`))
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d requests; %d answers not attempted", requests, notAttempted)
	if len(throttledAt) != 2 || notAttempted < 2*(n-1) {
		t.Fatalf("premise: %d requests throttled, %d answers not attempted; want 2, and the %d events behind the throttled one not attempted after each", len(throttledAt), notAttempted, n-1)
	}
	if gap := firstAfter.Sub(throttledAt[1]); gap < time.Second-50*time.Millisecond {
		t.Errorf("the first request after the second 429 came %v after it, want >= its Retry-After (1s)", gap)
	}
	for id, got := range attempts {
		if len(got) != 1 || got[0] != 1 {
			t.Errorf("event %s reached the receiver with attempts %v, want once, at attempt 1", id, got)
		}
	}
	dl := d.DeadLetters(t, "crm")
	if len(dl) != 1 {
		t.Fatalf("dead letters = %d, want 1: the event throttled at both its attempts", len(dl))
	}
	if dl[0].Attempts != 2 || !strings.Contains(dl[0].Error, "429") {
		t.Errorf("dead letter = %+v, want 2 attempts, the 429", dl[0])
	}
}

// TestReceiverBackBeforeItsRetryAfter: a receiver down for maintenance
// answers 503 with Retry-After: 3600; the http sink sends no more of the
// batch. Each event it did not send says why in its delivery record
// (not_attempted_reason, which pipelined events show prints), as its last
// error, an attempt's, cannot. The receiver is back a minute later: the
// next webhook is delivered at once, and the ten parked events go with it,
// each once, not an hour later (before, only pipelined sinks retry-now
// released them). Real parts: the daemon and the http plugin as built, a
// Badger log, a receiver on loopback.
func TestReceiverBackBeforeItsRetryAfter(t *testing.T) {
	const n = 10
	var mu sync.Mutex
	down := true
	refused := 0
	got := map[string]int{} // requests answered 200, by webhook-id
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		defer mu.Unlock()
		if down {
			refused++
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		got[r.Header.Get("webhook-id")]++
	}))
	t.Cleanup(recv.Close)
	delivered := func() (events, requests int) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range got {
			events++
			requests += c
		}
		return events, requests
	}

	dir := t.TempDir()
	cfgFile := harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+fmt.Sprintf(`
[[sink]]
name = "crm"
plugin = "http"
config = { url = %q }
delivery = { batch_max = 100, batch_wait = "500ms" }
`, recv.URL)+harness.AllCallsRoute("crm"))
	d := harness.Start(t, cfgFile)
	var ids []string
	for i := range n {
		code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(fmt.Sprintf("parked-%02d", i), "interested"))
		if err != nil || code != 200 {
			t.Fatalf("POST %d = %d %v %v", i, code, ans, err)
		}
		ids = append(ids, ans["id"].(string))
	}
	harness.Eventually(t, 20*time.Second, func() error {
		if s := d.Sinks(t)["crm"]; s.Retrying != n || s.Ready != 0 {
			return fmt.Errorf("crm: %d retrying, %d ready; want all %d parked", s.Retrying, s.Ready, n)
		}
		return nil
	})
	mu.Lock()
	if refused != 1 {
		t.Errorf("premise: the receiver refused %d requests, want 1 (the rest of the batch not sent)", refused)
	}
	down = false
	mu.Unlock()
	why := ""
	for _, id := range ids {
		ev, err := d.Admin().Event(context.Background(), id)
		if err != nil || len(ev.Deliveries) != 1 {
			t.Fatalf("GET /v1/events/%s = %+v, %v", id, ev, err)
		}
		if r := ev.Deliveries[0].NotAttemptedReason; r != "" {
			why = r
		}
	}
	if !strings.Contains(why, "503") {
		t.Errorf("no parked event's not_attempted_reason names the 503: %q", why)
	}

	code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent("after", "interested"))
	if err != nil || code != 200 {
		t.Fatalf("POST after = %d %v %v", code, ans, err)
	}
	harness.Eventually(t, 20*time.Second, func() error {
		if e, _ := delivered(); e != n+1 {
			return fmt.Errorf("receiver took %d events, want %d: the parked ones wait out the Retry-After", e, n+1)
		}
		return nil
	})
	queuesEmpty(t, d, 10*time.Second)
	if e, r := delivered(); r != e {
		t.Errorf("receiver took %d events in %d requests, want each once", e, r)
	}
}
