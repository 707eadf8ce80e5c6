package ingest_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/rules"
)

// TestRuleErrorsKeepValuesAndRulesPrivate (issue 15 items 11 and 2): an
// accept rule that fails on a secret body value, or goes over its budget,
// is answered 422 "not accepted by source X" without the rule's text; the
// log names the rule and holds no body value; each is counted as a rule
// error. A route whose when goes over its budget is a counted rule error
// too, and the event is still accepted.
func TestRuleErrorsKeepValuesAndRulesPrivate(t *testing.T) {
	const secret = "hunter2-secret-value"
	tests := []struct {
		name, accept, when, body string
		status                   int
	}{
		{name: "accept fails on a body value", accept: `int(body.n) > 0`, body: `{"n": "` + secret + `"}`, status: 422},
		{name: "accept over its budget", accept: `all(body.a, {# in body.a})`, body: `{"n": "` + secret + `", "a": [` + strings.Repeat(`"x",`, 3000) + `"x"]}`, status: 422},
		{name: "when over its budget", accept: `true`, when: `let r = 1..1000; all(r, {all(r, {true})})`, body: `{"n": "` + secret + `"}`, status: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			accept, err := rules.CompileBool(tt.accept)
			if err != nil {
				t.Fatal(err)
			}
			cfg := ingest.Config{Sources: []ingest.Source{{Name: "src", Path: hookPath, Accept: accept}}, MaxBody: 1 << 20}
			if tt.when != "" {
				if cfg.Router, err = rules.NewRouter([]rules.Route{{Name: "heavy", When: tt.when, To: []string{"out"}}}); err != nil {
					t.Fatal(err)
				}
			}
			logs := &testlog.Buffer{}
			h := ingest.New(cfg, &recordingAppender{}, slog.New(slog.NewJSONHandler(logs, nil)))
			req := httptest.NewRequest(http.MethodPost, hookPath, bytes.NewReader([]byte(tt.body)))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("POST = %d %s, want %d", rec.Code, rec.Body, tt.status)
			}
			answer := rec.Body.String()
			if tt.status == 422 && (!strings.Contains(answer, `source \"src\" does not accept this event`) || strings.Contains(answer, tt.accept)) {
				t.Errorf("answer %s: want \"not accepted by source src\" without the rule", answer)
			}
			logged := logs.String()
			if strings.Contains(logged, secret) || strings.Contains(answer, secret) {
				t.Errorf("a body value reached the log or the answer:\nlog: %s\nanswer: %s", logged, answer)
			}
			rule := tt.accept
			if tt.when != "" {
				rule = "heavy"
			}
			if !strings.Contains(logged, rule) {
				t.Errorf("log %s: want it to name the rule %s", logged, rule)
			}
			if st := h.Stats(); st.RuleErrors != 1 {
				t.Errorf("Stats().RuleErrors = %d, want 1", st.RuleErrors)
			}
		})
	}
}
