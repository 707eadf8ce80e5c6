package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/auth"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/pipeline/rules"
)

// ignoringSource is the reference configuration's CallKaro source: bearer
// auth, ignore every event type but call_ended, the call_ended schema.
func ignoringSource(t testing.TB) ingest.Source {
	t.Helper()
	src := callKaroSource(t)
	src.Accept = nil // ignore keeps other types out; the schema sees call_ended only
	ignore, err := rules.CompileBool(`"event" in body && body.event != "call_ended"`)
	if err != nil {
		t.Fatalf("CompileBool(ignore) = %v", err)
	}
	src.Ignore = ignore
	v, err := auth.New(auth.Spec{Type: "bearer", Secrets: [][]byte{[]byte("secret")}})
	if err != nil {
		t.Fatal(err)
	}
	src.Verifier = v
	return src
}

// TestIgnore: a request the source's ignore rule matches is answered 200
// {"ignored": true, "reason": …}, not appended, counted as "ignored" and
// kept with the refused requests; the rule runs after authentication and
// before the schema, and an array meets the schema, not a rule error.
func TestIgnore(t *testing.T) {
	db, err := badgerlog.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	audit := ingest.NewAudit(db, nil)
	src := ignoringSource(t)
	src.KeepRejected = time.Hour
	reg := prometheus.NewRegistry()
	app := &recordingAppender{}
	logs := &testlog.Buffer{}
	h := ingest.New(ingest.Config{Sources: []ingest.Source{src}, MaxBody: 1 << 20, Audit: audit, Metrics: metrics.New(reg), LogRequests: true},
		app, slog.New(slog.NewJSONHandler(logs, nil)))

	for _, tc := range []struct {
		name, token, body string
		status            int
		ignored           bool
		reason            string // a part of the answer
	}{
		{"another event type", "secret", `{"event": "call_started", "data": {"callSid": "x"}}`, 200, true, `{"ignored":true,"reason":"source \"callkaro\" ignores this event"}`},
		{"another type, unauthenticated", "guess", `{"event": "call_started"}`, 401, false, ""},
		{"an array", "secret", `[{"event": "call_ended"}]`, 422, false, "expected object"},
		{"call_ended, wrong type", "secret", `{"event": "call_ended", "data": {"callSid": "x", "call_duration": "120"}}`, 422, false, "/data/call_duration"},
		{"call_ended", "secret", string(readFile(t, callKaroPayload)), 200, false, `"duplicate":false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, hookPath, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+tc.token)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.reason) {
				t.Fatalf("POST %s = %d %s, want %d containing %q", tc.body, rec.Code, rec.Body, tc.status, tc.reason)
			}
			var ans map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil {
				t.Fatalf("answer %q: %v", rec.Body, err)
			}
			if got := ans["ignored"] == true; got != tc.ignored {
				t.Errorf("answer %s: ignored = %v, want %v", rec.Body, got, tc.ignored)
			}
			if tc.ignored && (len(ans) != 2 || ans["reason"] == "") {
				t.Errorf("answer %s, want exactly {\"ignored\": true, \"reason\": \"…\"}", rec.Body)
			}
		})
	}
	if err := audit.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if app.len() != 1 {
		t.Errorf("appended %d events, want only the call_ended", app.len())
	}
	if l := logs.Lines(t, "webhook ignored"); len(l) != 1 || l[0]["source"] != "callkaro" || !strings.Contains(l[0]["reason"].(string), "ignores this event") {
		t.Errorf("'webhook ignored' lines = %v, want one for source callkaro with the reason", l)
	}
	if got := h.Stats().Ignored; got != 1 {
		t.Errorf("Stats().Ignored = %d, want 1", got)
	}
	if got := counterValue(t, reg, "pipelined_ingest_requests_total", map[string]string{"outcome": "ignored"}); got != 1 {
		t.Errorf(`pipelined_ingest_requests_total{outcome="ignored"} = %v, want 1`, got)
	}
	rs, _, err := db.Rejections(context.Background(), pipeline.RejectionFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, r := range rs {
		if r.Status == http.StatusOK {
			kept = append(kept, string(r.Body))
		}
	}
	if len(kept) != 1 || !bytes.Contains([]byte(kept[0]), []byte("call_started")) {
		t.Errorf("rejection audit kept %q with status 200, want the one ignored call_started", kept)
	}
}

// counterValue is the value of the counter name{labels} in reg (labels
// it does not name may have any value), 0 when reg has no such series.
func counterValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
