package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/rules"
)

// The CallKaro example: its documented payload and its schema.
const (
	callKaroSchema  = "../../examples/callkaro/schemas/call_ended.schema.json"
	callKaroPayload = "../../examples/callkaro/call_ended.json"
)

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// callKaroSource is the source of examples/callkaro: accept on the event
// type and the call_ended schema.
// schemaPath is where the test's schema is said to be: a path an answer
// to a sender must not show.
const schemaPath = "/etc/pipelined/schemas/call_ended.schema.json"

func callKaroSource(t testing.TB) ingest.Source {
	t.Helper()
	accept, err := rules.CompileBool(`body.event == "call_ended"`)
	if err != nil {
		t.Fatalf("CompileBool(accept) = %v", err)
	}
	schema, err := rules.CompileSchema(schemaPath, readFile(t, callKaroSchema))
	if err != nil {
		t.Fatalf("CompileSchema(%s) = %v", callKaroSchema, err)
	}
	return ingest.Source{Name: "callkaro", Path: hookPath, Accept: accept, Schema: schema}
}

// recordingAppender keeps what was appended.
type recordingAppender struct {
	mu      sync.Mutex
	entries []pipeline.Entry
}

func (a *recordingAppender) Append(_ context.Context, e pipeline.Entry) (pipeline.Appended, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.entries = append(a.entries, e)
	return pipeline.Appended{ID: e.Event.ID}, nil
}

func (a *recordingAppender) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.entries)
}

// withData returns the documented payload with data's fields changed: a
// nil value removes the field, json.RawMessage sets raw JSON.
func withData(t testing.TB, change map[string]any) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(readFile(t, callKaroPayload), &doc); err != nil {
		t.Fatal(err)
	}
	data := doc["data"].(map[string]any)
	for k, v := range change {
		if v == nil {
			delete(data, k)
		} else {
			data[k] = v
		}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hugeArray(n int, item string) json.RawMessage {
	return json.RawMessage("[" + strings.TrimSuffix(strings.Repeat(item+",", n), ",") + "]")
}

type errorAnswer struct {
	Error      string   `json:"error"`
	Violations []string `json:"violations"`
}

func TestAcceptAndSchema(t *testing.T) {
	null := json.RawMessage("null")
	tests := []struct {
		name string
		body []byte
		code int
		// want are substrings of the answer's error and violations.
		want []string
	}{
		{name: "documented payload", body: readFile(t, callKaroPayload), code: 200},
		{name: "Hindi transcript", body: withData(t, map[string]any{"transcription": "नमस्ते, मुझे आपके प्लान में दिलचस्पी है। कल कॉल कीजिए।"}), code: 200},
		{name: "nulls in optional fields", body: withData(t, map[string]any{
			"batchId": null, "call_duration": null, "post_call": null, "call_metadata": null, "functions_called": null,
			"conversion_status": null, "next_call_scheduled": null, "post_call_detail": null, "time": null}), code: 200},
		{name: "optional fields missing", body: []byte(`{"event": "call_ended", "data": {"callSid": "ck-min-1"}}`), code: 200},
		{name: "custom objects and unknown fields", body: withData(t, map[string]any{
			"call_metadata": map[string]any{"nested": map[string]any{"deep": []any{1, "two", nil}}},
			"post_call":     map[string]any{"lead_status": "interested", "score": 9.5},
			"new_field":     "CallKaro added it later"}), code: 200},
		{name: "float call_duration", body: withData(t, map[string]any{"call_duration": 12.75}), code: 200},

		{name: "call_duration is a string", body: withData(t, map[string]any{"call_duration": "120"}), code: 422,
			want: []string{`schema of source "callkaro" (call_ended.schema.json)`, "/data/call_duration: expected number or null, got string"}},
		{name: "conversion_status is a string", body: withData(t, map[string]any{"conversion_status": "yes"}), code: 422,
			want: []string{"/data/conversion_status: expected boolean or null, got string"}},
		{name: "functions_called success is a string", body: withData(t, map[string]any{
			"functions_called": []any{map[string]any{"name": "update_crm", "success": "true", "timestamp": "2025-12-19T15:25:00.000Z"}}}), code: 422,
			want: []string{"/data/functions_called/0/success: expected boolean or null, got string"}},
		{name: "several wrong types", body: withData(t, map[string]any{"call_duration": "1", "try_count": "2", "from": 3, "to": 4,
			"call_link": 5, "name": 6, "agent": 7}), code: 422,
			want: []string{"/data/agent", "/data/call_duration", "/data/name"}}, // the first five, sorted
		{name: "callSid missing", body: withData(t, map[string]any{"callSid": nil}), code: 422,
			want: []string{`/data: missing required "callSid"`}},
		{name: "data missing", body: []byte(`{"event": "call_ended"}`), code: 422,
			want: []string{`(root): missing required "data"`}},
		{name: "unknown event type", body: []byte(`{"event": "call_started", "data": {"callSid": "ck-1"}}`), code: 422,
			want: []string{`source "callkaro" does not accept this event`}},
		{name: "non-object JSON: array", body: []byte(`[{"event": "call_ended"}]`), code: 422,
			want: []string{`source "callkaro" does not accept this event`}},
		{name: "non-object JSON: string", body: []byte(`"call_ended"`), code: 422, want: []string{"does not accept this event"}},
		{name: "non-object JSON: null", body: []byte(`null`), code: 422, want: []string{"does not accept this event"}},
		{name: "huge functions_called", body: withData(t, map[string]any{
			"functions_called": hugeArray(5000, `{"name":"f","success":true,"timestamp":"t"}`)}), code: 422,
			want: []string{"/data/functions_called: 5000 items, more than the 1000 allowed"}},
		{name: "huge top-level array", body: []byte(hugeArray(100000, "0")), code: 422, want: []string{"does not accept this event"}},
	}
	app := &recordingAppender{}
	h := ingest.New(ingest.Config{Sources: []ingest.Source{callKaroSource(t)}, MaxBody: 1 << 20}, app, nil)
	var wantAppended int
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, hookPath, bytes.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.code {
				t.Fatalf("POST %s = %d %s, want %d", tt.name, rec.Code, rec.Body, tt.code)
			}
			if tt.code == 200 {
				wantAppended++
			}
			if got := app.len(); got != wantAppended {
				t.Errorf("appended %d events, want %d: a rejection must never be appended", got, wantAppended)
			}
			if tt.code != 422 {
				return
			}
			body := rec.Body.String()
			if strings.Count(body, "\n") != 1 || !strings.HasSuffix(body, "\n") {
				t.Errorf("422 body = %q, want one line of JSON", body)
			}
			var ans errorAnswer
			if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil {
				t.Fatalf("422 body %q: %v", body, err)
			}
			if ans.Error == "" || len(ans.Violations) > rules.MaxViolations {
				t.Errorf("422 body = %+v, want an error and at most %d violations", ans, rules.MaxViolations)
			}
			all := ans.Error + "\n" + strings.Join(ans.Violations, "\n")
			if strings.Contains(all, "call_ended\"") || strings.Contains(all, "accept rule") {
				t.Errorf("422 answer = %s: it shows the accept rule to the sender (issue 15 item 11)", body)
			}
			if strings.Contains(all, "/etc/pipelined") {
				t.Errorf("422 answer = %s: it shows the sender where this host keeps its schema", body)
			}
			for _, w := range tt.want {
				if !strings.Contains(all, w) {
					t.Errorf("422 answer = %s\nwant it to contain %q", body, w)
				}
			}
		})
	}
	if st := h.Stats(); st.Unprocessable != 12 {
		t.Errorf("Stats().Unprocessable = %d, want 12", st.Unprocessable)
	}
}

// TestValidateNoRules: a source with neither accept nor schema takes
// anything that is JSON, as before.
func TestValidateNoRules(t *testing.T) {
	src := ingest.Source{Name: "any"}
	cfg := ingest.Config{MaxBody: 1 << 20}
	for _, body := range []string{"null", `"x"`, "[1]", `{"event": "whatever"}`} {
		d := cfg.Decide(&src, ingest.Request{Header: http.Header{"Content-Type": {"application/json"}}, Body: strings.NewReader(body), ContentLength: -1})
		if d.Status != http.StatusOK {
			t.Errorf("Decide(no rules, %s) = %d %q %v; want 200", body, d.Status, d.Error, d.Violations)
		}
	}
}

// TestRejectionsKept: with keep_rejected, rejected requests are kept in the
// log's own keyspace through the audit, listed by the admin API, and gone
// after their keep (Badger's TTL has a granularity of one second).
func TestRejectionsKept(t *testing.T) {
	db, err := badgerlog.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	audit := ingest.NewAudit(db, nil)
	src := callKaroSource(t)
	// The listing below must be done before the keep ends: long enough
	// for a loaded machine (a cold run under load took 0.56 s to list).
	const keep = 3 * time.Second
	src.KeepRejected = keep
	app := &recordingAppender{}
	h := ingest.New(ingest.Config{Sources: []ingest.Source{src}, MaxBody: 1 << 20, Audit: audit}, app, nil)

	post := func(contentType string, body []byte, headers map[string]string) int {
		req := httptest.NewRequest(http.MethodPost, hookPath, bytes.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	big := withData(t, map[string]any{"call_duration": "120", "transcription": strings.Repeat("क", 10000)})
	for _, c := range []struct {
		contentType string
		body        []byte
		want        int
	}{
		{"application/json", big, 422},
		{"application/json", []byte(`{"event": `), 400},
		{"text/plain", []byte(`hello`), 415},
		{"application/json", readFile(t, callKaroPayload), 200},
	} {
		if got := post(c.contentType, c.body, map[string]string{"Authorization": "Bearer secret", "X-Trace": "t1"}); got != c.want {
			t.Fatalf("POST %s %.20q = %d, want %d", c.contentType, c.body, got, c.want)
		}
	}
	posted := time.Now() // after every rejection's ReceivedAt
	if err := audit.Close(context.Background()); err != nil {
		t.Fatalf("Audit.Close = %v", err)
	}
	if app.len() != 1 {
		t.Fatalf("appended %d events, want only the valid one", app.len())
	}
	if st, err := db.Queue("archive").Stats(context.Background()); err != nil || st != (pipeline.QueueStats{}) {
		t.Errorf("queue stats = %+v, %v; rejections never enter sink queues", st, err)
	}

	srv := httptest.NewServer(admin.Handler(admin.Options{Log: db, AllowUnauthenticated: true}))
	defer srv.Close()
	list := func(query string) admin.RejectionList {
		t.Helper()
		resp, err := http.Get(srv.URL + "/v1/rejections" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var l admin.RejectionList
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&l) != nil {
			t.Fatalf("GET /v1/rejections%s = %d", query, resp.StatusCode)
		}
		return l
	}
	got := list("?source=callkaro")
	if len(got.Rejections) != 3 {
		t.Fatalf("GET /v1/rejections = %d rejections, want 3 (422, 400, 415): %+v", len(got.Rejections), got)
	}
	statuses := map[int]admin.Rejection{}
	for _, r := range got.Rejections {
		statuses[r.Status] = r
		if _, ok := r.Headers["authorization"]; ok {
			t.Errorf("rejection %d keeps the Authorization header", r.Status)
		}
		if r.Headers["x-trace"] != "t1" || r.Source != "callkaro" || r.Reason == "" {
			t.Errorf("rejection = %+v, want source, reason and headers", r)
		}
	}
	r422 := statuses[422]
	if !r422.Truncated || len(r422.Body) > ingest.MaxRejectedBody || len(r422.Body) <= ingest.MaxRejectedBody-4 || r422.BodySize != int64(len(big)) {
		t.Errorf("422 rejection: truncated %v, body %d bytes of %d; want the first %d bytes of %d",
			r422.Truncated, len(r422.Body), r422.BodySize, ingest.MaxRejectedBody, len(big))
	}
	if len(r422.Violations) == 0 || !strings.Contains(r422.Violations[0], "/data/call_duration") {
		t.Errorf("422 rejection violations = %q, want /data/call_duration", r422.Violations)
	}
	if alias := list("?rejected=true"); len(alias.Rejections) != 3 {
		// /v1/events?rejected=true is the same list.
		t.Errorf("GET /v1/rejections?rejected=true = %d", len(alias.Rejections))
	}
	resp, err := http.Get(srv.URL + "/v1/events?rejected=true")
	if err == nil {
		var l admin.RejectionList
		json.NewDecoder(resp.Body).Decode(&l)
		resp.Body.Close()
		if len(l.Rejections) != 3 {
			t.Errorf("GET /v1/events?rejected=true = %d rejections, want 3", len(l.Rejections))
		}
	}

	// Badger's TTL is in whole seconds: gone within a second after keep.
	deadline := posted.Add(keep + 2*time.Second)
	for len(list("").Rejections) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("rejections kept for %v are still listed %v after they were posted", keep, time.Since(posted).Round(time.Millisecond))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAuditDropsWhenFull: a full audit queue drops instead of blocking.
func TestAuditDropsWhenFull(t *testing.T) {
	bl := &blockingLog{release: make(chan struct{})}
	a := ingest.NewAudit(bl, &ingest.AuditOptions{Queue: 2})
	done := make(chan struct{})
	go func() {
		for i := range 100 {
			a.Keep(pipeline.Rejection{Source: fmt.Sprint(i)})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Keep blocked on a full queue")
	}
	close(bl.release)
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := bl.n; n > 3 {
		t.Errorf("the log got %d rejections, want at most 3 (queue of 2 plus one in flight)", n)
	}
}

type blockingLog struct {
	release chan struct{}
	n       int
}

func (l *blockingLog) Reject(ctx context.Context, r pipeline.Rejection) (int, error) {
	<-l.release
	l.n++
	return 0, nil
}

func (l *blockingLog) Rejections(context.Context, pipeline.RejectionFilter) ([]pipeline.Rejection, string, error) {
	return nil, "", nil
}
