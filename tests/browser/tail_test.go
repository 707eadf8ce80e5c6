package browser

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/inspector"
	"github.com/pipelined/pipelined/pipeline/inspector/inspectortest"
	"github.com/pipelined/pipelined/pipeline/writer"
	"github.com/pipelined/pipelined/tests/harness"
)

// TestLiveTailSaysWhatItMissed follows the live tail in Chromium while
// its stream is held (its writes to the connection wait, as they do when
// events come faster than the page takes them) and 266 events arrive: the
// stream's buffer takes 256, and the page says the 10 others were not
// shown. The UI runs in this process on the real writer, so that the
// stream can be held.
func TestLiveTailSaysWhatItMissed(t *testing.T) {
	harness.SkipIfShort(t)
	ctx := newBrowser(t)
	w := writer.New(memlog.New(), nil)
	defer w.Close()
	ao := admin.Options{Log: memlog.New(), AllowUnauthenticated: true}
	ui := inspector.New(inspector.Options{Admin: ao, Subscribe: w.Subscribe})
	runCtx, stop := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { ui.Run(runCtx); close(ran) }()
	ao.UI = ui
	g := inspectortest.NewTailGate()
	srv := httptest.NewServer(g.Wrap(admin.Handler(ao)))
	defer func() { g.Release(); stop(); <-ran; srv.Close() }()

	run(t, ctx, "the tail", chromedp.Navigate(srv.URL+"/ui/tail?source=s"), chromedp.WaitVisible(chromedp.ID("tail")))
	get(t, ctx, "the tail connects", chromedp.Poll[bool](`document.getElementById("tail-status").textContent.startsWith("Following")`, chromedp.WithPollingTimeout(10*time.Second)))
	if hidden := get(t, ctx, "the note", chromedp.Evaluate[bool](`document.getElementById("tail-dropped").hidden`)); !hidden {
		t.Fatal("the tail says events were not shown before any came")
	}
	add := func(id string) {
		t.Helper()
		if _, err := w.Append(context.Background(), pipeline.Entry{Event: pipeline.Event{ID: id, Source: "s", ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)}}); err != nil {
			t.Fatal(err)
		}
	}
	g.Hold()
	add("first")
	select { // the stream took "first" and waits to send it
	case <-g.Blocked():
	case <-time.After(10 * time.Second):
		t.Fatal("the tail stream never sent the first event")
	}
	for i := range 266 {
		add(fmt.Sprint("ev-", i))
	}
	if err := w.Ping(context.Background()); err != nil { // every entry has been offered to the stream
		t.Fatal(err)
	}
	g.Release()
	const want = "10 events not shown: the tail could not keep up. The event list has every event."
	get(t, ctx, "the note says what was not shown", chromedp.Poll[bool](
		`(function(){ var n = document.getElementById("tail-dropped"); return !n.hidden && n.textContent === `+fmt.Sprintf("%q", want)+`; })()`,
		chromedp.WithPollingTimeout(10*time.Second)))
	get(t, ctx, "the page counts what it showed", chromedp.Poll[bool](
		`document.getElementById("tail-status").textContent === "257 new events since you opened this page."`, chromedp.WithPollingTimeout(10*time.Second)))
}
