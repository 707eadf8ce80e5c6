package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// orderReceiver is a CRM that fails a share of requests at random (503)
// and checks the per-key order promise on every request: an event of a
// key is only ever sent once every earlier event of its key was answered
// 2xx (a redelivery of an event already answered 2xx is a duplicate, and
// allowed).
type orderReceiver struct {
	fail float64

	stuck atomic.Pointer[string] // a key whose every request fails

	mu       sync.Mutex
	next     map[string]int // by key: the n of the first event not yet answered 2xx
	requests int
	dups     int
	errs     []string
}

func (r *orderReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	raw, _ := io.ReadAll(req.Body)
	var b struct {
		Data struct {
			K string `json:"k"`
			N int    `json:"n"`
		} `json:"data"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	k, n := b.Data.K, b.Data.N
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	switch next := r.next[k]; {
	case n < next:
		r.dups++
		return // a redelivery of an event answered 2xx: answer 2xx again
	case n > next:
		r.errs = append(r.errs, fmt.Sprintf("key %s: event %d sent before event %d was delivered", k, n, next))
	}
	if st := r.stuck.Load(); st != nil && *st == k {
		http.Error(w, "the test CRM is stuck on this key", http.StatusServiceUnavailable)
		return
	}
	if rand.Float64() < r.fail {
		http.Error(w, "the test CRM fails at random", http.StatusServiceUnavailable)
		return
	}
	if n == r.next[k] {
		r.next[k] = n + 1
	}
}

// delivered counts the events answered 2xx, each once.
func (r *orderReceiver) delivered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.next {
		n += v
	}
	return n
}

// TestOrderKeyKeepsOrderThroughCrashes posts 10,000 events over 50 keys
// (each key's events one after the other, so their log order is known) to
// a sink with delivery.order_key in front of a CRM that fails 20% of
// requests at random. The daemon is killed with SIGKILL when about a third
// has arrived, and the http sink's plugin when about two thirds have: at
// the CRM every key's events arrive in log order (duplicates from
// redelivery allowed), and every event arrives. Until the first third has
// arrived the CRM fails every request of key 0: the other keys flow
// meanwhile (none of key 0's events arrives), and `pipelined sinks` and the
// gauges show keys held.
func TestOrderKeyKeepsOrderThroughCrashes(t *testing.T) {
	keys, perKey := 50, 200
	if testing.Short() {
		keys, perKey = 20, 50
	}
	total := keys * perKey
	crm := &orderReceiver{fail: 0.2, next: map[string]int{}}
	srv := httptest.NewServer(crm)
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	cfgFile := harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+fmt.Sprintf(`
[[sink]]
name = "crm"
plugin = "http"
config = { url = %q, concurrency = 8 }
delivery = { batch_max = 200, batch_wait = "5ms", backoff_min = "20ms", backoff_max = "100ms", breaker_failures = 1000, order_key = 'body.data.k' }
`, srv.URL)+harness.AllCallsRoute("crm"))
	d := harness.Start(t, cfgFile)
	// Paused while posting, so that the kills land in the middle of delivery.
	d.CLI(t, "sinks", "pause", "crm")

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, keys)
	for k := range keys {
		wg.Go(func() {
			for n := range perKey {
				body := fmt.Appendf(nil, `{"event":"call_ended","data":{"callSid":"order-%d-%d","k":"%d","n":%d}}`, k, n, k, n)
				code, ans, err := harness.Post(d.URL+"/hooks/callkaro", body)
				if err != nil || code != http.StatusOK {
					errs <- fmt.Errorf("POST key %d event %d = %d %v %v", k, n, code, ans, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	stuck := "0"
	crm.stuck.Store(&stuck)
	d.CLI(t, "sinks", "resume", "crm")
	posted := time.Now()

	waitDelivered := func(n int, within time.Duration) {
		t.Helper()
		harness.Eventually(t, within, func() error {
			if got := crm.delivered(); got < n {
				return fmt.Errorf("%d of %d events delivered, want %d", got, total, n)
			}
			return nil
		})
	}
	waitDelivered(total/3, 60*time.Second)
	crm.mu.Lock()
	stuckDone := crm.next["0"]
	crm.mu.Unlock()
	if stuckDone != 0 {
		t.Fatalf("%d events of the stuck key 0 delivered, want none", stuckDone)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		table := d.CLI(t, "sinks")
		if n, _ := strconv.Atoi(sinksColumn(t, table, "crm", "HELD_KEYS")); n < 1 {
			return fmt.Errorf("pipelined sinks: crm HELD_KEYS = %d, want at least 1 (key 0)\n%s", n, table)
		}
		if age := sinksColumn(t, table, "crm", "OLDEST_HELD_AGE_SECONDS"); age == "-" {
			return fmt.Errorf("pipelined sinks: crm OLDEST_HELD_AGE_SECONDS = -, want an age\n%s", table)
		}
		if n, _ := strconv.Atoi(d.Metric(t, `pipelined_sink_order_held_keys{sink="crm"}`)); n < 1 {
			return fmt.Errorf(`pipelined_sink_order_held_keys{sink="crm"} = %d, want at least 1`, n)
		}
		if n, _ := strconv.Atoi(d.Metric(t, `pipelined_sink_order_held_events{sink="crm"}`)); n < perKey-1 {
			return fmt.Errorf(`pipelined_sink_order_held_events{sink="crm"} = %d, want at least %d (key 0's)`, n, perKey-1)
		}
		return nil
	})
	crm.stuck.Store(nil)
	d.Kill(syscall.SIGKILL)
	if got := crm.delivered(); got >= total {
		t.Fatalf("all %d events were delivered before the daemon was killed: the test's premise failed", got)
	}
	d = harness.Start(t, cfgFile)
	waitDelivered(2*total/3, 60*time.Second)
	pid := d.SinkPID(t, "crm")
	if pid == 0 {
		t.Fatal("the crm plugin has no pid")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the plugin: %v", err)
	}
	if got := crm.delivered(); got >= total {
		t.Fatalf("all %d events were delivered before the plugin was killed: the test's premise failed", got)
	}
	waitDelivered(total, 120*time.Second)
	t.Logf("posting took %v, delivering %v", posted.Sub(start).Round(time.Millisecond), time.Since(posted).Round(time.Millisecond))

	crm.mu.Lock()
	defer crm.mu.Unlock()
	for i, e := range crm.errs {
		if i == 10 {
			t.Errorf("... and %d more", len(crm.errs)-10)
			break
		}
		t.Error(e)
	}
	t.Logf("%d events over %d keys: %d requests, %d duplicates", total, keys, crm.requests, crm.dups)
}

// TestGiveUpOnTheHeadOfAKey is an operator's morning with the real daemon
// and http plugin: a CRM refuses one caller's first call for ever, the
// caller's later calls wait behind it (held, in the metrics and in events
// show, though no delivery has run since they were held), and `pipelined
// dlq add` gives up on the first: it goes to the dead-letter queue with the
// reason, at once though its retry is minutes away, and the others follow
// in order.
func TestGiveUpOnTheHeadOfAKey(t *testing.T) {
	harness.SkipIfShort(t)
	crm := harness.NewReceiver(t)
	crm.SetAnswer(func(_ string, body []byte) (int, string) {
		if bytes.Contains(body, []byte(`"give-up-0"`)) {
			return http.StatusServiceUnavailable, "phone number rejected"
		}
		return http.StatusOK, ""
	})
	dir := t.TempDir()
	cfgFile := harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+
		harness.HTTPSink("crm", crm.URL, `batch_wait = "5ms", backoff_min = "10m", backoff_max = "1h", order_key = 'body.data.from'`)+
		harness.AllCallsRoute("crm"))
	d := harness.Start(t, cfgFile)
	var ids []string
	for n := range 3 {
		body := fmt.Appendf(nil, `{"event":"call_ended","data":{"callSid":"give-up-%d","from":"919876543210"}}`, n)
		code, ans, err := harness.Post(d.URL+"/hooks/callkaro", body)
		if err != nil || code != http.StatusOK {
			t.Fatalf("POST call %d = %d %v %v", n, code, ans, err)
		}
		ids = append(ids, ans["id"].(string))
		if n == 0 { // the first is under way before the others come
			harness.Eventually(t, 10*time.Second, func() error {
				if s := d.Sinks(t)["crm"]; s.Retrying != 1 {
					return fmt.Errorf("crm retrying %d, want the first call", s.Retrying)
				}
				return nil
			})
		}
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if v := d.Metric(t, `pipelined_sink_order_held_events{sink="crm"}`); v != "2" {
			return fmt.Errorf(`pipelined_sink_order_held_events{sink="crm"} = %q, want 2`, v)
		}
		return nil
	})
	if show := d.CLI(t, "events", "show", ids[1]); !strings.Contains(show, "held") {
		t.Errorf("events show of the second call lacks held:\n%s", show)
	}

	out := d.CLI(t, "dlq", "add", "crm", "--id", ids[0], "--reason", "number rejected, ticket 42")
	if !strings.Contains(out, "gave up on 1 event(s) of crm") {
		t.Errorf("dlq add = %q", out)
	}
	harness.Eventually(t, 20*time.Second, func() error {
		if got := crm.Accepted(); got[ids[1]] != 1 || got[ids[2]] != 1 {
			return fmt.Errorf("the CRM took %v, want the second and third calls once each", got)
		}
		return nil
	})
	if at := crm.Attempts(); !at[ids[1]][0].Before(at[ids[2]][0]) {
		t.Errorf("the CRM had the third call at %v, before the second at %v", at[ids[2]][0], at[ids[1]][0])
	}
	dls := d.DeadLetters(t, "crm")
	if len(dls) != 1 || dls[0].ID != ids[0] || dls[0].Attempts != 1 ||
		!strings.HasPrefix(dls[0].Error, "given up by an operator: number rejected, ticket 42 (last error: ") {
		t.Errorf("crm's dead letters = %+v, want the first call, 1 attempt, with the reason", dls)
	}
}

// postCalls posts n CallKaro calls of one caller to d, with callSids
// prefix-0, prefix-1, …, and returns their event ids.
func postCalls(t *testing.T, d *harness.Daemon, prefix string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		body := fmt.Appendf(nil, `{"event":"call_ended","data":{"callSid":"%s-%d","from":"919876543210"}}`, prefix, i)
		code, ans, err := harness.Post(d.URL+"/hooks/callkaro", body)
		if err != nil || code != http.StatusOK {
			t.Fatalf("POST call %d = %d %v %v", i, code, ans, err)
		}
		ids = append(ids, ans["id"].(string))
	}
	return ids
}

// TestGiveUpHoldsAcrossARestart: a give-up made while the sink is paused is
// still there after the daemon restarts. At the resume, the call given up
// on goes to the dead-letter queue with the reason and no attempt, and the
// CRM has only the other one.
func TestGiveUpHoldsAcrossARestart(t *testing.T) {
	harness.SkipIfShort(t)
	crm := harness.NewReceiver(t)
	dir := t.TempDir()
	cfgFile := harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+
		harness.HTTPSink("crm", crm.URL, `batch_wait = "5ms"`)+harness.AllCallsRoute("crm"))
	d := harness.Start(t, cfgFile)
	d.CLI(t, "sinks", "pause", "crm")
	ids := postCalls(t, d, "restart", 2)
	if out := d.CLI(t, "dlq", "add", "crm", "--id", ids[0], "--reason", "test call"); !strings.Contains(out, "gave up on 1 event(s) of crm") {
		t.Fatalf("dlq add = %q", out)
	}
	d.Kill(syscall.SIGTERM)
	if got := crm.Accepted(); len(got) != 0 {
		t.Fatalf("the paused sink delivered %v before the restart", got)
	}

	d = harness.Start(t, cfgFile)
	if s := d.Sinks(t)["crm"]; !s.Paused || s.Ready != 2 {
		t.Fatalf("crm after the restart: paused %v, ready %d; want paused, 2 ready (the premise)", s.Paused, s.Ready)
	}
	d.CLI(t, "sinks", "resume", "crm")
	harness.Eventually(t, 10*time.Second, func() error {
		if got := crm.Accepted(); got[ids[1]] != 1 {
			return fmt.Errorf("the CRM took %v, want the second call", got)
		}
		if s := d.Sinks(t)["crm"]; s.Dead != 1 {
			return fmt.Errorf("crm has %d dead letters, want the first call", s.Dead)
		}
		return nil
	})
	if got := crm.Accepted(); got[ids[0]] != 0 {
		t.Errorf("the CRM took the call given up on before the restart: %v", got)
	}
	dls := d.DeadLetters(t, "crm")
	if len(dls) != 1 || dls[0].ID != ids[0] || dls[0].Attempts != 0 || dls[0].Error != "given up by an operator: test call" {
		t.Errorf("crm's dead letters = %+v, want the first call, no attempt, with the reason", dls)
	}
}

// TestRenamedSinkKeepsItsQueueInSight: a sink renamed while the daemon was
// stopped leaves events in its old queue; after the start they are listed
// under the old name as a removed sink, the log says what to do, and the
// dead-letter commands reach it, as after a reload that removed it.
func TestRenamedSinkKeepsItsQueueInSight(t *testing.T) {
	harness.SkipIfShort(t)
	crm := harness.NewReceiver(t)
	dir := t.TempDir()
	sink := func(name string) string {
		return callKaroHeader(filepath.Join(dir, "log")) + harness.HTTPSink(name, crm.URL, "") + harness.AllCallsRoute(name)
	}
	cfgFile := harness.WriteConfig(t, dir, sink("crm"))
	d := harness.Start(t, cfgFile)
	d.CLI(t, "sinks", "pause", "crm")
	postCalls(t, d, "renamed", 2)
	d.Kill(syscall.SIGTERM)

	cfgFile = harness.WriteConfig(t, dir, sink("crm-v2"))
	d = harness.Start(t, cfgFile)
	harness.Eventually(t, 20*time.Second, func() error {
		s, ok := d.Sinks(t)["crm"]
		if !ok || s.Plugin != "removed" || s.Ready != 2 {
			return fmt.Errorf("pipelined sinks lists crm as %+v (listed: %v), want removed with 2 ready", s, ok)
		}
		return nil
	})
	// The line may reach the daemon's captured log an instant after the
	// sink is listed.
	d.WaitLog(t, "a sink that is not in the configuration has events in its queue", 1, 5*time.Second)
	if out := d.CLI(t, "dlq", "list", "crm"); strings.Contains(out, "unknown sink") {
		t.Errorf("dlq list crm = %q, want the (empty) dead-letter queue of the removed sink", out)
	}
	if got := crm.Accepted(); len(got) != 0 {
		t.Errorf("the events of the renamed sink were delivered: %v", got)
	}
}
