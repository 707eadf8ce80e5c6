package admin_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/sdk"
)

const token = "s3cret-token"

var t0 = time.Date(2025, 3, 14, 15, 0, 0, 0, time.UTC)

// fixture is a memlog with events ev-0..ev-5, a minute apart: even ones
// from callkaro routed to archive, odd ones from stripe routed to slack;
// ev-1 and ev-3 dead in slack's DLQ.
func fixture(t testing.TB) *memlog.Log {
	t.Helper()
	l := memlog.New()
	t.Cleanup(func() { l.Close() })
	fill(t, l)
	return l
}

// fill appends fixture's events to l.
func fill(t testing.TB, l pipeline.Log) {
	t.Helper()
	var es []pipeline.Entry
	for i := range 6 {
		ev := pipeline.Event{ID: fmt.Sprintf("ev-%d", i), Source: "callkaro", ReceivedAt: t0.Add(time.Duration(i) * time.Minute),
			Body: []byte(fmt.Sprintf(`{"n":%d,"status":"interested"}`, i)), Auth: "none"}
		tg := pipeline.Target{Sink: "archive", Route: "all"}
		if i%2 == 1 {
			ev.Source = "stripe"
			tg = pipeline.Target{Sink: "slack", Route: "leads"}
			if i != 5 {
				tg.Err = "transform failed"
			}
		}
		es = append(es, pipeline.Entry{Event: ev, Targets: []pipeline.Target{tg}, DedupKey: fmt.Sprintf("call-%d", i), DedupWindow: time.Hour})
	}
	if _, err := l.Append(context.Background(), es); err != nil {
		t.Fatal(err)
	}
}

func v1Options(l pipeline.Log) admin.Options {
	return admin.Options{
		Ready: func() error { return nil },
		Log:   l,
		Token: []byte(token),
		Sinks: func(ctx context.Context) ([]admin.SinkStatus, error) {
			var out []admin.SinkStatus
			for _, n := range []string{"archive", "slack"} {
				st, err := l.Queue(n).Stats(ctx)
				if err != nil {
					return nil, err
				}
				out = append(out, admin.SinkStatus{Name: n, Plugin: "running", Ready: st.Ready, Retrying: st.Retrying, Dead: st.Dead})
			}
			return out, nil
		},
	}
}

// call makes one call to h over real HTTP on loopback: a POST as JSON,
// with the admin token unless auth names another ("none": no
// Authorization header).
func call(t *testing.T, h http.Handler, method, path, auth, body string) response {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	switch auth {
	case "":
		req.Header.Set("Authorization", "Bearer "+token)
	case "none":
	default:
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, header: resp.Header, body: b}
}

func into[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return v
}

// wantError checks the status and that the body is one line of JSON with
// an error that contains substr.
func wantError(t *testing.T, r response, code int, substr string) {
	t.Helper()
	if r.code != code {
		t.Errorf("status = %d, want %d (body %s)", r.code, code, r.body)
	}
	if bytes.Count(bytes.TrimSpace(r.body), []byte("\n")) != 0 {
		t.Errorf("error body %q is not one line", r.body)
	}
	e := into[map[string]string](t, r)
	if !strings.Contains(e["error"], substr) {
		t.Errorf("error = %q, want it to contain %q", e["error"], substr)
	}
}

func eventIDs(es []admin.Event) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.ID)
	}
	return out
}

func TestEventsList(t *testing.T) {
	h := admin.Handler(v1Options(fixture(t)))
	tests := []struct {
		name  string
		query string
		want  []string
	}{
		{"all", "", []string{"ev-0", "ev-1", "ev-2", "ev-3", "ev-4", "ev-5"}},
		{"source", "?source=stripe", []string{"ev-1", "ev-3", "ev-5"}},
		{"sink", "?sink=archive", []string{"ev-0", "ev-2", "ev-4"}},
		{"time range", "?since=2025-03-14T15:02:00Z&until=2025-03-14T15:04:00Z", []string{"ev-2", "ev-3"}},
		{"dedup key", "?dedup_key=call-4", []string{"ev-4"}},
		{"when", "?when=" + urlq(`body.n >= 3 && source == "stripe"`), []string{"ev-3", "ev-5"}},
		{"when and limit", "?when=" + urlq(`body.n in [0, 2, 4]`) + "&limit=2", []string{"ev-0", "ev-2"}},
		{"sink and state dead", "?sink=slack&state=dead", []string{"ev-1", "ev-3"}},
		{"sink and state pending", "?sink=slack&state=pending", []string{"ev-5"}},
		{"sink and state delivered", "?sink=archive&state=delivered", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, h, "GET", "/v1/events"+tt.query, "", "")
			if r.code != http.StatusOK {
				t.Fatalf("GET /v1/events%s = %d %s", tt.query, r.code, r.body)
			}
			got := into[admin.EventList](t, r)
			if ids := eventIDs(got.Events); !slices.Equal(ids, tt.want) {
				t.Errorf("GET /v1/events%s = %v, want %v", tt.query, ids, tt.want)
			}
		})
	}

	for _, order := range []struct {
		name, query string
		want        []string
	}{
		{"cursor", "", []string{"ev-0", "ev-1", "ev-2", "ev-3", "ev-4", "ev-5"}},
		{"cursor, newest first", "&order=newest", []string{"ev-5", "ev-4", "ev-3", "ev-2", "ev-1", "ev-0"}},
	} {
		t.Run(order.name, func(t *testing.T) {
			var all []string
			path := "/v1/events?limit=4" + order.query
			for range 10 {
				got := into[admin.EventList](t, call(t, h, "GET", path, "", ""))
				all = append(all, eventIDs(got.Events)...)
				if got.Next == "" {
					break
				}
				path = "/v1/events?limit=4" + order.query + "&after=" + got.Next
			}
			if !slices.Equal(all, order.want) {
				t.Errorf("paged by 4 = %v, want %v", all, order.want)
			}
		})
	}
	t.Run("fields", func(t *testing.T) {
		got := into[admin.EventList](t, call(t, h, "GET", "/v1/events?limit=1", "", ""))
		e := got.Events[0]
		if e.Seq != 1 || e.Source != "callkaro" || !e.ReceivedAt.Equal(t0) || e.DedupKey != "call-0" ||
			!slices.Equal(e.Sinks, []string{"archive"}) || compact(e.Body) != `{"n":0,"status":"interested"}` {
			t.Errorf("GET /v1/events?limit=1 = %+v", e)
		}
	})
	for _, bad := range []struct{ query, substr string }{
		{"?when=" + urlq("body.n +"), "when:"},
		{"?when=" + urlq("1 + 2"), "when:"},
		{"?since=yesterday", "since"},
		{"?limit=0", "limit"},
		{"?order=sideways", `order "sideways": want oldest (the default) or newest`},
		{"?after=zz", "cursor"},
		{"?sink=slack&state=lost", `state "lost"`},
	} {
		t.Run("bad "+bad.query, func(t *testing.T) {
			wantError(t, call(t, h, "GET", "/v1/events"+bad.query, "", ""), http.StatusBadRequest, bad.substr)
		})
	}
}

func compact(b []byte) string {
	var buf bytes.Buffer
	json.Compact(&buf, b)
	return buf.String()
}

func urlq(s string) string {
	return strings.NewReplacer("%", "%25", " ", "%20", "[", "%5B", "]", "%5D", ",", "%2C", "&", "%26", "+", "%2B", "=", "%3D", `"`, "%22", ">", "%3E").Replace(s)
}

func TestEventShow(t *testing.T) {
	h := admin.Handler(v1Options(fixture(t)))
	r := call(t, h, "GET", "/v1/events/ev-3", "", "")
	if r.code != http.StatusOK {
		t.Fatalf("GET /v1/events/ev-3 = %d %s", r.code, r.body)
	}
	if e := into[admin.Event](t, r); e.ID != "ev-3" || e.Source != "stripe" || !slices.Equal(e.Sinks, []string{"slack"}) {
		t.Errorf("GET /v1/events/ev-3 = %+v", e)
	}
	wantError(t, call(t, h, "GET", "/v1/events/nope", "", ""), http.StatusNotFound, `"nope"`)
}

// TestEventShowDeliveries: GET /v1/events/{id} says what happened to the
// event at each sink, with every field of the record present.
func TestEventShowDeliveries(t *testing.T) {
	l := fixture(t)
	q := l.Queue("archive")
	ctx := context.Background()
	before := time.Now().UTC()
	ds, err := q.Fetch(ctx, 1) // ev-0
	if err != nil || len(ds) != 1 || ds[0].Event.ID != "ev-0" {
		t.Fatalf("Fetch(archive) = %v, %v; want ev-0", ds, err)
	}
	retryAt := time.Now().Add(-time.Millisecond) // due at once
	if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: retryAt, Err: "connection refused"}}); err != nil {
		t.Fatal(err)
	}
	h := admin.Handler(v1Options(l))
	if d := into[admin.Event](t, call(t, h, "GET", "/v1/events/ev-0", "", "")).Deliveries; len(d) != 1 || d[0].State != "retrying" ||
		d[0].NextAttemptAt == nil || !d[0].NextAttemptAt.Equal(retryAt) {
		t.Errorf("GET /v1/events/ev-0 deliveries while retrying = %+v, want retrying with next_attempt_at %v", d, retryAt)
	}
	if ds, err = q.Fetch(ctx, 1); err != nil || len(ds) != 1 || ds[0].Event.ID != "ev-0" {
		t.Fatalf("Fetch(archive) again = %v, %v; want ev-0", ds, err)
	}
	if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Ack}}); err != nil {
		t.Fatal(err)
	}

	r := call(t, h, "GET", "/v1/events/ev-0", "", "")
	var raw struct {
		Deliveries []map[string]any `json:"deliveries"`
	}
	if err := json.Unmarshal(r.body, &raw); err != nil || len(raw.Deliveries) != 1 {
		t.Fatalf("GET /v1/events/ev-0 = %s, want one delivery", r.body)
	}
	for _, k := range []string{"sink", "route", "state", "attempts", "first_attempt_at", "last_attempt_at", "last_error", "delivered_at", "next_attempt_at"} {
		if _, ok := raw.Deliveries[0][k]; !ok {
			t.Errorf("GET /v1/events/ev-0 deliveries[0] has no %q: %s", k, r.body)
		}
	}
	d := into[admin.Event](t, r).Deliveries[0]
	if d.Sink != "archive" || d.Route != "all" || d.State != "delivered" || d.Attempts != 2 || d.LastError != "connection refused" ||
		d.DeliveredAt == nil || d.DeliveredAt.Before(before) || d.FirstAttemptAt == nil || d.LastAttemptAt.Before(*d.FirstAttemptAt) ||
		d.NextAttemptAt != nil {
		t.Errorf("GET /v1/events/ev-0 deliveries[0] = %+v, want archive/all delivered after 2 attempts", d)
	}

	for _, tt := range []struct{ id, state, lastErr string }{
		{"ev-1", "dead", "transform failed"},
		{"ev-5", "queued", ""},
	} {
		d := into[admin.Event](t, call(t, h, "GET", "/v1/events/"+tt.id, "", "")).Deliveries
		if len(d) != 1 || d[0].Sink != "slack" || d[0].State != tt.state || d[0].LastError != tt.lastErr || d[0].DeliveredAt != nil || d[0].Attempts != 0 {
			t.Errorf("GET /v1/events/%s deliveries = %+v, want slack %s %q, no attempt", tt.id, d, tt.state, tt.lastErr)
		}
	}
}

// plainLog hides memlog's optional capabilities, as a backend without
// delivery records has none.
type plainLog struct{ pipeline.Log }

func (l plainLog) Events(ctx context.Context, f pipeline.EventFilter) ([]pipeline.EventInfo, string, error) {
	if f.State != "" {
		return nil, "", fmt.Errorf("events: %w", pipeline.ErrNotSupported)
	}
	return l.Log.Events(ctx, f)
}

func TestEventDeliveriesNotSupported(t *testing.T) {
	h := admin.Handler(v1Options(plainLog{fixture(t)}))
	r := call(t, h, "GET", "/v1/events/ev-0", "", "")
	if r.code != http.StatusOK || bytes.Contains(r.body, []byte(`"deliveries"`)) {
		t.Errorf("GET /v1/events/ev-0 on a log without records = %d %s, want 200 without deliveries", r.code, r.body)
	}
	wantError(t, call(t, h, "GET", "/v1/events?sink=slack&state=dead", "", ""), http.StatusNotImplemented, "not supported on this backend")
}

func TestSinksOldestAge(t *testing.T) {
	h := admin.Handler(v1Options(fixture(t)))
	got := into[struct{ Sinks []admin.SinkStatus }](t, call(t, h, "GET", "/v1/sinks", "", ""))
	if len(got.Sinks) != 2 {
		t.Fatalf("GET /v1/sinks = %+v", got)
	}
	wantAge := time.Since(t0).Seconds()
	if a := got.Sinks[0]; a.Name != "archive" || a.Ready != 3 || a.OldestAgeSeconds < wantAge-60 || a.OldestAgeSeconds > wantAge+60 {
		t.Errorf("archive = %+v, want 3 ready, oldest_age_seconds about %.0f", a, wantAge)
	}
}

func TestDeadLetters(t *testing.T) {
	l := fixture(t)
	h := admin.Handler(v1Options(l))
	got := into[admin.DeadLetterList](t, call(t, h, "GET", "/v1/sinks/slack/dlq", "", ""))
	if len(got.DeadLetters) != 2 || got.DeadLetters[0].ID != "ev-1" || got.DeadLetters[0].Error != "transform failed" || got.Next != "" {
		t.Errorf("GET /v1/sinks/slack/dlq = %+v", got)
	}
	page := into[admin.DeadLetterList](t, call(t, h, "GET", "/v1/sinks/slack/dlq?limit=1", "", ""))
	if len(page.DeadLetters) != 1 || page.Next == "" {
		t.Fatalf("GET dlq?limit=1 = %+v, want one and a next", page)
	}
	page = into[admin.DeadLetterList](t, call(t, h, "GET", "/v1/sinks/slack/dlq?limit=1&after="+page.Next, "", ""))
	if len(page.DeadLetters) != 1 || page.DeadLetters[0].ID != "ev-3" || page.Next != "" {
		t.Errorf("GET dlq second page = %+v, want ev-3 and no next", page)
	}
	wantError(t, call(t, h, "GET", "/v1/sinks/nope/dlq", "", ""), http.StatusNotFound, `unknown sink "nope"`)
}

func TestAuth(t *testing.T) {
	l := fixture(t)
	withToken := admin.Handler(v1Options(l))
	noToken := v1Options(l)
	noToken.Token = nil
	open := noToken
	open.AllowUnauthenticated = true
	for _, path := range []string{"/v1/sinks/slack/dlq/retry", "/v1/sinks/slack/dlq/drop", "/v1/sinks/slack/dlq/add", "/v1/sinks/slack/retry-now", "/v1/replay", "/v1/reload"} {
		t.Run(path, func(t *testing.T) {
			wantError(t, call(t, withToken, "POST", path, "none", `{"all":true}`), http.StatusUnauthorized, "token")
			wantError(t, call(t, withToken, "POST", path, "wrong", `{"all":true}`), http.StatusUnauthorized, "token")
			wantError(t, call(t, admin.Handler(noToken), "POST", path, "none", `{"all":true}`), http.StatusForbidden, "admin.token_env or admin.token_file")
			wantError(t, call(t, admin.Handler(noToken), "POST", path, token, `{"all":true}`), http.StatusForbidden, "admin.token_env")
		})
	}
	r := call(t, withToken, "POST", "/v1/sinks/slack/dlq/retry", "wrong", `{}`)
	if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
		t.Errorf("401 WWW-Authenticate = %q, want Bearer", got)
	}
	// Loopback-only daemons may run without a token.
	if r := call(t, admin.Handler(open), "POST", "/v1/sinks/slack/dlq/drop", "none", `{"ids":["ev-1"]}`); r.code != http.StatusOK {
		t.Errorf("POST drop with AllowUnauthenticated = %d %s, want 200", r.code, r.body)
	}
	if r := call(t, withToken, "GET", "/v1/events", "", ""); r.code != http.StatusOK || r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("GET /v1/events with the token = %d, Cache-Control %q; want 200, no-store (bodies are in it)", r.code, r.header.Get("Cache-Control"))
	}
	if r := call(t, withToken, "GET", "/v1/events", "wrong", ""); r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("a refused GET /v1/events: Cache-Control %q, want no-store", r.header.Get("Cache-Control"))
	}
}

func TestRetryAndDrop(t *testing.T) {
	l := fixture(t)
	o := v1Options(l)
	var dropped []string // sink:seq that OnDropDead was told of
	o.OnDropDead = func(sink string, seqs []uint64) {
		for _, s := range seqs {
			dropped = append(dropped, fmt.Sprintf("%s:%d", sink, s))
		}
	}
	h := admin.Handler(o)
	q := l.Queue("slack")

	wantError(t, call(t, h, "POST", "/v1/sinks/slack/dlq/retry", token, `{}`), http.StatusBadRequest, "ids")
	wantError(t, call(t, h, "POST", "/v1/sinks/slack/dlq/retry", token, `{"ids":["ev-1"],"all":true}`), http.StatusBadRequest, "ids")
	wantError(t, call(t, h, "POST", "/v1/sinks/slack/dlq/retry", token, `{"idz":[]}`), http.StatusBadRequest, "unknown field")
	wantError(t, call(t, h, "POST", "/v1/sinks/nope/dlq/retry", token, `{"all":true}`), http.StatusNotFound, "unknown sink")

	r := call(t, h, "POST", "/v1/sinks/slack/dlq/retry", token, `{"ids":["ev-3","ev-0"]}`)
	res := into[admin.DeadLetterResult](t, r)
	if r.code != 200 || res.Count != 1 || !slices.Equal(res.IDs, []string{"ev-3"}) || !slices.Equal(res.NotFound, []string{"ev-0"}) {
		t.Fatalf("POST retry ev-3, ev-0 = %d %s", r.code, r.body)
	}
	// The dispatcher sees it at once, with a fresh attempt count.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ds, err := q.Fetch(ctx, 10)
	if err != nil || len(ds) != 2 || ds[0].Event.ID != "ev-3" || ds[0].Attempt != 1 || ds[1].Event.ID != "ev-5" {
		t.Fatalf("Fetch after retry = %+v, %v, want ev-3 (attempt 1) then ev-5", ds, err)
	}

	r = call(t, h, "POST", "/v1/sinks/slack/dlq/drop", token, `{"all":true}`)
	res = into[admin.DeadLetterResult](t, r)
	if r.code != 200 || res.Count != 1 || !slices.Equal(res.IDs, []string{"ev-1"}) || res.Action != "drop" {
		t.Fatalf("POST drop all = %d %s", r.code, r.body)
	}
	if st, _ := q.Stats(ctx); st.Dead != 0 {
		t.Errorf("Stats after drop all = %+v, want no dead", st)
	}
	// ev-1 is seq 2 in memlog (seqs from 1): the dispatcher is told, for a
	// key held behind it (delivery.order_on_dead = "block").
	if !slices.Equal(dropped, []string{"slack:2"}) {
		t.Errorf("OnDropDead was told %v, want [slack:2] (ev-1), and nothing for the retry", dropped)
	}
}

func replayLines(t *testing.T, r response) []admin.ReplayProgress {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("replay Content-Type = %q", ct)
	}
	var out []admin.ReplayProgress
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	for sc.Scan() {
		var p admin.ReplayProgress
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			t.Fatalf("replay line %q: %v", sc.Bytes(), err)
		}
		out = append(out, p)
	}
	return out
}

func TestReplay(t *testing.T) {
	l := fixture(t)
	o := v1Options(l)
	o.Retarget = func(ev pipeline.Event, sink string) (string, []byte, error) {
		return "again", []byte(`{"replayed":"` + ev.ID + `"}`), nil
	}
	h := admin.Handler(o)
	q := l.Queue("archive")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ds, err := q.Fetch(ctx, 10)
	if err != nil || len(ds) != 3 {
		t.Fatalf("Fetch = %d, %v", len(ds), err)
	}
	acks := make([]pipeline.Settlement, len(ds))
	for i, d := range ds {
		acks[i] = pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack}
	}
	if err := q.Settle(ctx, acks[1:]); err != nil { // ev-0 stays leased
		t.Fatal(err)
	}

	r := call(t, h, "POST", "/v1/replay", token, `{"sink":"archive","since":"2025-03-14T15:00:00Z","when":"body.n < 5"}`)
	if r.code != 200 {
		t.Fatalf("POST /v1/replay = %d %s", r.code, r.body)
	}
	lines := replayLines(t, r)
	final := lines[len(lines)-1]
	if !final.Done || final.Error != "" || final.Scanned != 3 || final.Matched != 3 || final.Enqueued != 2 || final.AlreadyQueued != 1 {
		t.Errorf("replay final line = %+v, want done, 3 scanned, 3 matched, 2 enqueued, 1 already queued", final)
	}
	ds, err = q.Fetch(ctx, 10)
	if err != nil || len(ds) != 2 || ds[0].Event.ID != "ev-2" || ds[1].Event.ID != "ev-4" || ds[0].Route != "again" || string(ds[1].Payload) != `{"replayed":"ev-4"}` {
		t.Errorf("Fetch after replay = %+v, %v, want ev-2 and ev-4 with the Retarget route and payload", ds, err)
	}

	// all_events: events never routed to the sink.
	r = call(t, h, "POST", "/v1/replay", token, `{"sink":"slack","since":"100000h","source":"callkaro","all_events":true}`)
	if final := replayLines(t, r); final[len(final)-1].Enqueued != 3 {
		t.Errorf("replay all_events final = %+v, want 3 enqueued", final[len(final)-1])
	}

	for _, bad := range []struct {
		body   string
		code   int
		substr string
	}{
		{`{"sink":"archive"}`, 400, "since is required"},
		{`{"sink":"archive","since":"1h","when":"body.n +"}`, 400, "when:"},
		{`{"sink":"nope","since":"1h"}`, 404, "unknown sink"},
		{`{"since":"1h"}`, 400, "sink is required"},
		{`{"sink":"archive","since":"1h","until":"2h"}`, 400, "until must be after since"},
		{`not json`, 400, "request body"},
	} {
		wantError(t, call(t, h, "POST", "/v1/replay", token, bad.body), bad.code, bad.substr)
	}
}

func TestReplayPrunedEvent(t *testing.T) {
	// A log whose Requeue reports a pruned event: the stream ends with the error.
	l := fixture(t)
	o := v1Options(prunedLog{l})
	r := call(t, admin.Handler(o), "POST", "/v1/replay", token, `{"sink":"archive","since":"100000h"}`)
	lines := replayLines(t, r)
	if final := lines[len(lines)-1]; final.Done || !strings.Contains(final.Error, "seq 1") {
		t.Errorf("replay over a pruned event: final line = %+v, want an error naming seq 1", final)
	}
}

type prunedLog struct{ *memlog.Log }

func (p prunedLog) Queue(sink string) pipeline.Queue { return prunedQueue{p.Log.Queue(sink)} }

type prunedQueue struct{ pipeline.Queue }

func (prunedQueue) Requeue(ctx context.Context, rs []pipeline.Requeue) (int, error) {
	return 0, fmt.Errorf("requeue: event seq %d: %w", rs[0].Seq, pipeline.ErrNotFound)
}

func TestReload(t *testing.T) {
	var calls int
	var fail error
	var restart, socketOwned []string
	o := v1Options(fixture(t))
	o.Reload = func() (admin.ReloadResult, error) {
		calls++
		return admin.ReloadResult{RestartNeeded: restart, SocketOwned: socketOwned}, fail
	}
	h := admin.Handler(o)
	r := call(t, h, "POST", "/v1/reload", token, "")
	if r.code != 200 || calls != 1 || bytes.Contains(r.body, []byte("restart_needed")) || bytes.Contains(r.body, []byte("socket_owned")) {
		t.Errorf("POST /v1/reload = %d %s, Reload called %d times, want 200 without restart_needed and socket_owned, 1", r.code, r.body, calls)
	}
	restart = []string{"log.urls"}
	var res admin.ReloadResult
	if r := call(t, h, "POST", "/v1/reload", token, ""); r.code != 200 || json.Unmarshal(r.body, &res) != nil ||
		res.Status != "reloaded" || !slices.Equal(res.RestartNeeded, restart) {
		t.Errorf("POST /v1/reload with a start-only change = %d %s, want 200 with restart_needed [log.urls]", r.code, r.body)
	}
	restart, socketOwned = nil, []string{"server.listen"}
	res = admin.ReloadResult{}
	if r := call(t, h, "POST", "/v1/reload", token, ""); r.code != 200 || json.Unmarshal(r.body, &res) != nil ||
		res.Status != "reloaded" || len(res.RestartNeeded) != 0 || !slices.Equal(res.SocketOwned, socketOwned) {
		t.Errorf("POST /v1/reload moving a socket-activated listener = %d %s, want 200 with socket_owned [server.listen]", r.code, r.body)
	}
	socketOwned = nil
	fail = errors.New("pipeline.toml:3:1: unknown key")
	wantError(t, call(t, h, "POST", "/v1/reload", token, ""), http.StatusConflict, "unknown key")
	o.Reload = nil
	wantError(t, call(t, admin.Handler(o), "POST", "/v1/reload", token, ""), http.StatusNotImplemented, "reload")
}

func TestErrorsAreJSON(t *testing.T) {
	h := admin.Handler(v1Options(fixture(t)))
	wantError(t, call(t, h, "GET", "/v1/nothing", "", ""), http.StatusNotFound, "not found")
	r := call(t, h, "DELETE", "/v1/replay", token, "")
	wantError(t, r, http.StatusMethodNotAllowed, "method not allowed")
	if r.header.Get("Allow") != "POST" {
		t.Errorf("DELETE /v1/replay Allow = %q, want POST", r.header.Get("Allow"))
	}
	o := v1Options(fixture(t))
	o.Log = nil
	wantError(t, call(t, admin.Handler(o), "GET", "/v1/events", "", ""), http.StatusServiceUnavailable, "event log")
}

// TestGiveUpCall: POST /v1/sinks/{sink}/dlq/add gives up on the events
// named that wait in the sink's queue, with the reason, and names the
// others; bad calls get a 4xx that says why.
func TestGiveUpCall(t *testing.T) {
	l := fixture(t)
	o := v1Options(l)
	wantError(t, call(t, admin.Handler(o), "POST", "/v1/sinks/archive/dlq/add", token, `{"ids":["ev-0"]}`),
		http.StatusNotImplemented, "cannot give up")
	wantError(t, call(t, admin.Handler(o), "POST", "/v1/sinks/archive/dlq/add", token, `{"idz":1}`),
		http.StatusNotImplemented, "cannot give up") // before the body is read

	var set dispatch.GiveUps
	o.GiveUps = func(sink string) admin.GiveUpSet {
		if sink == "slack" {
			return nil // as if a reload removed it
		}
		return &set
	}
	h := admin.Handler(o)
	wantError(t, call(t, h, "POST", "/v1/sinks/archive/dlq/add", token, `{}`), http.StatusBadRequest, "ids")
	wantError(t, call(t, h, "POST", "/v1/sinks/archive/dlq/add", token, `{"all":true}`), http.StatusConflict, "give up on its events by id")
	wantError(t, call(t, h, "POST", "/v1/sinks/archive/dlq/add", token, `{"ids":["ev-0"],"reason":"`+strings.Repeat("x", 2001)+`"}`),
		http.StatusBadRequest, "reason")
	wantError(t, call(t, h, "POST", "/v1/sinks/nope/dlq/add", token, `{"ids":["ev-0"]}`), http.StatusNotFound, "unknown sink")
	wantError(t, call(t, h, "POST", "/v1/sinks/slack/dlq/add", token, `{"ids":["ev-5"]}`), http.StatusConflict, "removed")
	set.Keep = func([]pipeline.GiveUp) error { return errors.New("disk full") }
	wantError(t, call(t, h, "POST", "/v1/sinks/archive/dlq/add", token, `{"ids":["ev-0"]}`),
		http.StatusInternalServerError, "nothing was given up on: disk full")
	set.Keep = nil
	if set.Len() != 0 {
		t.Fatalf("refused calls gave up on %d entries", set.Len())
	}

	// ev-0 and ev-2 wait for archive; ev-1 is slack's, ev-9 is not in the log.
	r := call(t, h, "POST", "/v1/sinks/archive/dlq/add", token, `{"ids":["ev-0","ev-1","ev-9","ev-2","ev-0"],"reason":"  test\u001bdata  "}`)
	res := into[admin.DeadLetterResult](t, r)
	if r.code != 200 || res.Action != "add" || res.Count != 2 || !slices.Equal(res.IDs, []string{"ev-0", "ev-2"}) ||
		!slices.Equal(res.NotFound, []string{"ev-1", "ev-9"}) {
		t.Fatalf("POST dlq/add = %d %s, want ev-0 and ev-2 given up on, ev-1 and ev-9 not found", r.code, r.body)
	}
	if set.Len() != 2 {
		t.Errorf("the sink's set holds %d entries, want 2", set.Len())
	}
	// What the set holds is what a dispatcher acts on: drain the queue
	// through one and look at the dead letters.
	q := l.Queue("archive")
	d := dispatch.New(dispatch.Options{Sink: "archive", Queue: q, Deliverer: okSink{}, GiveUps: &set})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for st, _ := q.Stats(ctx); st != (pipeline.QueueStats{Dead: 2}); st, _ = q.Stats(ctx) {
		if time.Now().After(deadline) {
			t.Fatalf("archive's queue = %+v, want 2 dead letters and nothing else", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	got := into[admin.DeadLetterList](t, call(t, h, "GET", "/v1/sinks/archive/dlq", "", ""))
	if len(got.DeadLetters) != 2 || got.DeadLetters[0].ID != "ev-0" || got.DeadLetters[0].Error != "given up by an operator: test data" {
		t.Errorf("GET /v1/sinks/archive/dlq = %+v, want ev-0 and ev-2 with the reason", got)
	}
	// An event delivered, or dead already, is not waiting.
	r = call(t, h, "POST", "/v1/sinks/archive/dlq/add", token, `{"ids":["ev-0","ev-4"]}`)
	if res := into[admin.DeadLetterResult](t, r); res.Count != 0 || !slices.Equal(res.NotFound, []string{"ev-0", "ev-4"}) {
		t.Errorf("POST dlq/add of settled events = %d %s, want none given up on", r.code, r.body)
	}
}

// okSink delivers every event.
type okSink struct{}

func (okSink) Deliver(_ context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	out := make([]sdk.Result, len(batch))
	for i := range out {
		out[i] = sdk.Delivered()
	}
	return out, nil
}

// TestGiveUpBringsARetryForward: an event given up on while its retry is
// an hour away goes to the dead-letter queue at once.
func TestGiveUpBringsARetryForward(t *testing.T) {
	l := fixture(t)
	o := v1Options(l)
	var set dispatch.GiveUps
	o.GiveUps = func(string) admin.GiveUpSet { return &set }
	h := admin.Handler(o)
	q := l.Queue("archive")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	settleFirst(t, q, pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "503"}) // ev-0
	if r := call(t, h, "POST", "/v1/sinks/archive/dlq/add", token, `{"ids":["ev-0"]}`); r.code != http.StatusOK {
		t.Fatalf("POST dlq/add = %d %s", r.code, r.body)
	}
	d := dispatch.New(dispatch.Options{Sink: "archive", Queue: q, Deliverer: okSink{}, GiveUps: &set})
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for st, _ := q.Stats(ctx); st != (pipeline.QueueStats{Dead: 1}); st, _ = q.Stats(ctx) {
		if ctx.Err() != nil {
			t.Fatalf("archive's queue = %+v, want ev-0 dead (given up on) and the rest delivered", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestEventShowsHeld: GET /v1/events/{id} says held of a delivery held
// back, and leaves the field out otherwise.
func TestEventShowsHeld(t *testing.T) {
	l := fixture(t)
	h := admin.Handler(v1Options(l))
	settleFirst(t, l.Queue("archive"), pipeline.Settlement{Outcome: pipeline.Hold}) // ev-0
	if r := call(t, h, "GET", "/v1/events/ev-0", "", ""); !strings.Contains(string(r.body), `"held": true`) {
		t.Errorf("GET /v1/events/ev-0 of a held delivery = %s, want \"held\":true", r.body)
	}
	if r := call(t, h, "GET", "/v1/events/ev-2", "", ""); strings.Contains(string(r.body), `"held"`) {
		t.Errorf("GET /v1/events/ev-2 of a queued delivery = %s, want no held", r.body)
	}
}

// settleFirst fetches the first entry of q and settles it as s says.
func settleFirst(t *testing.T, q pipeline.Queue, s pipeline.Settlement) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ds, err := q.Fetch(ctx, 1)
	if err != nil || len(ds) != 1 {
		t.Fatalf("Fetch = %v, %v", ds, err)
	}
	s.Seq = ds[0].Seq
	if err := q.Settle(ctx, []pipeline.Settlement{s}); err != nil {
		t.Fatal(err)
	}
}

// TestRetryNow: POST /v1/sinks/{sink}/retry-now makes the sink's retries
// due later due now and asks its dispatcher to probe, says so, keeps a
// paused sink paused (and says so), answers 404 for an unknown sink and
// 409 for a removed one, touching nothing then.
func TestRetryNow(t *testing.T) {
	l := fixture(t)
	q := l.Queue("archive")
	later := time.Now().Add(time.Hour)
	settleFirst(t, q, pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: later, Err: "503 Retry-After: 3600"})
	settleFirst(t, q, pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: later, Err: "503 Retry-After: 3600"})
	// The removed sink crm has a retry waiting too.
	if _, err := l.Append(t.Context(), []pipeline.Entry{{Event: pipeline.Event{ID: "crm-1", Source: "callkaro", ReceivedAt: t0, Body: []byte(`{}`)},
		Targets: []pipeline.Target{{Sink: "crm", Route: "all"}}}}); err != nil {
		t.Fatal(err)
	}
	settleFirst(t, l.Queue("crm"), pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: later, Err: "down"})
	var probed []string
	paused := false
	o := v1Options(l)
	sinks := o.Sinks
	o.Sinks = func(ctx context.Context) ([]admin.SinkStatus, error) {
		out, err := sinks(ctx)
		for i := range out {
			out[i].Paused = out[i].Name == "archive" && paused
		}
		return append(out, admin.SinkStatus{Name: "crm", Plugin: admin.PluginRemoved, Retrying: 1}), err
	}
	o.ProbeNow = func(sink string) bool {
		probed = append(probed, sink)
		return sink == "archive"
	}
	h := admin.Handler(o)
	wantError(t, call(t, h, "POST", "/v1/sinks/nope/retry-now", token, ""), http.StatusNotFound, "unknown sink")
	wantError(t, call(t, h, "POST", "/v1/sinks/crm/retry-now", token, ""), http.StatusConflict, "removed")
	if len(probed) != 0 {
		t.Errorf("ProbeNow called for %v by refused calls, want none", probed)
	}
	if st, _ := l.Queue("crm").Stats(t.Context()); st.Retrying != 1 {
		t.Errorf("removed sink crm after a refused retry-now: %+v", st)
	}
	fetchCtx := func() context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	// The premise: only ev-4 is ready; the two retries wait an hour.
	if ds, err := q.Fetch(fetchCtx(), 10); err != nil || len(ds) != 1 || ds[0].Event.ID != "ev-4" {
		t.Fatalf("Fetch before retry-now = %v, %v; want ev-4 alone", ds, err)
	} else if err := q.Settle(t.Context(), []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Ack}}); err != nil {
		t.Fatal(err)
	}

	paused = true
	r := call(t, h, "POST", "/v1/sinks/archive/retry-now", token, "")
	if r.code != http.StatusOK {
		t.Fatalf("retry-now = %d %s, want 200", r.code, r.body)
	}
	if got, want := into[admin.RetryNow](t, r), (admin.RetryNow{Sink: "archive", Hastened: 2, Probing: true, Paused: true}); got != want {
		t.Errorf("retry-now answer = %+v, want %+v", got, want)
	}
	if !slices.Equal(probed, []string{"archive"}) {
		t.Errorf("ProbeNow calls = %v, want [archive]", probed)
	}
	ds, err := q.Fetch(fetchCtx(), 10)
	if err != nil || len(ds) != 2 || ds[0].Attempt != 2 {
		t.Fatalf("Fetch after retry-now = %v, %v; want ev-0 and ev-2, due now, at their second attempt", ds, err)
	}
	// Again: nothing waits now; the sink's breaker is closed.
	paused = false
	o.ProbeNow = nil
	r = call(t, admin.Handler(o), "POST", "/v1/sinks/archive/retry-now", token, "")
	if got, want := into[admin.RetryNow](t, r), (admin.RetryNow{Sink: "archive"}); r.code != http.StatusOK || got != want {
		t.Errorf("retry-now again = %d %+v, want 200 %+v", r.code, got, want)
	}
}

// TestReplayDeadLetterIsNotAlreadyQueued: a replay skips an event that
// is in the sink's dead-letter queue, as it skips one still queued; it
// counts both in already_queued (every event it left alone, as before
// in_dead_letter_queue was added: JSON fields only ever gain a meaning
// beside theirs) and says how many of them are dead letters
// (in_dead_letter_queue), so that the CLI can point at `pipelined dlq
// retry` instead of saying "already queued".
func TestReplayDeadLetterIsNotAlreadyQueued(t *testing.T) {
	l := fixture(t)
	h := admin.Handler(v1Options(l))
	q := l.Queue("archive")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ds, err := q.Fetch(ctx, 10)
	if err != nil || len(ds) != 3 {
		t.Fatalf("Fetch = %d, %v", len(ds), err)
	}
	// ev-0 stays leased (queued), ev-2 is delivered, ev-4 dead.
	if err := q.Settle(ctx, []pipeline.Settlement{
		{Seq: ds[1].Seq, Outcome: pipeline.Ack},
		{Seq: ds[2].Seq, Outcome: pipeline.Dead, Err: "permanent failure: 422"},
	}); err != nil {
		t.Fatal(err)
	}
	r := call(t, h, "POST", "/v1/replay", token, `{"sink":"archive","since":"2025-03-14T15:00:00Z"}`)
	if r.code != 200 {
		t.Fatalf("POST /v1/replay = %d %s", r.code, r.body)
	}
	lines := replayLines(t, r)
	final := lines[len(lines)-1]
	if !final.Done || final.Matched != 3 || final.Enqueued != 1 || final.AlreadyQueued != 2 || final.InDeadLetterQueue != 1 {
		t.Errorf("replay final line = %+v, want done, 3 matched, 1 enqueued, 2 already queued (left alone) of which 1 in the dead-letter queue", final)
	}
	for _, f := range []string{`"already_queued":2`, `"in_dead_letter_queue":1`} {
		if !bytes.Contains(r.body, []byte(f)) {
			t.Errorf("replay answer = %s, want %s in its JSON", r.body, f)
		}
	}
	if dl, err := q.DeadLetters(ctx, 0, 10); err != nil || len(dl) != 1 || dl[0].Seq != ds[2].Seq {
		t.Errorf("DeadLetters after the replay = %+v, %v; want ev-4 still there", dl, err)
	}
}

// TestReplayCountsDeadLettersWithoutReadingThem: a replay counts the
// skipped events that are dead letters from Requeue's answer
// (pipeline.Requeue.Dead), not by reading the dead letters, whose
// events and payloads can be 1 MiB each (P9).
func TestReplayCountsDeadLettersWithoutReadingThem(t *testing.T) {
	l := fixture(t)
	q := l.Queue("archive")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ds, err := q.Fetch(ctx, 10)
	if err != nil || len(ds) != 3 {
		t.Fatalf("Fetch = %d, %v", len(ds), err)
	}
	if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[1].Seq, Outcome: pipeline.Dead, Err: "422"}, {Seq: ds[2].Seq, Outcome: pipeline.Dead, Err: "422"}}); err != nil {
		t.Fatal(err)
	}
	h := admin.Handler(v1Options(noDeadLettersLog{Log: l, t: t}))
	r := call(t, h, "POST", "/v1/replay", token, `{"sink":"archive","since":"2025-03-14T15:00:00Z"}`)
	if r.code != 200 {
		t.Fatalf("POST /v1/replay = %d %s", r.code, r.body)
	}
	lines := replayLines(t, r)
	final := lines[len(lines)-1]
	if !final.Done || final.Matched != 3 || final.Enqueued != 0 || final.AlreadyQueued != 3 || final.InDeadLetterQueue != 2 {
		t.Errorf("replay final line = %+v, want done, 3 matched, 3 already queued of which 2 in the dead-letter queue", final)
	}
}

// noDeadLettersLog is a Log whose queues fail the test when their dead
// letters are read.
type noDeadLettersLog struct {
	*memlog.Log
	t *testing.T
}

func (l noDeadLettersLog) Queue(sink string) pipeline.Queue {
	return noDeadLettersQueue{l.Log.Queue(sink), l.t}
}

type noDeadLettersQueue struct {
	pipeline.Queue
	t *testing.T
}

func (q noDeadLettersQueue) DeadLetters(ctx context.Context, after uint64, limit int) ([]pipeline.DeadLetter, error) {
	q.t.Errorf("DeadLetters(%d, %d) called", after, limit)
	return q.Queue.DeadLetters(ctx, after, limit)
}

// TestReplayGivesRequeueTheIDs: a replay hands Requeue each event's id
// with its seq (pipeline.Requeue.ID), so that the JetStream backend looks
// up the entries of the events it leaves alone without reading them, up
// to 64 × 1 MiB a page (P9).
func TestReplayGivesRequeueTheIDs(t *testing.T) {
	l := fixture(t)
	rec := &requeueRecorder{Log: l}
	h := admin.Handler(v1Options(rec))
	r := call(t, h, "POST", "/v1/replay", token, `{"sink":"slack","since":"100000h","all_events":true}`)
	if r.code != 200 {
		t.Fatalf("POST /v1/replay = %d %s", r.code, r.body)
	}
	if final := replayLines(t, r); !final[len(final)-1].Done {
		t.Fatalf("replay final line = %+v, want done", final[len(final)-1])
	}
	events, _, err := l.Events(context.Background(), pipeline.EventFilter{})
	if err != nil || len(events) != 6 {
		t.Fatalf("Events = %d, %v, want the fixture's 6", len(events), err)
	}
	if len(rec.rs) != len(events) {
		t.Fatalf("Requeue was given %d events, want %d", len(rec.rs), len(events))
	}
	for i, e := range events {
		if rec.rs[i].Seq != e.Seq || rec.rs[i].ID != e.ID {
			t.Errorf("Requeue's entry %d = seq %d, id %q, want seq %d, id %q", i, rec.rs[i].Seq, rec.rs[i].ID, e.Seq, e.ID)
		}
	}
}

// requeueRecorder is a Log whose queues record what Requeue was given.
type requeueRecorder struct {
	*memlog.Log
	rs []pipeline.Requeue
}

func (l *requeueRecorder) Queue(sink string) pipeline.Queue {
	return requeueRecorderQueue{l.Log.Queue(sink), l}
}

type requeueRecorderQueue struct {
	pipeline.Queue
	l *requeueRecorder
}

func (q requeueRecorderQueue) Requeue(ctx context.Context, rs []pipeline.Requeue) (int, error) {
	q.l.rs = append(q.l.rs, rs...)
	return q.Queue.Requeue(ctx, rs)
}
