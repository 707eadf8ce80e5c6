package e2e

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	_ "modernc.org/sqlite"

	"github.com/pipelined/pipelined/tests/harness"
)

// fakeSlack behaves like a Slack incoming webhook: "ok" for a message with
// text, and a 429 with Retry-After on its first request (throttling).
type fakeSlack struct {
	mu       sync.Mutex
	texts    []string
	requests int
}

func (f *fakeSlack) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	if f.requests == 1 {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, "rate_limited")
		return
	}
	var msg struct{ Text string }
	if err := json.NewDecoder(r.Body).Decode(&msg); err != nil || msg.Text == "" {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "no_text")
		return
	}
	f.texts = append(f.texts, msg.Text)
	io.WriteString(w, "ok")
}

// crmReceiver checks every request's Standard Webhooks signature with the
// reference library and records the verified webhook-ids.
type crmReceiver struct {
	wh  *standardwebhooks.Webhook
	mu  sync.Mutex
	ids map[string]int
	bad int
}

func (c *crmReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.wh.Verify(body, r.Header); err != nil {
		c.bad++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	c.ids[r.Header.Get("webhook-id")]++
}

func TestServeDeliversToSQLSlackAndHTTP(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	slack := &fakeSlack{}
	slackSrv := httptest.NewServer(slack)
	defer slackSrv.Close()
	crm := &crmReceiver{wh: wh, ids: map[string]int{}}
	crmSrv := httptest.NewServer(crm)
	defer crmSrv.Close()
	t.Setenv("PIPELINED_E2E_SLACK_URL", slackSrv.URL+"/services/T000/B000/XXXX")
	t.Setenv("PIPELINED_E2E_CRM_SECRET", secret)

	dir := t.TempDir()
	dbPath := filepath.Join(dir, "events.db")
	d := harness.Start(t, harness.WriteConfig(t, dir, callKaroHeader(filepath.Join(dir, "log"))+fmt.Sprintf(`
[[sink]]
name = "db"
plugin = "sql"
config = { driver = "sqlite", path = %q, columns = { call_sid = "data.callSid", seconds = "data.call_duration" }, column_types = { seconds = "real" } }
delivery = { batch_wait = "5ms" }

[[sink]]
name = "slack"
plugin = "slack"
config = { webhook_url_env = "PIPELINED_E2E_SLACK_URL" }
delivery = { batch_wait = "5ms", backoff_min = "100ms", backoff_max = "1s" }

[[sink]]
name = "crm"
plugin = "http"
config = { url = %q, secret_env = "PIPELINED_E2E_CRM_SECRET" }
delivery = { batch_wait = "5ms" }
`, dbPath, crmSrv.URL+"/in")+harness.AllCallsRoute("db")+harness.InterestedRoute("slack", "crm")))

	hook := d.URL + "/hooks/callkaro"
	var all, interested []string
	for i := range 30 {
		lead := "not_interested"
		if i%3 == 0 {
			lead = "interested"
		}
		code, ans, err := harness.Post(hook, harness.CallEvent(fmt.Sprintf("sinks-%d", i), lead))
		if err != nil || code != 200 {
			t.Fatalf("POST = %d %v %v", code, ans, err)
		}
		all = append(all, ans["id"].(string))
		if lead == "interested" {
			interested = append(interested, ans["id"].(string))
		}
	}
	// CallKaro's second copy of an event is absorbed, not delivered again.
	if code, ans, _ := harness.Post(hook, harness.CallEvent("sinks-0", "interested")); code != 200 || ans["duplicate"] != true {
		t.Fatalf("duplicate POST = %d %v, want 200 duplicate=true", code, ans)
	}

	db, err := sql.Open("sqlite", "file:"+dbPath+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rows, distinct int
	var seconds float64
	harness.Eventually(t, 30*time.Second, func() error {
		err := db.QueryRow(`SELECT count(*), count(DISTINCT id), coalesce(sum(seconds), 0) FROM events`).Scan(&rows, &distinct, &seconds)
		slack.mu.Lock()
		texts := len(slack.texts)
		slack.mu.Unlock()
		crm.mu.Lock()
		verified := len(crm.ids)
		crm.mu.Unlock()
		if err != nil || rows != len(all) || texts != len(interested) || verified != len(interested) {
			return fmt.Errorf("%d rows in SQLite (want %d, err %v), %d Slack messages (want %d), %d verified CRM deliveries (want %d)",
				rows, len(all), err, texts, len(interested), verified, len(interested))
		}
		return nil
	})
	if distinct != rows || seconds != float64(120*len(all)) {
		t.Errorf("events table: %d rows, %d distinct ids, sum(seconds) %v; want %d distinct, %d", rows, distinct, seconds, rows, 120*len(all))
	}
	crm.mu.Lock()
	defer crm.mu.Unlock()
	for _, id := range interested {
		if crm.ids[id] == 0 {
			t.Errorf("CRM never got event %s with a valid signature and webhook-id = event id", id)
		}
	}
	if crm.bad != 0 {
		t.Errorf("CRM refused %d requests whose signature the reference library could not verify", crm.bad)
	}
	slack.mu.Lock()
	defer slack.mu.Unlock()
	if slack.requests != len(interested)+1 {
		t.Errorf("Slack got %d requests, want %d messages + 1 throttled (retried after its Retry-After)", slack.requests, len(interested))
	}
}
