package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// crmOutage is a CRM that answers 503 with Retry-After: 3600 while down,
// and counts what it took by event id once up.
type crmOutage struct {
	*httptest.Server
	down      atomic.Bool
	mu        sync.Mutex
	delivered map[string]int
	refused   int
}

func newCRMOutage(t *testing.T) *crmOutage {
	c := &crmOutage{delivered: map[string]int{}}
	c.down.Store(true)
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.down.Load() {
			c.refused++
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":"down for the day"}`)
			return
		}
		c.delivered[r.Header.Get("webhook-id")]++
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *crmOutage) counts() (refused, delivered int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refused, len(c.delivered)
}

// missing returns the ids of ids the CRM has not taken.
func (c *crmOutage) missing(ids []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, id := range ids {
		if c.delivered[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

// retryNowConfig is a daemon with one http sink crm whose breaker opens
// after breakerFailures failed calls and would then probe only every half
// hour, and whose retries back off up to an hour: nothing but retry-now
// brings the CRM's events before that.
func retryNowConfig(t *testing.T, crmURL string, breakerFailures int) string {
	dir := t.TempDir()
	return harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+fmt.Sprintf(`
[[sink]]
name = "crm"
plugin = "http"
config = { url = %q }
delivery = { batch_wait = "5ms", backoff_min = "1s", backoff_max = "1h", breaker_failures = %d, breaker_probe = "30m", breaker_probe_max = "1h" }
`, crmURL, breakerFailures)+harness.AllCallsRoute("crm"))
}

// postCall posts one CallKaro event and returns its id.
func postCall(t *testing.T, d *harness.Daemon, sid string) string {
	t.Helper()
	code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(sid, "interested"))
	if err != nil || code != http.StatusOK {
		t.Fatalf("POST %s = %d %v %v", sid, code, ans, err)
	}
	return ans["id"].(string)
}

// parkAll posts n events and waits until each waits for a retry about an
// hour ahead (the CRM's Retry-After), which it checks in each event's
// delivery record: the premise of the retry-now tests. The breaker must
// not open meanwhile (events behind an open breaker wait for its probe,
// not for a retry).
func parkAll(t *testing.T, d *harness.Daemon, prefix string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		ids = append(ids, postCall(t, d, fmt.Sprintf("%s-%d", prefix, i)))
	}
	harness.Eventually(t, 30*time.Second, func() error {
		if s := d.Sinks(t)["crm"]; s.Retrying != n || s.Ready != 0 {
			return fmt.Errorf("crm: %d ready, %d retrying; want all %d retrying", s.Ready, s.Retrying, n)
		}
		return nil
	})
	wantParked(t, d, ids)
	return ids
}

// wantParked checks that every event of ids waits for a retry to crm at
// least 50 minutes ahead: retrying (its request got the 503), or queued
// without an attempt (the rest of its batch, not sent after the 503, for
// the same Retry-After).
func wantParked(t *testing.T, d *harness.Daemon, ids []string) {
	t.Helper()
	for _, id := range ids {
		ev, err := d.Admin().Event(context.Background(), id)
		if err != nil {
			t.Fatalf("GET /v1/events/%s: %v", id, err)
		}
		if len(ev.Deliveries) != 1 {
			t.Fatalf("event %s has deliveries %+v, want one to crm", id, ev.Deliveries)
		}
		dl := ev.Deliveries[0]
		if dl.State != "retrying" && dl.State != "queued" || dl.NextAttemptAt == nil || time.Until(*dl.NextAttemptAt) < 50*time.Minute {
			t.Fatalf("event %s: crm delivery %s, next attempt %v; want retrying about an hour ahead (Retry-After: 3600)", id, dl.State, dl.NextAttemptAt)
		}
	}
}

// retryNowDelivers runs pipelined sinks retry-now crm on d, whose breaker
// is closed, wants it to say that every one of ids was made due now, and
// waits up to within for the CRM to have them all.
func retryNowDelivers(t *testing.T, d *harness.Daemon, crm *crmOutage, ids []string, within time.Duration) {
	t.Helper()
	n := len(ids)
	out := d.CLI(t, "sinks", "retry-now", "crm")
	if want := fmt.Sprintf("sink crm: %d events waiting for a retry made due now; its breaker is closed\n", n); out != want {
		t.Errorf("pipelined sinks retry-now crm = %q, want %q", out, want)
	}
	called := time.Now()
	harness.Eventually(t, within, func() error {
		if m := crm.missing(ids); len(m) > 0 {
			return fmt.Errorf("the CRM lacks %d of %d events %v after retry-now", len(m), n, time.Since(called).Round(time.Millisecond))
		}
		return nil
	})
	t.Logf("all %d events delivered %v after retry-now", n, time.Since(called).Round(time.Millisecond))
}

// TestRetryNowAfterRestart: a CRM down for the day answers 503 with
// Retry-After: 3600, and every event waits an hour for its retry. The CRM
// comes back and the daemon is restarted (what it knew in memory of the
// failed calls is gone; its breaker starts closed): nothing would reach
// the CRM for an hour. pipelined sinks retry-now crm makes them due, and
// they are all delivered at once.
func TestRetryNowAfterRestart(t *testing.T) {
	crm := newCRMOutage(t)
	cfg := retryNowConfig(t, crm.URL, 1000) // every event's own failed call parks it
	d := harness.Start(t, cfg)
	const n = 12
	ids := parkAll(t, d, "day-outage", n)

	crm.down.Store(false)
	d.Signal(syscall.SIGTERM)
	<-d.Exited()
	d = harness.Start(t, cfg)
	// The premise, after the restart: still parked an hour ahead, and the
	// CRM has none.
	if got := sinksColumn(t, d.CLI(t, "sinks"), "crm", "RETRYING"); got != fmt.Sprint(n) {
		t.Fatalf("after the restart: pipelined sinks crm RETRYING = %q, want %d", got, n)
	}
	wantParked(t, d, ids)
	if _, delivered := crm.counts(); delivered != 0 {
		t.Fatalf("the CRM took %d events before retry-now", delivered)
	}
	// What the operator sees: delivery resumes in about an hour (read from
	// the log's retry keys: the daemon's memory of the failures is gone).
	if s := d.Sinks(t)["crm"]; s.NextRetrySeconds < 3000 || s.NextRetrySeconds > 3600 {
		t.Errorf("after the restart: /v1/sinks crm next_retry_seconds = %v, want about an hour (Retry-After: 3600)", s.NextRetrySeconds)
	}
	if got := sinksColumn(t, d.CLI(t, "sinks"), "crm", "NEXT_RETRY_SECONDS"); len(got) != 4 || got > "3600" || got < "3000" {
		t.Errorf("after the restart: pipelined sinks crm NEXT_RETRY_SECONDS = %q, want about 3600", got)
	}

	retryNowDelivers(t, d, crm, ids, 15*time.Second)
	queuesEmpty(t, d, 10*time.Second)
	table := d.CLI(t, "sinks")
	for col, want := range map[string]string{"READY": "0", "RETRYING": "0", "DEAD": "0", "BREAKER": "closed", "NEXT_RETRY_SECONDS": "-"} {
		if got := sinksColumn(t, table, "crm", col); got != want {
			t.Errorf("pipelined sinks after retry-now: crm %s = %q, want %q\n%s", col, got, want, table)
		}
	}
	d.WaitLog(t, "sink retry-now: waiting retries due now", 1, 5*time.Second)
	if line := logLine(d.Log(), "sink retry-now"); !strings.Contains(line, `"sink":"crm"`) || !strings.Contains(line, `"hastened":`+fmt.Sprint(n)) || !strings.Contains(line, `"probing":false`) {
		t.Errorf("retry-now's log line = %q, want sink, hastened=%d, probing=false", line, n)
	}
}

// TestRetryNowProbesAnOpenBreaker: the CRM is down, two failed calls
// open the breaker and park their events an hour ahead; the breaker's
// next probe is half an hour away, and the events that come meanwhile
// wait for it. The CRM comes back; retry-now makes the two due and probes
// at once (the answer says probing), and the breaker closes with every
// event delivered. A second call finds nothing to hasten and a closed
// breaker.
func TestRetryNowProbesAnOpenBreaker(t *testing.T) {
	crm := newCRMOutage(t)
	d := harness.Start(t, retryNowConfig(t, crm.URL, 2))
	parked := parkAll(t, d, "probe-now", 1)
	parked = append(parked, postCall(t, d, "probe-now-1"))
	harness.Eventually(t, 10*time.Second, func() error {
		if s := d.Sinks(t)["crm"]; s.Breaker != "open" || s.Retrying != 2 || s.NextProbeSeconds < 60 {
			return fmt.Errorf("crm breaker %q, %d retrying, next probe in %vs; want open, 2 retrying, the probe half an hour away", s.Breaker, s.Retrying, s.NextProbeSeconds)
		}
		return nil
	})
	wantParked(t, d, parked)
	ids := parked
	for i := range 6 {
		ids = append(ids, postCall(t, d, fmt.Sprintf("probe-now-behind-%d", i)))
	}
	n := len(ids)
	harness.Eventually(t, 10*time.Second, func() error {
		if s := d.Sinks(t)["crm"]; s.Ready != n-2 {
			return fmt.Errorf("crm: %d ready, want the %d events behind the open breaker", s.Ready, n-2)
		}
		return nil
	})
	crm.down.Store(false)
	res, err := d.Admin().RetryNow(context.Background(), "crm")
	if err != nil || res.Hastened != 2 || !res.Probing || res.Paused {
		t.Fatalf("POST /v1/sinks/crm/retry-now = %+v, %v; want 2 hastened, probing, not paused", res, err)
	}
	harness.Eventually(t, 15*time.Second, func() error {
		if m := crm.missing(ids); len(m) > 0 {
			return fmt.Errorf("the CRM lacks %d of %d events after retry-now", len(m), n)
		}
		return nil
	})
	queuesEmpty(t, d, 10*time.Second)
	if got := sinksColumn(t, d.CLI(t, "sinks"), "crm", "BREAKER"); got != "closed" {
		t.Errorf("pipelined sinks after retry-now: crm BREAKER = %q, want closed", got)
	}
	if out := d.CLI(t, "sinks", "retry-now", "crm"); out != "sink crm: 0 events waiting for a retry made due now; its breaker is closed\n" {
		t.Errorf("a second retry-now = %q", out)
	}
}

// TestJetStreamClusterRetryNow is TestRetryNowAfterRestart on the
// JetStream log (a cluster of three, R3): the server holds each retry as a
// nak an hour long, which the daemon's restart does not touch; retry-now
// writes each again, due now, and the CRM gets every event, once.
func TestJetStreamClusterRetryNow(t *testing.T) {
	needCluster(t)
	nodes := startCluster(t)
	crm := newCRMOutage(t)
	var urls []string
	for _, n := range nodes {
		urls = append(urls, fmt.Sprintf("%q", n.url()))
	}
	dir := t.TempDir()
	cfg := harness.WriteConfig(t, dir, harness.Listeners("")+fmt.Sprintf(`
[log]
backend = "jetstream"
urls = [%s]
stream = "RN"
replicas = 3
`, strings.Join(urls, ", "))+harness.CallKaroSource+fmt.Sprintf(`
[[sink]]
name = "crm"
plugin = "http"
config = { url = %q }
delivery = { batch_wait = "5ms", backoff_min = "1s", backoff_max = "1h", breaker_failures = 1000 }
`, crm.URL)+harness.AllCallsRoute("crm"))
	d := harness.Start(t, cfg)
	const n = 8
	ids := parkAll(t, d, "js-outage", n)

	crm.down.Store(false)
	d.Signal(syscall.SIGTERM)
	<-d.Exited()
	d = harness.Start(t, cfg)
	wantParked(t, d, ids)
	if _, delivered := crm.counts(); delivered != 0 {
		t.Fatalf("the CRM took %d events before retry-now", delivered)
	}
	retryNowDelivers(t, d, crm, ids, 20*time.Second)
	harness.Eventually(t, 10*time.Second, func() error {
		if s := d.Sinks(t)["crm"]; s.Ready+s.Retrying+s.Dead != 0 {
			return fmt.Errorf("crm: %d ready, %d retrying, %d dead; want an empty queue", s.Ready, s.Retrying, s.Dead)
		}
		return nil
	})
	crm.mu.Lock()
	defer crm.mu.Unlock()
	for id, c := range crm.delivered {
		if c != 1 {
			t.Errorf("the CRM took event %s %d times, want once", id, c)
		}
	}
}
