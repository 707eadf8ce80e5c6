package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// wrapUpMsg is the dispatcher's line when it wraps up a batch at a stop.
const wrapUpMsg = "stop deadline near: asked the sink to wrap up its batch in flight"

// TestStopWrapsUpTheBatchInFlight: SIGTERM while the http sink is in the
// middle of a slow batch (a receiver that takes 300 ms a request, one at a
// time) with shutdown_timeout = "4s". Before the deadline the daemon asks
// the plugin to wrap up: the sink answers for the events the receiver
// took (delivered), cancels the request under way and leaves the rest
// (not attempted), and that answer is settled before the daemon exits. The
// restart delivers the rest: the receiver takes every event exactly once.
// Before WrapUp the call was cancelled at the deadline, its answer lost,
// and the restart sent the whole batch again: the events taken before the
// stop arrived twice. A request the wrap up cut short is not taken (the
// receiver counts an event only once it answered it), as a receiver that
// commits at the end of its request would not.
func TestStopWrapsUpTheBatchInFlight(t *testing.T) {
	harness.SkipIfShort(t)
	const n = 40
	var mu sync.Mutex
	taken := map[string]int{} // by webhook-id: requests answered 200 in full
	cut := 0                  // requests whose client went away before the answer
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
			mu.Lock()
			cut++
			mu.Unlock()
			return
		}
		mu.Lock()
		taken[r.Header.Get("webhook-id")]++
		mu.Unlock()
	}))
	t.Cleanup(recv.Close)
	count := func() (events, dups int) {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range taken {
			events++
			if k > 1 {
				dups++
			}
		}
		return events, dups
	}

	dir := t.TempDir()
	cfg := harness.WriteConfig(t, dir, harness.Listeners(`shutdown_timeout = "4s"`)+
		harness.BadgerLog(filepath.Join(dir, "log"))+harness.CallKaroSource+fmt.Sprintf(`
[[sink]]
name = "crm"
plugin = "http"
config = { url = %q, timeout = "10s" }
delivery = { batch_max = 100, batch_wait = "1s", backoff_min = "50ms", backoff_max = "200ms" }
`, recv.URL)+harness.AllCallsRoute("crm"))
	d := harness.Start(t, cfg)
	ids := map[string]bool{}
	for i := range n {
		code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent(fmt.Sprintf("wrap-%02d", i), "interested"))
		if err != nil || code != http.StatusOK {
			t.Fatalf("POST %d = %d %v %v", i, code, ans, err)
		}
		ids[ans["id"].(string)] = true
	}
	// The premise: the call is under way, a few events taken.
	harness.Eventually(t, 20*time.Second, func() error {
		if got, _ := count(); got < 3 {
			return fmt.Errorf("receiver took %d events, want a few before the stop", got)
		}
		return nil
	})
	d.Signal(syscall.SIGTERM)
	before, _ := count()
	select {
	case <-d.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("pipelined still runs 30s after SIGTERM")
	}
	atStop, _ := count()
	if code := d.ExitCode(); code != 0 {
		t.Errorf("pipelined exited %d after SIGTERM, want 0", code)
	}
	// The premise: the stop came in the middle of the call (the receiver
	// had some events, not all) and wrapped it up.
	if before == 0 || atStop >= n {
		t.Fatalf("receiver took %d events at SIGTERM and %d at the exit, of %d: the stop did not come in the middle of the batch", before, atStop, n)
	}
	if got := logRecords(t, d, wrapUpMsg); len(got) != 1 || got[0]["sink"] != "crm" {
		t.Errorf("lines %q = %v, want one for sink crm", wrapUpMsg, got)
	}
	if got := logRecords(t, d, stopUnsettledMsg); len(got) != 0 {
		t.Errorf("lines %q = %v, want none: the batch wrapped up was settled", stopUnsettledMsg, got)
	}
	t.Logf("receiver took %d events at SIGTERM, %d at the exit; %d requests cut short", before, atStop, cut)

	d2 := harness.Start(t, cfg)
	harness.Eventually(t, 60*time.Second, func() error {
		if got, _ := count(); got < n {
			return fmt.Errorf("receiver took %d of %d events", got, n)
		}
		return nil
	})
	queuesEmpty(t, d2, 20*time.Second)
	mu.Lock()
	defer mu.Unlock()
	for id := range ids {
		if taken[id] != 1 {
			t.Errorf("event %s taken %d times, want exactly once", id, taken[id])
		}
	}
}
