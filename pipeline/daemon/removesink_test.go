package daemon

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

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
	file := func(withGone bool) string {
		sink := func(name string) string {
			return fmt.Sprintf("[[sink]]\nname = %q\ncommand = %q\nconfig = { plugin_env = %q }\n", name, os.Args[0], pluginVar)
		}
		rest, to := sink("keep"), `["keep"]`
		if withGone {
			rest, to = rest+sink("gone"), `["keep", "gone"]`
		}
		return sinksTOML("", dir, rest+"[[route]]\nname = \"all\"\nwhen = \"true\"\nto = "+to+"\n")
	}
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
