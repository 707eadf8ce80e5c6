package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
)

// TestRemovedSinkLeavesNoSeries: a reload that removes a sink removes its
// series for good, even while scrapes run (a scrape that read the sink's
// plugin just before the removal must not bring pipelined_sink_up back,
// for an alert on it would fire forever); a reload that adds it again
// gives it fresh series at zero. From a helper's review, whose reproducer
// left the series behind in 5 of 30 removals.
func TestRemovedSinkLeavesNoSeries(t *testing.T) {
	d, _, withGone := startKeepGone(t, Options{}, nil)
	scrape := func() string {
		rec := httptest.NewRecorder()
		d.metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					d.queueSamples(context.Background())
				}
			}
		})
	}
	defer wg.Wait()
	defer close(stop)
	for round := range 10 {
		withGone.Store(false)
		if err := d.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		if body := scrape(); strings.Contains(body, `sink="gone"`) {
			t.Errorf("round %d: after the reload removed sink gone, /metrics still has its series:\n%s", round, grepLines(body, `sink="gone"`))
		}
		withGone.Store(true)
		if err := d.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		if body := scrape(); !strings.Contains(body, `pipelined_deliveries_total{outcome="dead",sink="gone"} 0`) {
			t.Errorf("round %d: after the reload added sink gone again, /metrics lacks its dead-letter counter at 0:\n%s", round, grepLines(body, `sink="gone"`))
		}
	}
}

// grepLines returns the lines of text that contain sub.
func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestGiveUpsOfARemovedSinkGivenUpWhole: an event given up on by id while
// its sink was paused, then removed by a reload, goes to the dead-letter
// queue with the rest of the queue (dlq add --all); when a reload brings
// the sink back, its give-ups no longer name the event, so that a retry
// of the dead letter would deliver it rather than give up on it again.
func TestGiveUpsOfARemovedSinkGivenUpWhole(t *testing.T) {
	d, a, withGone := startKeepGone(t, Options{}, nil)
	ctx := t.Context()
	if _, err := d.sinks.pause("gone", true); err != nil {
		t.Fatal(err)
	}
	id := postEvent(t, a.ingest, `{"n":1}`)
	o := admin.Options{Log: d.db}
	d.giveUpOptions(&o)
	if res, err := admin.GiveUp(ctx, o, "gone", []string{id}, "bad data"); err != nil || res.Count != 1 {
		t.Fatalf("GiveUp(%s) at the paused sink = %+v, %v; want it given up on", id, res, err)
	}
	withGone.Store(false)
	if err := d.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := admin.GiveUpAll(ctx, o, "gone", "retired", nil); err != nil || res.Count != 1 {
		t.Fatalf("GiveUpAll(gone) after the reload removed it = %+v, %v; want the event moved", res, err)
	}
	if n := d.sinks.giveUpsOf("gone").Len(); n != 1 {
		t.Fatalf("gone's give-ups name %d events while it is removed, want the one given up on by id (the premise)", n)
	}
	withGone.Store(true)
	if err := d.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if gs := d.sinks.giveUpsOf("gone").List(); len(gs) != 0 {
		t.Errorf("gone's give-ups after the reload brought it back = %+v, want none (its event is a dead letter)", gs)
	}
}

// TestGiveUpAllStopsOnceTheSinkIsBack: a reload that brings a removed sink
// back starts its dispatcher before it is done (it waits, say, for the
// batch in flight of another sink it restarts); from the moment that
// dispatcher reads the queue, a dlq add --all of it stops with 409, as
// the README promises ("a reload that adds the sink back stops it before
// its next page"), instead of moving to the dead-letter queue, page after
// page, the events the operator has just asked to be delivered.
func TestGiveUpAllStopsOnceTheSinkIsBack(t *testing.T) {
	t.Setenv(pluginVar, "slow")
	logDir, goneDir, crmDir := t.TempDir(), t.TempDir(), t.TempDir()
	file := func(withGone bool, crmGen int) string {
		sink := func(name, dir, hold string, gen int) string {
			return fmt.Sprintf("[[sink]]\nname = %q\ncommand = %q\nconfig = { plugin_env = %q, dir = %q, hold = %q, gen = %d }\n",
				name, os.Args[0], pluginVar, dir, hold, gen)
		}
		// gone comes first: the reload starts its dispatcher, then waits
		// for crm's batch in flight before it restarts crm.
		rest, to := sink("crm", crmDir, "3s", crmGen), `["crm"]`
		if withGone {
			rest, to = sink("gone", goneDir, "1ms", 0)+rest, `["gone", "crm"]`
		}
		return sinksTOML("", logDir, rest+"[[route]]\nname = \"all\"\nwhen = \"true\"\nto = "+to+"\n")
	}
	var withGone atomic.Bool
	var crmGen atomic.Int64
	withGone.Store(true)
	load := func() (*config.Config, error) {
		return config.Parse("test.toml", []byte(file(withGone.Load(), int(crmGen.Load()))))
	}
	logs := &testlog.Buffer{}
	d, a := startDaemonWith(t, file(true, 0), Options{Load: load, Logger: slog.New(slog.NewJSONHandler(logs, nil))}, nil)
	ctx := t.Context()
	withGone.Store(false)
	if err := d.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	o := admin.Options{Log: d.db}
	d.giveUpOptions(&o)
	if _, err := admin.GiveUpAll(ctx, o, "gone", "", nil); err != nil {
		t.Fatalf("GiveUpAll(gone) while it is removed = %v, want nil (the premise)", err)
	}

	// crm holds a batch for 3s: the reload that restarts it waits for it.
	resp, err := http.Post("http://"+a.ingest+"/hooks/src", "application/json", strings.NewReader(`{"n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitUntil(t, "crm's plugin to hold a batch", func() bool {
		_, err := os.Stat(filepath.Join(crmDir, "entered"))
		return err == nil
	})
	withGone.Store(true)
	crmGen.Add(1)
	reloaded := make(chan error, 1)
	go func() { reloaded <- d.Reload(ctx) }()
	waitUntil(t, "the reload to start gone's dispatcher", func() bool {
		for _, r := range lines(t, logs, "sink restarted with its new plugin or config") {
			if r["sink"] == "gone" {
				return true
			}
		}
		return false
	})
	_, err = admin.GiveUpAll(ctx, o, "gone", "", nil)
	select {
	case rerr := <-reloaded:
		t.Fatalf("the reload returned (%v) before the check: crm's batch did not hold it (the premise)", rerr)
	default:
	}
	if !errors.Is(err, admin.ErrSinkConfigured) {
		t.Errorf("GiveUpAll(gone) once the reload started its dispatcher = %v, want ErrSinkConfigured", err)
	}
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
}

// startKeepGone starts the daemon, through startDaemonWith with o and
// setup, on keepGoneConfig with sink gone; the switch it returns says
// whether a reload finds gone in the configuration (true at first).
func startKeepGone(t *testing.T, o Options, setup func(*Daemon)) (*Daemon, daemonAddrs, *atomic.Bool) {
	t.Setenv(pluginVar, "deliver")
	file := keepGoneConfig(t.TempDir())
	withGone := &atomic.Bool{}
	withGone.Store(true)
	o.Load = func() (*config.Config, error) { return config.Parse("test.toml", []byte(file(withGone.Load()))) }
	d, a := startDaemonWith(t, file(true), o, setup)
	return d, a, withGone
}

// keepGoneConfig returns the configuration, with its log in dir, of a
// sink "keep" and, withGone, a sink "gone", both this test binary's
// deliver plugin, and a route of every event to them.
func keepGoneConfig(dir string) func(withGone bool) string {
	return func(withGone bool) string {
		sink := func(name string) string {
			return fmt.Sprintf("[[sink]]\nname = %q\ncommand = %q\nconfig = { plugin_env = %q }\n", name, os.Args[0], pluginVar)
		}
		rest, to := sink("keep"), `["keep"]`
		if withGone {
			rest, to = rest+sink("gone"), `["keep", "gone"]`
		}
		return sinksTOML("", dir, rest+"[[route]]\nname = \"all\"\nwhen = \"true\"\nto = "+to+"\n")
	}
}

// gateLog is the daemon's Badger log whose queues' first Abandon call
// stops at a gate, as a page on a slow disk: it closes entered, waits
// for open to be closed, moves its page, then closes returned.
type gateLog struct {
	*badgerlog.DB
	once                    *sync.Once
	entered, open, returned chan struct{}
}

func newGateLog(db *badgerlog.DB) gateLog {
	return gateLog{DB: db, once: &sync.Once{}, entered: make(chan struct{}), open: make(chan struct{}), returned: make(chan struct{})}
}

func (l gateLog) Queue(sink string) pipeline.Queue {
	return gateQueue{l.DB.Queue(sink).(pipeline.Abandoner), l}
}

type gateQueue struct {
	pipeline.Abandoner
	l gateLog
}

func (q gateQueue) Abandon(ctx context.Context, max int, errFor func(string) string) (int, error) {
	first := false
	q.l.once.Do(func() { first = true })
	if !first {
		return q.Abandoner.Abandon(ctx, max, errFor)
	}
	close(q.l.entered)
	<-q.l.open
	defer close(q.l.returned)
	return q.Abandoner.Abandon(ctx, max, errFor)
}

// TestReloadWaitsForTheGiveUpAllPage: a reload that brings a removed sink
// back while a page of dlq add --all is inside the log's Abandon waits for
// that page before the sink's dispatcher starts and before its give-ups
// are pruned. Before, the reload went on beside the page: it pruned the
// give-ups while the event given up on by id still waited, the page then
// moved that event to the dead-letter queue, and the give-up stayed; a
// later dlq retry of the dead letter sent it straight back to the
// dead-letter queue ("given up by an operator") instead of delivering it.
// On the Badger log, with the sink's real plugin.
func TestReloadWaitsForTheGiveUpAllPage(t *testing.T) {
	logs := &testlog.Buffer{}
	d, a, withGone := startKeepGone(t, Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))},
		func(d *Daemon) { d.openLog = openLog })
	ctx := t.Context()
	db, ok := d.db.(*badgerlog.DB)
	if !ok {
		t.Fatalf("the daemon's log is a %T, want the Badger log (the premise)", d.db)
	}

	// An event given up on by id while gone is paused, then gone removed.
	if _, err := d.sinks.pause("gone", true); err != nil {
		t.Fatal(err)
	}
	id := postEvent(t, a.ingest, `{"n":1}`)
	o := admin.Options{Log: db}
	d.giveUpOptions(&o)
	if res, err := admin.GiveUp(ctx, o, "gone", []string{id}, "bad data"); err != nil || res.Count != 1 {
		t.Fatalf("GiveUp(%s) at the paused sink = %+v, %v; want it given up on", id, res, err)
	}
	withGone.Store(false)
	if err := d.Reload(ctx); err != nil {
		t.Fatal(err)
	}

	// dlq add --all of gone, its page held inside Abandon.
	gate := newGateLog(db)
	o.Log = gate
	type outcome struct {
		res admin.DeadLetterResult
		err error
	}
	gaveUp := make(chan outcome, 1)
	go func() {
		res, err := admin.GiveUpAll(ctx, o, "gone", "retired", nil)
		gaveUp <- outcome{res, err}
	}()
	select {
	case <-gate.entered:
	case r := <-gaveUp:
		t.Fatalf("GiveUpAll(gone) = %+v, %v before its first page (the premise)", r.res, r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("GiveUpAll(gone) did not reach its first page in 10s")
	}

	// The reload that brings gone back, in the middle of the page.
	withGone.Store(true)
	type reloadOutcome struct {
		err       error
		pageEnded bool // when Reload returned
	}
	reloaded := make(chan reloadOutcome, 1)
	var returned atomic.Bool
	go func() {
		err := d.Reload(ctx)
		ended := false
		select {
		case <-gate.returned:
			ended = true
		default:
		}
		returned.Store(true)
		reloaded <- reloadOutcome{err, ended}
	}()
	waitUntil(t, "the reload to return or to wait for the page", func() bool {
		return returned.Load() || len(lines(t, logs, "reload: waiting for the page of pipelined dlq add --all")) > 0
	})
	select {
	case <-gate.returned:
		t.Fatal("the page ended before the reload came (the premise)")
	default:
	}
	close(gate.open)
	g := <-gaveUp
	r := <-reloaded
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.pageEnded {
		t.Errorf("the reload that brought gone back returned while a page of dlq add --all of its queue was in progress, want it to wait for the page")
	}
	if g.res.Count != 1 || !errors.Is(g.err, admin.ErrSinkConfigured) {
		t.Errorf("GiveUpAll(gone) = %+v, %v; want its page (1 event) moved, then ErrSinkConfigured", g.res, g.err)
	}
	if gs := d.sinks.giveUpsOf("gone").List(); len(gs) != 0 {
		t.Errorf("gone's give-ups after the reload = %+v, want none (its event is a dead letter)", gs)
	}

	// What the operator sees: the dead letter, retried, is delivered.
	if _, err := d.sinks.pause("gone", false); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+a.admin+"/v1/sinks/gone/dlq/retry", "application/json", strings.NewReader(`{"ids":[`+strconv.Quote(id)+`]}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"count": 1`) {
		t.Fatalf("POST dlq/retry of %s = %d %s, want it retried", id, resp.StatusCode, body)
	}
	var rec pipeline.DeliveryRecord
	waitUntil(t, "gone's retried event to be settled", func() bool {
		rs, err := db.Deliveries(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range rs {
			if x.Sink == "gone" {
				rec = x
			}
		}
		return rec.State == pipeline.StateDelivered || rec.State == pipeline.StateDead
	})
	if rec.State != pipeline.StateDelivered {
		t.Errorf("gone's event %s after a dlq retry: %s (%s), want delivered", id, rec.State, rec.LastError)
	}
}

// postEvent posts body to the daemon's source src and returns the event's
// id.
func postEvent(t *testing.T, ingest, body string) string {
	t.Helper()
	resp, err := http.Post("http://"+ingest+"/hooks/src", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || resp.StatusCode != http.StatusOK || ans.ID == "" {
		t.Fatalf("POST /hooks/src = %d, %v; want 200 with an id", resp.StatusCode, err)
	}
	return ans.ID
}

// TestPauseOfARemovedSinkHoldsItWhenItComesBack: a sink removed from the
// configuration can be paused, and the pause holds its dispatcher when a
// reload adds it back, so that its waiting queue is not delivered at once:
// the way to bring a sink back and look first. Resumed, it delivers.
func TestPauseOfARemovedSinkHoldsItWhenItComesBack(t *testing.T) {
	d, a, withGone := startKeepGone(t, Options{}, nil)
	ctx := t.Context()
	ready := func() int {
		st, err := d.db.Queue("gone").Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.Ready + st.Retrying
	}

	// An event waits for gone (paused), then gone is removed.
	if _, err := d.sinks.pause("gone", true); err != nil {
		t.Fatal(err)
	}
	postEvent(t, a.ingest, `{"n":1}`)
	withGone.Store(false)
	if err := d.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.sinks.pause("gone", false); err != nil {
		t.Fatalf("resume of the removed sink: %v", err)
	}
	if n := ready(); n != 1 {
		t.Fatalf("gone's queue holds %d events once removed, want 1 (the premise)", n)
	}

	// Paused while removed, then added back.
	if changed, err := d.sinks.pause("gone", true); err != nil || !changed {
		t.Fatalf("pause of the removed sink = %v, %v; want it paused", changed, err)
	}
	withGone.Store(true)
	if err := d.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	sr := d.sinks.list()
	var disp *dispatch.Dispatcher
	for _, r := range sr {
		if r.name == "gone" {
			disp = r.disp.Load()
		}
	}
	if disp == nil {
		t.Fatal("no dispatcher for gone after the reload that added it back")
	}
	if !disp.Status().Paused {
		t.Fatal("gone's dispatcher runs after the reload that added it back, want it paused as it was while removed")
	}
	if n := ready(); n != 1 {
		t.Fatalf("gone's queue holds %d events while paused, want 1", n)
	}
	if _, err := d.sinks.pause("gone", false); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "gone's queue to be delivered once resumed", func() bool { return ready() == 0 })
}
