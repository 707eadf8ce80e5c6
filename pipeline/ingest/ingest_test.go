package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/rules"
	"github.com/pipelined/pipelined/pipeline/writer"
)

const (
	hookPath = "/hooks/callkaro"
	maxBody  = 4096
	// callSid is the dedup key of testdata/call_ended.json.
	callSid = "2303fa770b666a64ab1694c1e"
)

// sinks every route of testConfig can send to; "archive" gets every event.
var sinks = []string{"archive", "db", "slack", "never"}

func testConfig(t testing.TB) ingest.Config {
	t.Helper()
	dedup, err := rules.CompileValue("body.data.callSid")
	if err != nil {
		t.Fatalf("CompileValue(dedup key) error = %v", err)
	}
	router, err := rules.NewRouter([]rules.Route{
		// Fails at run time on the CallKaro payload: len of a number.
		{Name: "broken", When: "len(body.data.call_duration) > 0", To: []string{"never"}},
		{Name: "everything", When: "true", To: []string{"archive", "db"}},
		{Name: "leads", When: `body.data.post_call.lead_status == "interested"`, To: []string{"slack"},
			Transform: `{"text": "Interested lead from " + body.data.from}`},
	})
	if err != nil {
		t.Fatalf("NewRouter() error = %v", err)
	}
	return ingest.Config{
		Sources: []ingest.Source{{Name: "callkaro", Path: hookPath, DedupKey: dedup, DedupWindow: time.Hour}},
		Router:  router,
		MaxBody: maxBody,
	}
}

// countingAppender counts the appends that succeeded.
type countingAppender struct {
	next ingest.Appender
	ok   atomic.Int64
}

func (a *countingAppender) Append(ctx context.Context, e pipeline.Entry) (pipeline.Appended, error) {
	res, err := a.next.Append(ctx, e)
	if err == nil {
		a.ok.Add(1)
	}
	return res, err
}

// failingAppender fails every append with err.
type failingAppender struct{ err error }

func (a failingAppender) Append(context.Context, pipeline.Entry) (pipeline.Appended, error) {
	return pipeline.Appended{}, a.err
}

type fixture struct {
	log *memlog.Log
	app *countingAppender
	h   *ingest.Handler
	srv *httptest.Server
}

// newFixture serves testConfig over HTTP, appending through app, or through
// a real writer on a memlog when app is nil.
func newFixture(t testing.TB, app ingest.Appender) *fixture {
	t.Helper()
	f := &fixture{log: memlog.New()}
	if app == nil {
		w := writer.New(f.log, nil)
		t.Cleanup(w.Close)
		app = w
	}
	f.app = &countingAppender{next: app}
	f.h = ingest.New(testConfig(t), f.app, nil)
	f.srv = httptest.NewServer(f.h)
	t.Cleanup(f.srv.Close)
	return f
}

func callKaro(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/call_ended.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// callKaroWith returns the CallKaro payload with another callSid.
func callKaroWith(t testing.TB, sid string) []byte {
	t.Helper()
	return bytes.Replace(callKaro(t), []byte(callSid), []byte(sid), 1)
}

// padded returns a JSON object of exactly n bytes.
func padded(n int) []byte {
	const frame = `{"p":""}`
	return []byte(`{"p":"` + strings.Repeat("x", n-len(frame)) + `"}`)
}

type request struct {
	method, path, contentType string
	body                      []byte
	chunked                   bool // send without Content-Length
	headers                   map[string]string
}

type response struct {
	code   int
	header http.Header
	body   []byte
}

func (f *fixture) do(t testing.TB, r request) response {
	t.Helper()
	resp, err := f.send(r)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// send is do for a goroutine other than the test's: it returns what went
// wrong instead of failing the test, for the test goroutine to report.
func (f *fixture) send(r request) (response, error) {
	if r.method == "" {
		r.method = http.MethodPost
	}
	if r.path == "" {
		r.path = hookPath
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
		if r.chunked {
			body = io.MultiReader(body) // hides the length
		}
	}
	req, err := http.NewRequest(r.method, f.srv.URL+r.path, body)
	if err != nil {
		return response{}, err
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	for k, v := range r.headers {
		req.Header.Set(k, v)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	defer resp.Body.Close()
	if r.chunked && req.ContentLength != -1 && req.ContentLength != 0 {
		return response{}, fmt.Errorf("request ContentLength = %d, want unknown", req.ContentLength)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: read response: %w", r.method, r.path, err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: b}, nil
}

// checkOneLineJSON checks that the response is one line of JSON and
// decodes it into v.
func checkOneLineJSON(t testing.TB, r response, v any) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if !bytes.HasSuffix(r.body, []byte("\n")) || bytes.Count(r.body, []byte("\n")) != 1 {
		t.Errorf("body = %q, want one line ending in a newline", r.body)
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Errorf("decode body %q: %v", r.body, err)
	}
}

func (f *fixture) queueStats(t testing.TB, sink string) pipeline.QueueStats {
	t.Helper()
	st, err := f.log.Queue(sink).Stats(context.Background())
	if err != nil {
		t.Fatalf("Queue(%s).Stats() error = %v", sink, err)
	}
	return st
}

// checkNothingAppended checks that no event reached the log.
func (f *fixture) checkNothingAppended(t testing.TB) {
	t.Helper()
	if n := f.app.ok.Load(); n != 0 {
		t.Errorf("successful appends = %d, want 0", n)
	}
	for _, s := range sinks {
		if st := f.queueStats(t, s); st != (pipeline.QueueStats{}) {
			t.Errorf("Queue(%s).Stats() = %+v, want empty", s, st)
		}
	}
}

// TestRejects is P7: bad input gets a clear answer and changes nothing.
func TestRejects(t *testing.T) {
	tooBig := padded(maxBody + 1)
	ck := callKaro(t)
	tests := []struct {
		name      string
		app       ingest.Appender // nil: a real writer
		req       request
		wantCode  int
		wantError string // in the error message
		wantAllow string
		// wantStats is the handler's counters after the request.
		wantStats ingest.Stats
	}{
		{name: "malformed JSON", req: request{contentType: "application/json", body: []byte(`{"event":`)},
			wantCode: 400, wantError: "not valid JSON", wantStats: ingest.Stats{Rejected: 1}},
		{name: "trailing garbage", req: request{contentType: "application/json", body: []byte(`{}x`)},
			wantCode: 400, wantError: "not valid JSON", wantStats: ingest.Stats{Rejected: 1}},
		{name: "two documents", req: request{contentType: "application/json", body: []byte(`{} {}`)},
			wantCode: 400, wantError: "not valid JSON", wantStats: ingest.Stats{Rejected: 1}},
		{name: "empty body", req: request{contentType: "application/json", body: []byte{}},
			wantCode: 400, wantError: "not valid JSON", wantStats: ingest.Stats{Rejected: 1}},
		{name: "no body", req: request{contentType: "application/json"},
			wantCode: 400, wantError: "not valid JSON", wantStats: ingest.Stats{Rejected: 1}},
		{name: "unknown path", req: request{path: "/hooks/other", contentType: "application/json", body: []byte(`{}`)},
			wantCode: 404, wantError: `no source is configured at path "/hooks/other"`, wantStats: ingest.Stats{Rejected: 1}},
		{name: "path with trailing slash", req: request{path: hookPath + "/", contentType: "application/json", body: []byte(`{}`)},
			wantCode: 404, wantError: "no source", wantStats: ingest.Stats{Rejected: 1}},
		{name: "GET", req: request{method: "GET"},
			wantCode: 405, wantError: "method GET is not allowed", wantAllow: "POST", wantStats: ingest.Stats{Rejected: 1}},
		{name: "PUT", req: request{method: "PUT", contentType: "application/json", body: []byte(`{}`)},
			wantCode: 405, wantError: "method PUT is not allowed", wantAllow: "POST", wantStats: ingest.Stats{Rejected: 1}},
		{name: "too big with Content-Length", req: request{contentType: "application/json", body: tooBig},
			wantCode: 413, wantError: "larger than the limit of 4096 bytes", wantStats: ingest.Stats{Rejected: 1}},
		{name: "too big chunked", req: request{contentType: "application/json", body: tooBig, chunked: true},
			wantCode: 413, wantError: "larger than the limit of 4096 bytes", wantStats: ingest.Stats{Rejected: 1}},
		{name: "text/plain", req: request{contentType: "text/plain", body: []byte(`{}`)},
			wantCode: 415, wantError: `content type "text/plain" is not JSON`, wantStats: ingest.Stats{Rejected: 1}},
		{name: "no content type", req: request{body: []byte(`{}`)},
			wantCode: 415, wantError: `content type "" is not JSON`, wantStats: ingest.Stats{Rejected: 1}},
		{name: "form", req: request{contentType: "application/x-www-form-urlencoded", body: []byte(`{}`)},
			wantCode: 415, wantError: "is not JSON", wantStats: ingest.Stats{Rejected: 1}},
		{name: "json as a suffix without plus", req: request{contentType: "application/xjson", body: []byte(`{}`)},
			wantCode: 415, wantError: "is not JSON", wantStats: ingest.Stats{Rejected: 1}},
		{name: "gzip content encoding", req: request{contentType: "application/json", body: []byte(`{}`), headers: map[string]string{"Content-Encoding": "gzip"}},
			wantCode: 415, wantError: `content encoding "gzip" is not supported: send the body uncompressed`, wantStats: ingest.Stats{Rejected: 1}},
		{name: "json text type", req: request{contentType: "text/json", body: []byte(`{}`)},
			wantCode: 415, wantError: "is not JSON", wantStats: ingest.Stats{Rejected: 1}},
		{name: "content type that does not parse", req: request{contentType: "application/json; =", body: []byte(`{}`)},
			wantCode: 415, wantError: "is not JSON", wantStats: ingest.Stats{Rejected: 1}},
		{name: "log full", app: failingAppender{fmt.Errorf("append: badger: %w", pipeline.ErrFull)},
			req:      request{contentType: "application/json", body: ck},
			wantCode: 503, wantError: "full", wantStats: ingest.Stats{Unavailable: 1, RuleErrors: 1}},
		{name: "log halted", app: failingAppender{fmt.Errorf("%w after a failed write: %w", pipeline.ErrHalted, fmt.Errorf("write event log: %w", pipeline.ErrFull))},
			req:      request{contentType: "application/json", body: ck},
			wantCode: 503, wantError: "stopped writing after a failed write, and pipelined restarts to recover it", wantStats: ingest.Stats{Unavailable: 1, RuleErrors: 1}},
		{name: "writer overloaded", app: failingAppender{fmt.Errorf("wrapped: %w", writer.ErrOverloaded)},
			req:      request{contentType: "application/json", body: ck},
			wantCode: 503, wantError: "overloaded", wantStats: ingest.Stats{Unavailable: 1, RuleErrors: 1}},
		{name: "log closed", app: failingAppender{fmt.Errorf("append: %w", pipeline.ErrClosed)},
			req:      request{contentType: "application/json", body: ck},
			wantCode: 503, wantError: "shutting down", wantStats: ingest.Stats{Unavailable: 1, RuleErrors: 1}},
		{name: "given up on by the writer's shutdown", app: failingAppender{fmt.Errorf("append: %w (context deadline exceeded)", writer.ErrAbandoned)},
			req:      request{contentType: "application/json", body: ck},
			wantCode: 503, wantError: "shutting down and its event log did not commit the event in time", wantStats: ingest.Stats{Unavailable: 1, RuleErrors: 1}},
		{name: "writer closed", app: closedWriter(),
			req:      request{contentType: "application/json", body: ck},
			wantCode: 503, wantError: "shutting down", wantStats: ingest.Stats{Unavailable: 1, RuleErrors: 1}},
		{name: "event too big for the log", app: failingAppender{fmt.Errorf("append too big for one atomic write: jetstream: nats: maximum payload exceeded: %w", pipeline.ErrTooBig)},
			req:      request{contentType: "application/json", body: ck},
			wantCode: 413, wantError: "event too large for the event log to store in one write", wantStats: ingest.Stats{Rejected: 1, RuleErrors: 1}},
		{name: "other append error", app: failingAppender{errors.New("disk on fire")},
			req:      request{contentType: "application/json", body: ck},
			wantCode: 503, wantError: "cannot take the event", wantStats: ingest.Stats{Unavailable: 1, RuleErrors: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.app)
			r := f.do(t, tt.req)
			if r.code != tt.wantCode {
				t.Errorf("%s %s = %d %s, want %d", tt.req.method, tt.name, r.code, r.body, tt.wantCode)
			}
			var body struct{ Error string }
			checkOneLineJSON(t, r, &body)
			if !strings.Contains(body.Error, tt.wantError) {
				t.Errorf("error = %q, want it to contain %q", body.Error, tt.wantError)
			}
			if got := r.header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tt.wantAllow)
			}
			wantRetry := ""
			if tt.wantCode == http.StatusServiceUnavailable {
				wantRetry = "1"
			}
			if got := r.header.Get("Retry-After"); got != wantRetry {
				t.Errorf("Retry-After = %q, want %q", got, wantRetry)
			}
			if got := f.h.Stats(); got != tt.wantStats {
				t.Errorf("Stats() = %+v, want %+v", got, tt.wantStats)
			}
			f.checkNothingAppended(t)
		})
	}
}

func closedWriter() ingest.Appender {
	w := writer.New(memlog.New(), nil)
	w.Close()
	return w
}

// TestAccepts checks the content types and sizes that are taken.
func TestAccepts(t *testing.T) {
	tests := []struct {
		name string
		req  request
	}{
		{"application/json", request{contentType: "application/json", body: []byte(`{}`)}},
		{"charset", request{contentType: "application/json; charset=utf-8", body: []byte(`{}`)}},
		{"upper case", request{contentType: "Application/JSON", body: []byte(`{}`)}},
		{"cloudevents", request{contentType: "application/cloudevents+json", body: []byte(`{}`)}},
		{"vendor type", request{contentType: "application/vnd.api+json; charset=utf-8", body: []byte(`{}`)}},
		{"array", request{contentType: "application/json", body: []byte(`[1, 2]`)}},
		{"null", request{contentType: "application/json", body: []byte(`null`)}},
		{"surrounding space", request{contentType: "application/json", body: []byte(" \n{}\n ")}},
		{"number beyond float64", request{contentType: "application/json", body: []byte(`{"n": 1e400, "m": [-1e999, 2]}`)}},
		{"exactly max body", request{contentType: "application/json", body: padded(maxBody)}},
		{"exactly max body chunked", request{contentType: "application/json", body: padded(maxBody), chunked: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			r := f.do(t, tt.req)
			if r.code != http.StatusOK {
				t.Fatalf("POST %s = %d %s, want 200", tt.name, r.code, r.body)
			}
			var res ingest.Response
			checkOneLineJSON(t, r, &res)
			ev, err := f.log.Event(context.Background(), res.ID)
			if err != nil {
				t.Fatalf("Event(%q) error = %v", res.ID, err)
			}
			if !bytes.Equal(ev.Body, tt.req.body) {
				t.Errorf("Event(%q).Body = %q, want %q", res.ID, ev.Body, tt.req.body)
			}
			if st := f.queueStats(t, "archive"); st.Ready != 1 {
				t.Errorf("Queue(archive).Stats() = %+v, want Ready 1", st)
			}
		})
	}
}

// TestAccept follows the CallKaro payload through the handler: the event as
// stored, its routing, and its duplicate (P4).
func TestAccept(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	payload := callKaro(t)
	r := f.do(t, request{contentType: "application/json", body: payload, headers: map[string]string{
		"Authorization":       "Bearer secret",
		"Cookie":              "session=secret",
		"Proxy-Authorization": "Basic secret",
		"X-Request-ID":        "req-1",
		"Webhook-Signature":   "v1,abc",
	}})
	if r.code != http.StatusOK {
		t.Fatalf("POST = %d %s, want 200", r.code, r.body)
	}
	var raw map[string]any
	checkOneLineJSON(t, r, &raw)
	id, _ := raw["id"].(string)
	if len(raw) != 2 || id == "" || raw["duplicate"] != false {
		t.Fatalf("response = %s, want {\"id\": \"...\", \"duplicate\": false}", r.body)
	}

	ev, err := f.log.Event(ctx, id)
	if err != nil {
		t.Fatalf("Event(%q) error = %v", id, err)
	}
	if !bytes.Equal(ev.Body, payload) {
		t.Errorf("Event.Body = %q, want the posted bytes %q", ev.Body, payload)
	}
	if ev.ID != id || ev.Source != "callkaro" || ev.Auth != "none" || ev.ReceivedAt.IsZero() || ev.ReceivedAt.Location() != time.UTC {
		t.Errorf("Event = {ID %q, Source %q, Auth %q, ReceivedAt %v}, want {%q, callkaro, none, a UTC time}",
			ev.ID, ev.Source, ev.Auth, ev.ReceivedAt, id)
	}
	for _, h := range []string{"authorization", "cookie", "proxy-authorization", "webhook-signature"} {
		if v, ok := ev.Headers[h]; ok {
			t.Errorf("Event.Headers[%q] = %q, want no such header (credentials are not stored)", h, v)
		}
	}
	wantHeaders := map[string]string{"x-request-id": "req-1", "content-type": "application/json"}
	for k, want := range wantHeaders {
		if got := ev.Headers[k]; got != want {
			t.Errorf("Event.Headers[%q] = %q, want %q", k, got, want)
		}
	}
	for k := range ev.Headers {
		if k != strings.ToLower(k) {
			t.Errorf("Event.Headers has %q, want lower-case names", k)
		}
	}

	// Fan-out: every matching route, and the broken one does not stop them.
	wantQueues := map[string]pipeline.QueueStats{"archive": {Ready: 1}, "db": {Ready: 1}, "slack": {Ready: 1}, "never": {}}
	for s, want := range wantQueues {
		if got := f.queueStats(t, s); got != want {
			t.Errorf("Queue(%s).Stats() = %+v, want %+v", s, got, want)
		}
	}
	checkDelivery(t, f.log.Queue("slack"), id, "leads", `{"text":"Interested lead from 919876543210"}`)
	checkDelivery(t, f.log.Queue("archive"), id, "everything", "")
	if got, want := f.h.Stats(), (ingest.Stats{Accepted: 1, RuleErrors: 1}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}

	// The same dedup key again: the first id, and nothing routed again.
	r = f.do(t, request{contentType: "application/json", body: payload, headers: map[string]string{"X-Request-ID": "req-2"}})
	var res ingest.Response
	checkOneLineJSON(t, r, &res)
	if r.code != http.StatusOK || res != (ingest.Response{ID: id, Duplicate: true}) {
		t.Errorf("POST again = %d %+v, want 200 %+v", r.code, res, ingest.Response{ID: id, Duplicate: true})
	}
	for _, s := range []string{"archive", "db", "slack"} {
		// One entry each, leased by checkDelivery or not.
		if got := f.queueStats(t, s); got != (pipeline.QueueStats{Ready: 1}) {
			t.Errorf("after the duplicate, Queue(%s).Stats() = %+v, want Ready 1", s, got)
		}
	}

	// Another call is another event.
	r = f.do(t, request{contentType: "application/json", body: callKaroWith(t, "other-call")})
	checkOneLineJSON(t, r, &res)
	if r.code != http.StatusOK || res.Duplicate || res.ID == id || res.ID == "" {
		t.Errorf("POST another call = %d %+v, want 200 with a new id", r.code, res)
	}
	// Routes are evaluated before the writer finds the duplicate: the
	// broken route fails once per request.
	if got, want := f.h.Stats(), (ingest.Stats{Accepted: 2, Duplicates: 1, RuleErrors: 3}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

// checkDelivery fetches the one entry of q and checks it.
func checkDelivery(t testing.TB, q pipeline.Queue, id, route, payload string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ds, err := q.Fetch(ctx, 10)
	if err != nil || len(ds) != 1 {
		t.Fatalf("Fetch() = %d deliveries, %v; want 1", len(ds), err)
	}
	d := ds[0]
	if d.Event.ID != id || d.Route != route || string(d.Payload) != payload {
		t.Errorf("Fetch() = {ID %q, Route %q, Payload %q}, want {%q, %q, %q}", d.Event.ID, d.Route, d.Payload, id, route, payload)
	}
}

// TestRuleErrors checks that a failing expression (dedup key, when or
// transform) never loses the event.
func TestRuleErrors(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		wantQueues map[string]pipeline.QueueStats
	}{
		{"array body", `[1]`, map[string]pipeline.QueueStats{"archive": {Ready: 1}, "db": {Ready: 1}}},
		{"null body", `null`, map[string]pipeline.QueueStats{"archive": {Ready: 1}, "db": {Ready: 1}}},
		{"string body", `"call_ended"`, map[string]pipeline.QueueStats{"archive": {Ready: 1}, "db": {Ready: 1}}},
		{"no data", `{"event":"call_ended"}`, map[string]pipeline.QueueStats{"archive": {Ready: 1}, "db": {Ready: 1}}},
		// The transform fails (no from): the event waits in slack's dead-letter queue.
		{"transform fails", `{"data":{"callSid":"x","post_call":{"lead_status":"interested"}}}`,
			map[string]pipeline.QueueStats{"archive": {Ready: 1}, "db": {Ready: 1}, "slack": {Dead: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			r := f.do(t, request{contentType: "application/json", body: []byte(tt.body)})
			var res ingest.Response
			checkOneLineJSON(t, r, &res)
			if r.code != http.StatusOK || res.Duplicate {
				t.Fatalf("POST %s = %d %s, want 200, not a duplicate", tt.body, r.code, r.body)
			}
			if ev, err := f.log.Event(context.Background(), res.ID); err != nil || string(ev.Body) != tt.body {
				t.Errorf("Event(%q) = %q, %v; want %q", res.ID, ev.Body, err, tt.body)
			}
			for _, s := range sinks {
				if got := f.queueStats(t, s); got != tt.wantQueues[s] {
					t.Errorf("Queue(%s).Stats() = %+v, want %+v", s, got, tt.wantQueues[s])
				}
			}
			if st := f.h.Stats(); st.Accepted != 1 || st.RuleErrors == 0 {
				t.Errorf("Stats() = %+v, want Accepted 1 and RuleErrors > 0", st)
			}
		})
	}
}

// TestSwap checks that a new config serves the next request.
func TestSwap(t *testing.T) {
	f := newFixture(t, nil)
	post := func(path string, body []byte) int {
		return f.do(t, request{path: path, contentType: "application/json", body: body}).code
	}
	if got := post(hookPath, []byte(`{"n":1}`)); got != http.StatusOK {
		t.Fatalf("POST %s before Swap = %d, want 200", hookPath, got)
	}

	cfg := testConfig(t)
	cfg.Sources[0].Path = "/hooks/v2"
	cfg.MaxBody = 16
	f.h.Swap(cfg)

	tests := []struct {
		name string
		path string
		body []byte
		want int
	}{
		{"old path", hookPath, []byte(`{"n":2}`), http.StatusNotFound},
		{"new path", "/hooks/v2", []byte(`{"n":3}`), http.StatusOK},
		{"new max body", "/hooks/v2", padded(17), http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := post(tt.path, tt.body); got != tt.want {
				t.Errorf("POST %s after Swap = %d, want %d", tt.path, got, tt.want)
			}
		})
	}
}

// TestNumericDedupKeys: numeric ids that a float64 cannot tell apart and
// an int64 can (from 2⁵³ up: 64-bit ids) are distinct dedup keys; each id
// seen again is a duplicate of its own first event.
func TestNumericDedupKeys(t *testing.T) {
	f := newFixture(t, nil)
	post := func(sid string) ingest.Response {
		t.Helper()
		r := f.do(t, request{contentType: "application/json", body: []byte(`{"event":"call_ended","data":{"callSid":` + sid + `}}`)})
		var res ingest.Response
		checkOneLineJSON(t, r, &res)
		if r.code != http.StatusOK {
			t.Fatalf("POST callSid %s = %d %s", sid, r.code, r.body)
		}
		return res
	}
	ids := map[string]string{}
	for _, sid := range []string{
		"1234567890123456789", "1234567890123456790", // one float64 apart: none
		"9007199254740992", "9007199254740993", // 2⁵³ and the next integer
		"-9007199254740993", "-9007199254740994",
		"9223372036854775806", "9223372036854775807", // the largest int64s
		"1.5", "1.50", // one float64: one key
	} {
		res := post(sid)
		if sid == "1.50" {
			if !res.Duplicate || res.ID != ids["1.5"] {
				t.Errorf("callSid 1.50 = %+v, want a duplicate of 1.5 (%s)", res, ids["1.5"])
			}
			continue
		}
		if res.Duplicate {
			t.Errorf("callSid %s = %+v, want a new event", sid, res)
		}
		ids[sid] = res.ID
	}
	for _, sid := range []string{"1234567890123456789", "1234567890123456790", "9007199254740993", "9223372036854775807"} {
		if res := post(sid); !res.Duplicate || res.ID != ids[sid] {
			t.Errorf("callSid %s again = %+v, want a duplicate of %s", sid, res, ids[sid])
		}
	}
}
