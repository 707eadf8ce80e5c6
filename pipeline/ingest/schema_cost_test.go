package ingest_test

import (
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
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/pipeline/rules"
)

// nestedOneOfSchema is a tree whose nodes are either of two kinds, both
// going on into "next": the JSON Schema library checks both at every
// level of a body, 2^depth checks.
const nestedOneOfSchema = `{
  "$defs": {"node": {"type": "object", "oneOf": [
    {"properties": {"kind": {"const": "a"}, "next": {"$ref": "#/$defs/node"}}},
    {"properties": {"kind": {"const": "b"}, "next": {"$ref": "#/$defs/node"}}}]}},
  "$ref": "#/$defs/node"
}`

// TestSchemaTooComplex (P9): a body nested 30 levels under a schema with a
// nested oneOf, which would hold the library for hours, is answered 422
// "body too complex to check against the schema" at once, counted as a
// 422 and as a rule error (expr "schema"), logged with the schema's name
// and kept with the refused requests; a shallow body under the same schema
// still gets the schema's own answer, and a valid one is accepted.
func TestSchemaTooComplex(t *testing.T) {
	schema, err := rules.CompileSchema("tree.schema.json", []byte(nestedOneOfSchema))
	if err != nil {
		t.Fatal(err)
	}
	db, err := badgerlog.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	audit := ingest.NewAudit(db, nil)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	logs := &testlog.Buffer{}
	app := &recordingAppender{}
	src := ingest.Source{Name: "tree", Path: hookPath, Schema: schema, KeepRejected: time.Hour}
	h := ingest.New(ingest.Config{Sources: []ingest.Source{src}, MaxBody: 1 << 20, Audit: audit, Metrics: m},
		app, slog.New(slog.NewJSONHandler(logs, nil)))

	nested := func(depth int, leaf string) string {
		return strings.Repeat(`{"kind":"a","next":`, depth) + leaf + strings.Repeat(`}`, depth)
	}
	for _, tc := range []struct {
		name, body string
		status     int
		answer     string // a part of the answer
	}{
		{"30 levels", nested(30, `{}`), 422, `body too complex to check against the schema of source \"tree\" (tree.schema.json): it could take more than 65536 checks`},
		{"3 levels, invalid", nested(3, `{}`), 422, `body does not match the schema of source \"tree\" (tree.schema.json)`},
		{"3 levels, valid", nested(3, `{"kind":"b"}`), 200, `"duplicate":false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, hookPath, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.answer) {
				t.Fatalf("POST = %d %s, want %d containing %s", rec.Code, rec.Body, tc.status, tc.answer)
			}
			if strings.Count(strings.TrimSpace(rec.Body.String()), "\n") != 0 {
				t.Errorf("answer %q is not one line", rec.Body)
			}
			var ans map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil {
				t.Fatalf("answer %q: %v", rec.Body, err)
			}
		})
	}
	if err := audit.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if app.len() != 1 {
		t.Errorf("appended %d events, want the valid one", app.len())
	}
	if st := h.Stats(); st.Unprocessable != 2 || st.RuleErrors != 1 {
		t.Errorf("Stats() = %+v, want 2 unprocessable, 1 rule error", st)
	}
	if got := counterValue(t, reg, "pipelined_ingest_requests_total", map[string]string{"outcome": "unprocessable"}); got != 2 {
		t.Errorf(`pipelined_ingest_requests_total{outcome="unprocessable"} = %v, want 2`, got)
	}
	if got := counterValue(t, reg, "pipelined_rule_errors_total", map[string]string{"route": "tree", "expr": "schema"}); got != 1 {
		t.Errorf(`pipelined_rule_errors_total{route="tree",expr="schema"} = %v, want 1`, got)
	}
	l := logs.Lines(t, "rule failed")
	if len(l) != 1 || l[0]["source"] != "tree" || l[0]["expr"] != "schema" || l[0]["rule"] != "tree.schema.json" ||
		!strings.Contains(l[0]["err"].(string), "too complex") {
		t.Errorf("'rule failed' lines = %v, want one naming the source, the schema and the cost", l)
	}
	rs, _, err := db.Rejections(context.Background(), pipeline.RejectionFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, r := range rs {
		if strings.Contains(r.Reason, "too complex") {
			kept = append(kept, r.Reason)
		}
	}
	if len(kept) != 1 || len(rs) != 2 {
		t.Errorf("rejections %v: want the too complex one among two", rs)
	}
}
