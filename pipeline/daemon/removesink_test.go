package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/config"
)

// TestRemovedSinkLeavesNoSeries: a reload that removes a sink removes its
// series for good, even while scrapes run (a scrape that read the sink's
// plugin just before the removal must not bring pipelined_sink_up back,
// for an alert on it would fire forever); a reload that adds it again
// gives it fresh series at zero. From a helper's review, whose reproducer
// left the series behind in 5 of 30 removals.
func TestRemovedSinkLeavesNoSeries(t *testing.T) {
	t.Setenv(pluginVar, "deliver")
	dir := t.TempDir()
	file := keepGoneConfig(dir)
	var withGone atomic.Bool
	load := func() (*config.Config, error) { return config.Parse("test.toml", []byte(file(withGone.Load()))) }
	d, _ := startDaemonWith(t, file(true), Options{Load: load}, nil)
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
	t.Setenv(pluginVar, "deliver")
	dir := t.TempDir()
	file := keepGoneConfig(dir)
	var withGone atomic.Bool
	withGone.Store(true)
	load := func() (*config.Config, error) { return config.Parse("test.toml", []byte(file(withGone.Load()))) }
	d, a := startDaemonWith(t, file(true), Options{Load: load}, nil)
	ctx := t.Context()
	if _, err := d.sinks.pause("gone", true); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+a.ingest+"/hooks/src", "application/json", strings.NewReader(`{"n":1}`))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST = %v, %v", resp, err)
	}
	var ans struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&ans)
	resp.Body.Close()
	o := admin.Options{Log: d.db, GiveUps: d.giveUpSet}
	if res, err := admin.GiveUp(ctx, o, "gone", []string{ans.ID}, "bad data"); err != nil || res.Count != 1 {
		t.Fatalf("GiveUp(%s) at the paused sink = %+v, %v; want it given up on", ans.ID, res, err)
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
	o := admin.Options{Log: d.db, GiveUps: d.giveUpSet}
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
