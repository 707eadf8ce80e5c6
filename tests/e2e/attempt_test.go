package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// TestAttemptCountsWithinOneQueueing pins what Event.Attempt means (see
// its doc in sdk): the number of this delivery among those of the event's
// current queueing, the same count max_attempts limits. A retry adds one;
// a DLQ retry and a replay queue the event again, with a fresh budget of
// max_attempts, and its Attempt starts again at 1. The http sink's
// envelope carries Attempt to the receiver, which records it per request.
func TestAttemptCountsWithinOneQueueing(t *testing.T) {
	recv := harness.NewReceiver(t)
	var mu sync.Mutex
	var attempts []int
	status := http.StatusServiceUnavailable
	recv.SetAnswer(func(_ string, body []byte) (int, string) {
		var env struct {
			Attempt int `json:"attempt"`
		}
		json.Unmarshal(body, &env)
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, env.Attempt)
		return status, ""
	})
	seen := func() []int {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(attempts)
	}

	dir := t.TempDir()
	cfgFile := harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+fmt.Sprintf(`
[[sink]]
name = "crm"
plugin = "http"
config = { url = %q, body = "envelope" }
delivery = { batch_wait = "5ms", max_attempts = 2, backoff_min = "20ms", backoff_max = "50ms" }
`, recv.URL)+harness.AllCallsRoute("crm"))
	d := harness.Start(t, cfgFile)
	code, ans, err := harness.Post(d.URL+"/hooks/callkaro", harness.CallEvent("attempt-1", "interested"))
	if err != nil || code != 200 {
		t.Fatalf("POST = %d %v %v", code, ans, err)
	}
	id := ans["id"].(string)

	// 503 twice: attempts 1 and 2, then the DLQ (max_attempts = 2).
	harness.Eventually(t, 20*time.Second, func() error {
		if out := d.CLI(t, "dlq", "list", "crm"); !strings.Contains(out, id) {
			return fmt.Errorf("event %s never reached the DLQ; the receiver saw attempts %v", id, seen())
		}
		return nil
	})
	want := []int{1, 2}
	if got := seen(); !slices.Equal(got, want) {
		t.Fatalf("attempts before the DLQ = %v, want %v", got, want)
	}

	// The receiver is fixed; the DLQ retry queues the event again.
	mu.Lock()
	status = http.StatusOK
	mu.Unlock()
	d.CLI(t, "dlq", "retry", "crm", "--all")
	want = append(want, 1)
	harness.Eventually(t, 20*time.Second, func() error {
		if got := seen(); !slices.Equal(got, want) {
			return fmt.Errorf("attempts after the DLQ retry = %v, want %v", got, want)
		}
		return nil
	})
	queuesEmpty(t, d, 20*time.Second)

	// A replay queues it once more.
	d.CLI(t, "replay", "--sink", "crm", "--since", "1h")
	want = append(want, 1)
	harness.Eventually(t, 20*time.Second, func() error {
		if got := seen(); !slices.Equal(got, want) {
			return fmt.Errorf("attempts after the replay = %v, want %v", got, want)
		}
		return nil
	})
}
