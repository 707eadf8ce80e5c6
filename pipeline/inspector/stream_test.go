package inspector_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/inspector"
	"github.com/pipelined/pipelined/pipeline/inspector/inspectortest"
	"github.com/pipelined/pipelined/pipeline/writer"
)

// TestReplayAndTailStreams runs a replay from the form and follows its
// progress stream to the end, follows the live tail while an event is
// appended, and then checks that [inspector.UI.Run] ends both kinds of
// stream when its context ends.
func TestReplayAndTailStreams(t *testing.T) {
	db := memlog.New()
	w := writer.New(db, nil)
	defer w.Close()
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		if _, err := w.Append(ctx, pipeline.Entry{Event: pipeline.Event{ID: id, Source: "s", ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "crm", Route: "r"}}}); err != nil {
			t.Fatal(err)
		}
	}
	base, stop := runUI(t, inspector.Options{Admin: admin.Options{Log: db, AllowUnauthenticated: true}, Subscribe: w.Subscribe,
		SinkNames: func() []string { return []string{"crm"} }})
	c := client(t)
	_, page := get(t, c, base+"/ui/replay")
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no csrf token on the replay page")
	}
	resp, err := c.PostForm(base+"/ui/replay", url.Values{"csrf": {m[1]}, "sink": {"crm"}, "since": {"1h"}, "all_events": {"1"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	job := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(job, "/ui/replay/") {
		t.Fatalf("POST /ui/replay = %d to %q, want 303 to the job's page", resp.StatusCode, job)
	}
	events := stream(t, c, base+job+"/stream")
	var last string
	for ev := range events {
		last = ev
		if strings.HasPrefix(ev, "event: done") {
			break
		}
	}
	if !strings.Contains(last, `"done":true`) || !strings.Contains(last, `"scanned":3`) {
		t.Errorf("the last progress event = %q, want done with 3 scanned", last)
	}
	// The stream ends after done; its slot is given back before that
	// (the handler returns first), and the 16 tails below need it.
	for range events {
	}

	tail := stream(t, c, base+"/ui/tail/stream?source=s")
	if hello := <-tail; !strings.HasPrefix(hello, "event: hello") {
		t.Fatalf("the tail's first event = %q, want hello", hello)
	}
	if _, err := w.Append(ctx, pipeline.Entry{Event: pipeline.Event{ID: "d", Source: "s", ReceivedAt: time.Now().UTC(), Body: []byte(`{"x":1}`)}}); err != nil {
		t.Fatal(err)
	}
	if ev := <-tail; !strings.Contains(ev, `"id":"d"`) {
		t.Errorf("the tail sent %q, want event d", ev)
	}
	// Streams are bounded, tails and replay progress together: with 16
	// tails open, a replay's progress stream is refused too.
	for i := 1; i < 16; i++ {
		if hello := <-stream(t, c, base+"/ui/tail/stream"); !strings.HasPrefix(hello, "event: hello") {
			t.Fatalf("tail %d: first event %q, want hello", i+1, hello)
		}
	}
	for _, u := range []string{"/ui/tail/stream", job + "/stream"} {
		resp, _ := get(t, c, base+u)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("GET %s with 16 streams open = %d, want 503", u, resp.StatusCode)
		}
	}
	stop()
	select {
	case _, open := <-tail:
		for open {
			_, open = <-tail
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the tail stream did not end when Run's context ended")
	}
}

// runUI serves the admin API with the UI made of o (its Admin with the UI
// set) and runs the UI until stop is called or the test ends; it returns
// the server's URL and stop.
func runUI(t *testing.T, o inspector.Options) (string, func()) {
	t.Helper()
	ui := inspector.New(o)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { ui.Run(ctx); close(ran) }()
	stop := sync.OnceFunc(func() { cancel(); <-ran })
	o.Admin.UI = ui
	srv := httptest.NewServer(admin.Handler(o.Admin))
	// Cleanups run last first: stop ends the open streams, then Close
	// (which waits for them) can return, also after a t.Fatal.
	t.Cleanup(srv.Close)
	t.Cleanup(stop)
	return srv.URL, stop
}

// stream reads the server-sent events of u, one string per event, until
// the stream ends (the channel is then closed).
func stream(t *testing.T, c *http.Client, u string) <-chan string {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("GET %s = %d %s", u, resp.StatusCode, ct)
	}
	return events(resp)
}

// events reads the server-sent events of resp, one string per event,
// until the stream ends (the channel is then closed).
func events(resp *http.Response) <-chan string {
	out := make(chan string, 64)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var ev strings.Builder
		for sc.Scan() {
			if sc.Text() == "" {
				out <- ev.String()
				ev.Reset()
				continue
			}
			ev.WriteString(sc.Text() + "\n")
		}
	}()
	return out
}

// tailServer serves the UI of a writer it makes over HTTP, its live
// tail's writes through the gate it returns, with subscriptions of buf
// entries (of the size the tail asks for when buf < 0), sent on subs as
// they are made, and pings every ping (the default when 0). The cleanup
// releases the gate and ends the streams before it closes the server,
// then the writer.
func tailServer(t *testing.T, buf int, ping time.Duration) (w *writer.Writer, g *inspectortest.TailGate, subs <-chan *writer.Subscription, srvURL string) {
	t.Helper()
	w = writer.New(memlog.New(), nil)
	t.Cleanup(func() { w.Close() })
	made := make(chan *writer.Subscription, 1)
	ao := admin.Options{Log: memlog.New(), AllowUnauthenticated: true}
	ui := inspector.New(inspector.Options{Admin: ao, Subscribe: func(asked int, source string) *writer.Subscription {
		if buf >= 0 {
			asked = buf
		}
		s := w.Subscribe(asked, source)
		made <- s
		return s
	}})
	if ping > 0 {
		inspector.SetTailPing(ui, ping)
	}
	runCtx, stop := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { ui.Run(runCtx); close(ran) }()
	ao.UI = ui
	g = inspectortest.NewTailGate()
	srv := httptest.NewServer(g.Wrap(admin.Handler(ao)))
	t.Cleanup(func() { g.Release(); stop(); <-ran; srv.Close() }) // the stream ends first
	return w, g, made, srv.URL
}

// droppedEvent decodes ev, a live tail's "dropped" event.
func droppedEvent(t *testing.T, ev string) (d struct{ Dropped uint64 }) {
	t.Helper()
	if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimPrefix(ev, "event: dropped\n"), "data: ")), &d); err != nil {
		t.Fatalf("dropped event %q: %v", ev, err)
	}
	return d
}

// TestTailSaysWhatItDropped holds the live tail's stream while events
// come faster than it sends them (its writes to the connection wait, as
// to a browser that does not read), and checks that every event of the
// tail's source is either shown or counted in a "dropped" event, the
// count the page shows as "N events not shown"; events of other sources
// are neither.
func TestTailSaysWhatItDropped(t *testing.T) {
	ctx := context.Background()
	w, g, subs, srvURL := tailServer(t, -1, 0)

	tail := stream(t, client(t), srvURL+"/ui/tail/stream?source=s")
	if hello := <-tail; !strings.HasPrefix(hello, "event: hello") {
		t.Fatalf("the tail's first event = %q, want hello", hello)
	}
	sub := <-subs
	appended := 0 // events of source s
	add := func(id, source string) {
		t.Helper()
		if _, err := w.Append(ctx, pipeline.Entry{Event: pipeline.Event{ID: id, Source: source, ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)}}); err != nil {
			t.Fatal(err)
		}
		if source == "s" {
			appended++
		}
	}
	g.Hold()
	add("first", "s")
	select { // the stream took "first" and now waits to write it
	case <-g.Blocked():
	case <-time.After(10 * time.Second):
		t.Fatal("the tail stream never wrote the first event")
	}
	const buffered, over = 256, 10
	for i := range buffered + over {
		add(fmt.Sprint("ev-", i), "s")
		if i%20 == 0 {
			add(fmt.Sprint("other-", i), "other")
		}
	}
	if err := w.Ping(ctx); err != nil { // every entry has been offered
		t.Fatal(err)
	}
	if n, held := sub.Dropped(), len(sub.C); n != over || held != buffered {
		t.Fatalf("premise: the tail's subscription holds %d and dropped %d, want %d and %d", held, n, buffered, over)
	}
	g.Release()

	var shown []string
	var dropped uint64
	for len(shown) < 1+buffered {
		ev, ok := <-tail
		if !ok {
			t.Fatalf("the stream ended after %d events", len(shown))
		}
		if strings.HasPrefix(ev, "event: dropped\n") {
			d := droppedEvent(t, ev)
			if d.Dropped <= dropped {
				t.Errorf("dropped event says %d after %d: it is a total, it only grows", d.Dropped, dropped)
			}
			dropped = d.Dropped
			continue
		}
		var e struct{ ID, Source string }
		if err := json.Unmarshal([]byte(strings.TrimPrefix(ev, "data: ")), &e); err != nil {
			t.Fatalf("tail event %q: %v", ev, err)
		}
		if e.Source != "s" {
			t.Errorf("the tail of source s sent %s of source %q", e.ID, e.Source)
		}
		shown = append(shown, e.ID)
	}
	add("last", "s")
	if ev := <-tail; !strings.Contains(ev, `"id":"last"`) {
		t.Errorf("after the burst the tail sent %q, want event last (and no other dropped event)", ev)
	}
	shown = append(shown, "last")
	if dropped != over || len(shown)+int(dropped) != appended {
		t.Errorf("the tail showed %d events and said %d were not shown; %d of its source were appended, want %d not shown",
			len(shown), dropped, appended, over)
	}
	for i, id := range shown[1 : 1+buffered] {
		if want := fmt.Sprint("ev-", i); id != want {
			t.Fatalf("shown event %d = %s, want %s (in log order)", i+1, id, want)
		}
	}
}

// TestTailPingSaysWhatItDropped: an entry dropped when the tail had
// nothing left to send, and after which no entry comes, is told on the
// next ping, through the real handler over HTTP. The subscription has no
// room at all (buffer 0), and the stream waits to write its hello (as to
// a browser that does not read yet) while an event of its source is
// appended: the writer counts it dropped and the stream has no entry to
// send after it, so only the ping can say so. Later pings say nothing
// more: the count did not grow.
func TestTailPingSaysWhatItDropped(t *testing.T) {
	ctx := context.Background()
	w, g, subs, srvURL := tailServer(t, 0, 20*time.Millisecond)

	g.Hold()
	type got struct {
		resp *http.Response
		err  error
	}
	opened := make(chan got, 1)
	c := client(t)
	go func() { // the answer's headers wait for the hello, which waits at the gate
		resp, err := c.Get(srvURL + "/ui/tail/stream?source=s")
		opened <- got{resp, err}
	}()
	var sub *writer.Subscription
	select {
	case sub = <-subs:
	case <-time.After(10 * time.Second):
		t.Fatal("the tail stream never subscribed")
	}
	select { // the stream waits to write its hello
	case <-g.Blocked():
	case <-time.After(10 * time.Second):
		t.Fatal("the tail stream never wrote its hello")
	}
	for _, e := range []struct{ id, source string }{{"lost", "s"}, {"elsewhere", "other"}} {
		if _, err := w.Append(ctx, pipeline.Entry{Event: pipeline.Event{ID: e.id, Source: e.source, ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Ping(ctx); err != nil { // every entry has been offered
		t.Fatal(err)
	}
	if n, held := sub.Dropped(), len(sub.C); n != 1 || held != 0 {
		t.Fatalf("premise: the tail's subscription dropped %d and holds %d, want 1 and 0", n, held)
	}
	g.Release()
	o := <-opened
	if o.err != nil {
		t.Fatal(o.err)
	}
	if ct := o.resp.Header.Get("Content-Type"); o.resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("GET /ui/tail/stream = %d %s", o.resp.StatusCode, ct)
	}
	tail := events(o.resp)
	want := []string{"hello", "ping", "dropped", "ping", "ping"}
	for i, name := range want {
		ev, ok := <-tail
		if !ok {
			t.Fatalf("the stream ended after %d events, want %q", i, want)
		}
		if got := strings.TrimPrefix(strings.SplitN(ev, "\n", 2)[0], "event: "); got != name {
			t.Fatalf("event %d = %q, want %s (events %q)", i+1, ev, name, want)
		}
		if name == "dropped" {
			d := droppedEvent(t, ev)
			if d.Dropped != 1 {
				t.Errorf("the ping's dropped event says %d, want 1 (the event of source s; not the other source's)", d.Dropped)
			}
		}
	}
}

// heldLog is a log whose Events waits until release is closed: a replay
// on it runs until then.
type heldLog struct {
	pipeline.Log
	release chan struct{}
}

func (l heldLog) Events(ctx context.Context, f pipeline.EventFilter) ([]pipeline.EventInfo, string, error) {
	select {
	case <-l.release:
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
	return l.Log.Events(ctx, f)
}

// TestReplaysRunningAreBounded: the UI runs at most four replays at once
// and refuses a fifth with 429 saying why; once they finish, the next one
// starts.
func TestReplaysRunningAreBounded(t *testing.T) {
	l := heldLog{Log: memlog.New(), release: make(chan struct{})}
	base, _ := runUI(t, inspector.Options{Admin: admin.Options{Log: l, AllowUnauthenticated: true},
		SinkNames: func() []string { return []string{"crm"} }})
	c := client(t)
	replay := func() (int, string) {
		t.Helper()
		_, page := get(t, c, base+"/ui/replay")
		m := csrfRE.FindStringSubmatch(page)
		if m == nil {
			t.Fatal("no csrf token on the replay page")
		}
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		defer func() { c.CheckRedirect = nil }()
		resp, err := c.PostForm(base+"/ui/replay", url.Values{"csrf": {m[1]}, "sink": {"crm"}, "since": {"1h"}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for i := range 4 {
		if code, body := replay(); code != http.StatusSeeOther {
			t.Fatalf("replay %d = %d, want 303 to its page:\n%s", i+1, code, body)
		}
	}
	if code, body := replay(); code != http.StatusTooManyRequests || !strings.Contains(body, "4 replays are running") {
		t.Errorf("a fifth replay while four run = %d, want 429 saying why:\n%s", code, body)
	}
	close(l.release) // the four finish
	deadline := time.Now().Add(10 * time.Second)
	for code, _ := replay(); code != http.StatusSeeOther; code, _ = replay() {
		if time.Now().After(deadline) {
			t.Fatalf("a replay after the four finished = %d, want 303", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReplayPageSplitsWhatItLeftAlone: the replay job's page shows, of
// the events the replay left alone (already_queued), those in the
// dead-letter queue (in_dead_letter_queue) apart from those still queued.
func TestReplayPageSplitsWhatItLeftAlone(t *testing.T) {
	db := memlog.New()
	w := writer.New(db, nil)
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range []string{"a", "b", "c"} {
		if _, err := w.Append(ctx, pipeline.Entry{Event: pipeline.Event{ID: id, Source: "s", ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "crm", Route: "r"}}}); err != nil {
			t.Fatal(err)
		}
	}
	q := db.Queue("crm")
	ds, err := q.Fetch(ctx, 10)
	if err != nil || len(ds) != 3 {
		t.Fatalf("Fetch = %d, %v", len(ds), err)
	}
	// a stays leased (queued), b is delivered, c dead.
	if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[1].Seq, Outcome: pipeline.Ack}, {Seq: ds[2].Seq, Outcome: pipeline.Dead, Err: "422"}}); err != nil {
		t.Fatal(err)
	}
	base, _ := runUI(t, inspector.Options{Admin: admin.Options{Log: db, AllowUnauthenticated: true}, Subscribe: w.Subscribe,
		SinkNames: func() []string { return []string{"crm"} }})
	c := client(t)
	_, page := get(t, c, base+"/ui/replay")
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no csrf token on the replay page")
	}
	resp, err := c.PostForm(base+"/ui/replay", url.Values{"csrf": {m[1]}, "sink": {"crm"}, "since": {"1h"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	job := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(job, "/ui/replay/") {
		t.Fatalf("POST /ui/replay = %d to %q, want 303 to the job's page", resp.StatusCode, job)
	}
	for ev := range stream(t, c, base+job+"/stream") {
		if strings.HasPrefix(ev, "event: done") {
			if !strings.Contains(ev, `"already_queued":2`) || !strings.Contains(ev, `"in_dead_letter_queue":1`) {
				t.Errorf("the last progress event = %q, want 2 already queued of which 1 in the dead-letter queue", ev)
			}
			break
		}
	}
	_, page = get(t, c, base+job)
	for _, want := range []string{`id="rp-enqueued">1<`, `id="rp-already">1<`, `id="rp-dead">1<`} {
		if !strings.Contains(page, want) {
			t.Errorf("the replay job's page has no %s", want)
		}
	}
}
