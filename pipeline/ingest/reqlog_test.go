package ingest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline/auth"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/writer"
)

// loggedFixture serves testConfig (with logRequests) through a real writer
// on a memlog, logging JSON at INFO into the returned buffer.
func loggedFixture(t *testing.T, logRequests bool) (*fixture, *testlog.Buffer) {
	t.Helper()
	logs := &testlog.Buffer{}
	f := &fixture{log: memlog.New()}
	w := writer.New(f.log, nil)
	t.Cleanup(w.Close)
	f.app = &countingAppender{next: w}
	cfg := testConfig(t)
	cfg.LogRequests = logRequests
	f.h = ingest.New(cfg, f.app, slog.New(slog.NewJSONHandler(logs, nil)))
	f.srv = httptest.NewServer(f.h)
	t.Cleanup(f.srv.Close)
	return f, logs
}

func postJSON(t *testing.T, f *fixture, body []byte) map[string]any {
	t.Helper()
	r := f.do(t, request{contentType: "application/json", body: body})
	var ans map[string]any
	if err := json.Unmarshal(r.body, &ans); err != nil {
		t.Fatalf("POST answered %d %s", r.code, r.body)
	}
	return ans
}

// TestRequestLogLines: one INFO line per webhook, accepted, duplicate or
// refused, with what an operator looks for in each.
func TestRequestLogLines(t *testing.T) {
	f, logs := loggedFixture(t, true)
	first := postJSON(t, f, callKaro(t))
	dup := postJSON(t, f, callKaro(t))
	if dup["duplicate"] != true || dup["id"] != first["id"] {
		t.Fatalf("second POST = %v, want a duplicate of %v", dup, first["id"])
	}
	f.do(t, request{contentType: "application/json", body: []byte(`{"broken`)})
	f.do(t, request{path: "/nowhere", contentType: "application/json", body: []byte(`{}`)})

	acc := logs.Lines(t, "webhook accepted")
	if len(acc) != 1 {
		t.Fatalf("%d 'webhook accepted' lines, want 1", len(acc))
	}
	a := acc[0]
	var gotSinks []string
	for _, s := range a["sinks"].([]any) {
		gotSinks = append(gotSinks, s.(string))
	}
	if a["level"] != "INFO" || a["event_id"] != first["id"] || a["source"] != "callkaro" || a["dedup_key"] != callSid ||
		!slices.Equal(gotSinks, []string{"archive", "db", "slack"}) {
		t.Errorf("accepted line = %v, want INFO, event_id %v, source callkaro, dedup_key %s, sinks [archive db slack]", a, first["id"], callSid)
	}
	if d := logs.Lines(t, "webhook duplicate"); len(d) != 1 || d[0]["event_id"] != first["id"] || d[0]["dedup_key"] != callSid {
		t.Errorf("duplicate lines = %v, want one with the first's event_id %v", d, first["id"])
	}
	ref := logs.Lines(t, "webhook refused")
	if len(ref) != 2 {
		t.Fatalf("refused lines = %v, want 2", ref)
	}
	for i, want := range []struct {
		source string
		status float64
		reason string
	}{
		{"callkaro", http.StatusBadRequest, "JSON"},
		{"", http.StatusNotFound, `"/nowhere"`},
	} {
		r := ref[i]
		if r["level"] != "INFO" || r["source"] != want.source || r["status"] != want.status || !strings.Contains(r["reason"].(string), want.reason) || r["remote"] == "" {
			t.Errorf("refused line %d = %v, want source %q, status %v, reason containing %s, remote", i, r, want.source, want.status, want.reason)
		}
		if _, ok := r["suppressed"]; ok {
			t.Errorf("refused line %d = %v: suppressed without a flood", i, r)
		}
	}
}

// TestRequestLogOff: log_requests = false drops the accepted and duplicate
// lines; refusals are still logged.
func TestRequestLogOff(t *testing.T) {
	f, logs := loggedFixture(t, false)
	postJSON(t, f, callKaro(t))
	postJSON(t, f, callKaro(t))
	f.do(t, request{contentType: "text/plain", body: []byte(`{}`)})
	if n := len(logs.Lines(t, "webhook accepted")) + len(logs.Lines(t, "webhook duplicate")); n != 0 {
		t.Errorf("log_requests = false: %d accepted/duplicate lines, want 0", n)
	}
	if r := logs.Lines(t, "webhook refused"); len(r) != 1 || r[0]["status"] != float64(http.StatusUnsupportedMediaType) {
		t.Errorf("log_requests = false: refused lines = %v, want the 415", r)
	}
}

// TestRefusalFloodIsRateLimited: a flood of one kind of refusal logs a
// handful of lines; another kind (or source) keeps its own budget.
func TestRefusalFloodIsRateLimited(t *testing.T) {
	f, logs := loggedFixture(t, true)
	const flood = 200
	for range flood {
		f.do(t, request{contentType: "application/json", body: []byte(`not json`)})
	}
	f.do(t, request{method: http.MethodGet})
	ref := logs.Lines(t, "webhook refused")
	bad := 0
	for _, r := range ref {
		if r["status"] == float64(http.StatusBadRequest) {
			bad++
		}
	}
	// The limiter refills one a second: a slow machine may log one or two more.
	if bad < 5 || bad > 10 {
		t.Errorf("%d refusals logged %d lines, want 5 (the burst) to 10", flood, bad)
	}
	if last := ref[len(ref)-1]; last["status"] != float64(http.StatusMethodNotAllowed) {
		t.Errorf("the 405 after the flood was not logged: last refused line = %v", last)
	}
}

// TestDuplicateLineTellsCopiesApart: CallKaro sends each call twice, from
// the account-level and the agent-level webhook. The accepted and the
// duplicate line each carry the request's delivery id (the header the
// source's auth names: webhook-id for Standard Webhooks, svix-id in the
// Svix spelling) and the remote address, so an operator can tell which
// copy was stored and which absorbed; their other fields stay.
func TestDuplicateLineTellsCopiesApart(t *testing.T) {
	v, err := auth.New(auth.Spec{Type: auth.TypeStandardWebhooks, Secrets: [][]byte{[]byte(whsecret)}})
	if err != nil {
		t.Fatal(err)
	}
	var logs testlog.Buffer
	cfg := testConfig(t)
	cfg.LogRequests = true
	cfg.Sources[0].Verifier = v
	cfg.Sources[0].DeliveryHeader = strings.ToLower(auth.DeliveryHeader(auth.Spec{Type: auth.TypeStandardWebhooks}))
	w := writer.New(memlog.New(), nil)
	t.Cleanup(w.Close)
	h := ingest.New(cfg, w, slog.New(slog.NewJSONHandler(&logs, nil)))
	body := callKaro(t)
	ts := time.Now().Unix()
	for _, c := range []struct{ prefix, id, remote string }{
		{"webhook", "msg_account", "10.0.0.1:5001"},
		{"svix", "msg_agent", "10.0.0.2:5002"},
	} {
		req := httptest.NewRequest(http.MethodPost, hookPath, bytes.NewReader(body))
		req.RemoteAddr = c.remote
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(c.prefix+"-id", c.id)
		req.Header.Set(c.prefix+"-timestamp", fmt.Sprint(ts))
		req.Header.Set(c.prefix+"-signature", swSign(c.id, ts, body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("POST %s = %d %s, want 200", c.id, rec.Code, rec.Body)
		}
	}
	acc, dup := logs.Lines(t, "webhook accepted"), logs.Lines(t, "webhook duplicate")
	if len(acc) != 1 || len(dup) != 1 {
		t.Fatalf("%d accepted and %d duplicate lines, want 1 each", len(acc), len(dup))
	}
	for _, c := range []struct {
		line       map[string]any
		id, remote string
	}{{acc[0], "msg_account", "10.0.0.1:5001"}, {dup[0], "msg_agent", "10.0.0.2:5002"}} {
		if c.line["delivery_id"] != c.id || c.line["remote"] != c.remote || c.line["source"] != "callkaro" ||
			c.line["dedup_key"] != callSid || c.line["event_id"] != acc[0]["event_id"] {
			t.Errorf("line = %v, want delivery_id %s, remote %s, source, dedup_key and the first event's id", c.line, c.id, c.remote)
		}
	}
	if _, ok := acc[0]["sinks"]; !ok {
		t.Errorf("accepted line = %v, lost its sinks", acc[0])
	}
}
