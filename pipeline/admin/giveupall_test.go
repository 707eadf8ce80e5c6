package admin_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
)

// removedSlack makes o's slack a sink a reload removed (no give-ups, listed
// as removed) while removed reports true, and archive a configured one.
func removedSlack(o *admin.Options, removed func() bool) {
	var set dispatch.GiveUps
	o.GiveUps = func(sink string) admin.GiveUpSet {
		if sink == "slack" && removed() {
			return nil
		}
		return &set
	}
	sinks := o.Sinks
	o.Sinks = func(ctx context.Context) ([]admin.SinkStatus, error) {
		ss, err := sinks(ctx)
		for i := range ss {
			if ss[i].Name == "slack" && removed() {
				ss[i].Plugin = admin.PluginRemoved
			}
		}
		return ss, err
	}
}

// appendTo appends n events routed to sink, with ids prefix-0...
func appendTo(t *testing.T, l pipeline.Log, sink, prefix string, n int) {
	t.Helper()
	es := make([]pipeline.Entry, n)
	for i := range es {
		es[i] = pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprintf("%s-%d", prefix, i), Source: "stripe", ReceivedAt: t0, Body: []byte(`{}`), Auth: "none"},
			Targets: []pipeline.Target{{Sink: sink, Route: "leads"}}}
	}
	if _, err := l.Append(context.Background(), es); err != nil {
		t.Fatal(err)
	}
}

// TestGiveUpAllOfARemovedSink: POST dlq/add with {"all": true} moves every
// event waiting for a removed sink (more than a page of them, a retry due
// in an hour among them) to its dead-letter queue with the reason, says
// how many, and leaves nothing waiting; its dead letters can then be
// listed and dropped but not retried. A configured sink is refused with
// 409, ids with all with 400, and the JetStream backend with 501.
func TestGiveUpAllOfARemovedSink(t *testing.T) {
	l := fixture(t)
	o := v1Options(l)
	removedSlack(&o, func() bool { return true })
	h := admin.Handler(o)
	q := l.Queue("slack")
	settleFirst(t, q, pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "503"}) // ev-5
	appendTo(t, l, "slack", "late", 2500)

	wantError(t, call(t, h, "POST", "/v1/sinks/archive/dlq/add", token, `{"all":true}`), http.StatusConflict, "by id (--id ID), or remove the sink")
	wantError(t, call(t, h, "POST", "/v1/sinks/slack/dlq/add", token, `{"all":true,"ids":["ev-5"]}`), http.StatusBadRequest, "not both")
	wantError(t, call(t, h, "POST", "/v1/sinks/slack/dlq/add", token, `{"ids":["ev-5"]}`), http.StatusConflict, `removed from the configuration: nothing delivers its queue: give up on its whole queue with {"all": true}`)
	wantError(t, call(t, h, "POST", "/v1/sinks/slack/dlq/add", token, `{"all":true,"reason":"`+strings.Repeat("x", 2001)+`"}`), http.StatusBadRequest, "reason")
	wantError(t, call(t, h, "POST", "/v1/sinks/nope/dlq/add", token, `{"all":true}`), http.StatusNotFound, "unknown sink")
	if st, _ := q.Stats(context.Background()); st != (pipeline.QueueStats{Ready: 2500, Retrying: 1, Dead: 2}) {
		t.Fatalf("slack's queue after the refused calls = %+v, want all 2501 still waiting", st)
	}

	r := call(t, h, "POST", "/v1/sinks/slack/dlq/add", token, `{"all":true,"reason":"  sink retired\u001bticket 7 "}`)
	res := into[admin.DeadLetterResult](t, r)
	if r.code != http.StatusOK || res.Sink != "slack" || res.Action != "add" || res.Count != 2501 || res.IDs == nil || len(res.IDs) != 0 || len(res.NotFound) != 0 {
		t.Fatalf("POST dlq/add all of the removed slack = %d %s, want 200 with count 2501 and ids []", r.code, r.body)
	}
	if st, _ := q.Stats(context.Background()); st != (pipeline.QueueStats{Dead: 2503}) {
		t.Errorf("slack's queue after dlq add all = %+v, want 2503 dead letters and nothing waiting", st)
	}
	dls := into[admin.DeadLetterList](t, call(t, h, "GET", "/v1/sinks/slack/dlq?limit=1000", "", "")).DeadLetters
	errs := map[string]string{}
	for _, d := range dls {
		errs[d.ID] = d.Error
		if d.ID == "ev-5" && d.Attempts != 1 {
			t.Errorf("ev-5's dead letter: %d attempts, want 1 (giving up costs none)", d.Attempts)
		}
	}
	for id, want := range map[string]string{
		"ev-1":   "transform failed",
		"ev-5":   "given up by an operator: sink retired ticket 7 (last error: 503)",
		"late-0": "given up by an operator: sink retired ticket 7",
	} {
		if errs[id] != want {
			t.Errorf("dead letter %s: error %q, want %q", id, errs[id], want)
		}
	}
	if r := call(t, h, "POST", "/v1/sinks/slack/dlq/add", token, `{"all":true}`); r.code != http.StatusOK || into[admin.DeadLetterResult](t, r).Count != 0 {
		t.Errorf("POST dlq/add all of an empty queue = %d %s, want 200 with count 0", r.code, r.body)
	}

	wantError(t, call(t, h, "POST", "/v1/sinks/slack/dlq/retry", token, `{"all":true}`), http.StatusConflict, "removed from the configuration: nothing would deliver its dead letters")
	wantError(t, call(t, h, "POST", "/v1/sinks/slack/dlq/retry", token, `{"ids":["ev-5"]}`), http.StatusConflict, "add the sink back")
	// A replay would leave its events in the queue nothing delivers.
	wantError(t, call(t, h, "POST", "/v1/replay", token, `{"sink":"slack","since":"2000-01-01T00:00:00Z","all_events":true}`), http.StatusConflict, "nothing would deliver the events replayed")
	if st, _ := q.Stats(context.Background()); st.Ready+st.Retrying != 0 {
		t.Errorf("slack's queue after a replay to the removed sink = %+v, want nothing waiting", st)
	}
	r = call(t, h, "POST", "/v1/sinks/slack/dlq/drop", token, `{"all":true}`)
	if res := into[admin.DeadLetterResult](t, r); r.code != http.StatusOK || res.Count != 2503 {
		t.Fatalf("POST dlq/drop all of the removed slack = %d, count %d; want 200, 2503", r.code, res.Count)
	}
	if st, _ := q.Stats(context.Background()); st != (pipeline.QueueStats{}) {
		t.Errorf("slack's queue after dlq drop all = %+v, want empty", st)
	}

	o.GiveUps = nil // the JetStream backend
	wantError(t, call(t, admin.Handler(o), "POST", "/v1/sinks/slack/dlq/add", token, `{"all":true}`), http.StatusNotImplemented, "cannot give up")
}

// TestGiveUpAllStopsWhenTheSinkComesBack: a reload that adds the removed
// sink back stops GiveUpAll before its next page; what it moved stays in
// the dead-letter queue, and it says how many.
func TestGiveUpAllStopsWhenTheSinkComesBack(t *testing.T) {
	l := fixture(t)
	o := v1Options(l)
	var back atomic.Bool
	removedSlack(&o, func() bool { return !back.Load() })
	appendTo(t, l, "slack", "late", 2500)
	pages := 0
	res, err := admin.GiveUpAll(context.Background(), o, "slack", "gone", func() {
		pages++
		back.Store(true) // the reload lands during the first page
	})
	if err == nil || !strings.Contains(err.Error(), "sink is in the configuration") || admin.GiveUpStatus(err) != http.StatusConflict {
		t.Errorf("GiveUpAll when the sink came back = %v, want a 409 that says it is configured", err)
	}
	if res.Count != 1000 || pages != 1 {
		t.Errorf("GiveUpAll moved %d in %d pages, want the first page of 1000 only", res.Count, pages)
	}
	if st, _ := l.Queue("slack").Stats(context.Background()); st.Ready != 1501 || st.Dead != 1002 {
		t.Errorf("slack's queue = %+v, want 1501 still waiting and 1000 more dead letters", st)
	}
}

// slowLog is a log whose queues take pageTime over each Abandon call.
type slowLog struct {
	*memlog.Log
	pageTime time.Duration
}

func (l slowLog) Queue(sink string) pipeline.Queue {
	return slowQueue{l.Log.Queue(sink).(pipeline.Abandoner), l.pageTime}
}

type slowQueue struct {
	pipeline.Abandoner
	pageTime time.Duration
}

func (q slowQueue) Abandon(ctx context.Context, max int, errFor func(string) string) (int, error) {
	time.Sleep(q.pageTime) // the work of a page on a slow disk
	return q.Abandoner.Abandon(ctx, max, errFor)
}

// TestGiveUpAllOutlivesTheWriteTimeout: a give-up of a whole queue that
// takes longer than the admin listener's write timeout, page after page,
// still gets its answer: the timeout bounds a page, not the call.
func TestGiveUpAllOutlivesTheWriteTimeout(t *testing.T) {
	const writeTimeout = 200 * time.Millisecond
	l := fixture(t)
	appendTo(t, l, "slack", "late", 3000)
	o := v1Options(slowLog{l, writeTimeout})
	removedSlack(&o, func() bool { return true })
	srv := httptest.NewUnstartedServer(admin.Handler(o))
	srv.Config.WriteTimeout = writeTimeout
	srv.Start()
	defer srv.Close()
	req, err := http.NewRequest("POST", srv.URL+"/v1/sinks/slack/dlq/add", strings.NewReader(`{"all":true}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("POST dlq/add all taking %v with a write timeout of %v: %v", time.Since(start), writeTimeout, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"count": 3001`) {
		t.Fatalf("POST dlq/add all = %d %s, %v; want 200 with count 3001", resp.StatusCode, body, err)
	}
	if took := time.Since(start); took < 2*writeTimeout {
		t.Fatalf("the call took %v, not longer than the write timeout %v (the premise)", took, writeTimeout)
	}
}

// backLog is a log whose queues' Abandon sets back after each call: a
// reload brings the sink back during the first page.
type backLog struct {
	*memlog.Log
	back *atomic.Bool
}

func (l backLog) Queue(sink string) pipeline.Queue {
	return backQueue{l.Log.Queue(sink).(pipeline.Abandoner), l.back}
}

type backQueue struct {
	pipeline.Abandoner
	back *atomic.Bool
}

func (q backQueue) Abandon(ctx context.Context, max int, errFor func(string) string) (int, error) {
	defer q.back.Store(true)
	return q.Abandoner.Abandon(ctx, max, errFor)
}

// TestGiveUpAllAnswerWhenTheSinkComesBack: the 409 of a dlq add --all that
// a reload stopped says how many events it moved and that the sink, in
// the configuration again, delivers the rest; not to call again, which
// would only be refused with the same 409.
func TestGiveUpAllAnswerWhenTheSinkComesBack(t *testing.T) {
	l := fixture(t)
	appendTo(t, l, "slack", "late", 2500)
	var back atomic.Bool
	o := v1Options(backLog{l, &back})
	removedSlack(&o, func() bool { return !back.Load() })
	r := call(t, admin.Handler(o), "POST", "/v1/sinks/slack/dlq/add", token, `{"all":true}`)
	wantError(t, r, http.StatusConflict, "1000 events moved to the dead-letter queue")
	wantError(t, r, http.StatusConflict, "the sink delivers the rest")
	if strings.Contains(string(r.body), "call again") {
		t.Errorf("error = %s, want no advice to call again (the sink is configured: a call is refused)", r.body)
	}
}

// TestGiveUpAllRefusedReasonIsNotLogged: a dlq add --all whose reason is
// refused (400) moves nothing, and the log does not say it is giving up
// on the queue; an accepted reason is logged as the dead letters carry it.
func TestGiveUpAllRefusedReasonIsNotLogged(t *testing.T) {
	l := fixture(t)
	o := v1Options(l)
	removedSlack(&o, func() bool { return true })
	var buf strings.Builder
	o.Logger = slog.New(slog.NewTextHandler(&buf, nil))
	h := admin.Handler(o)
	appendTo(t, l, "slack", "late", 3)
	wantError(t, call(t, h, "POST", "/v1/sinks/slack/dlq/add", token, `{"all":true,"reason":"`+strings.Repeat("x", 2001)+`"}`), http.StatusBadRequest, "reason")
	if strings.Contains(buf.String(), "giving up") {
		t.Errorf("log after a refused reason:\n%s\nwant no line saying it gives up", buf.String())
	}
	if r := call(t, h, "POST", "/v1/sinks/slack/dlq/add", token, `{"all":true,"reason":"retired\u001b[2J"}`); r.code != http.StatusOK {
		t.Fatalf("POST dlq/add all = %d %s", r.code, r.body)
	}
	if !strings.Contains(buf.String(), `reason="retired [2J"`) {
		t.Errorf("log:\n%s\nwant the reason as the dead letters carry it", buf.String())
	}
}
