package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// scriptedMetrics serves a /metrics exposition shaped like the daemon's, in
// which sink "archive" has the queue depth and oldest age that script gives
// for the time since the first scrape, and sink "idle" is always empty.
// It returns the metrics URL.
func scriptedMetrics(t *testing.T, script func(time.Duration) (depth int, age float64)) string {
	t.Helper()
	var mu sync.Mutex
	var t0 time.Time
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if t0.IsZero() {
			t0 = time.Now()
		}
		elapsed := time.Since(t0)
		mu.Unlock()
		depth, age := script(elapsed)
		ready := (depth + 1) / 2 // the depth is the sum of the states
		fmt.Fprintf(w, `# HELP pipelined_queue_depth Entries waiting in a sink's queue, by sink and state.
# TYPE pipelined_queue_depth gauge
pipelined_queue_depth{sink="archive",state="ready"} %d
pipelined_queue_depth{sink="archive",state="retrying"} %d
pipelined_queue_depth{sink="idle",state="ready"} 0
pipelined_queue_depth{sink="idle",state="retrying"} 0
# TYPE pipelined_queue_oldest_age_seconds gauge
pipelined_queue_oldest_age_seconds{sink="archive"} %g
pipelined_queue_oldest_age_seconds{sink="idle"} 0
# TYPE pipelined_ingest_duration_seconds histogram
pipelined_ingest_duration_seconds_bucket{source="callkaro",le="+Inf"} 12
`, ready, depth-ready, age)
	})
	return serve(t, &http.Server{Handler: h}) + "metrics"
}

func sinkLag(t *testing.T, rep *Report, sink string) SinkLag {
	t.Helper()
	for _, l := range rep.Sinks {
		if l.Sink == sink {
			return l
		}
	}
	t.Fatalf("report has no sink %q: %+v", sink, rep.Sinks)
	return SinkLag{}
}

func TestQueueLagAndDrain(t *testing.T) {
	// The window is [100, 700] ticks after the first scrape; every step of
	// the script is at least 50 ticks from the window's ends. A tick is 4 ms:
	// margins of 200 ms, which a loaded machine's scheduling does not
	// cross (1 ms ticks, 50 ms margins, were crossed in a full make test).
	ms := 4 * time.Millisecond
	metrics := scriptedMetrics(t, func(e time.Duration) (int, float64) {
		switch {
		case e < 50*ms:
			return 0, 0
		case e < 150*ms: // start of the window
			return 10, 0.5
		case e < 550*ms:
			return 20, 1.0
		case e < 650*ms:
			return 25, 3.0
		case e < 750*ms: // end of the window
			return 30, 2.0
		case e < 900*ms: // draining, load stopped at about 700 ms
			return 15, 1.0
		}
		return 0, 0
	})
	cfg := testConfig(t, serve(t, newBareServer()))
	cfg.Conns, cfg.Warmup, cfg.Duration = 2, 100*ms, 600*ms
	cfg.MetricsURL, cfg.Sample, cfg.DrainTimeout = metrics, 20*ms, 2*time.Second
	rep, err := run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Errors != 0 || rep.MetricsErrors != 0 || len(rep.Sinks) != 2 {
		t.Fatalf("report %+v: want no errors and sinks archive and idle", rep)
	}
	a := sinkLag(t, rep, "archive")
	if a.Samples < 15 || a.LagP50S != 1.0 || a.LagP99S != 3.0 || a.LagMaxS != 3.0 {
		t.Errorf("archive lag = %+v, want p50 1, p99 3, max 3 over ≥ 15 samples", a)
	}
	if a.DepthStart != 10 || a.DepthEnd != 30 || a.DepthMax != 30 || a.Growth != 20 {
		t.Errorf("archive depth = %+v, want start 10, end 30, max 30, growth 20", a)
	}
	if drain := time.Duration(a.DrainS * float64(time.Second)); !a.Drained || drain < 100*ms || drain > 400*ms {
		t.Errorf("archive drain = %v after %.3fs, want drained after about %v", a.Drained, a.DrainS, 200*ms)
	}
	idle := sinkLag(t, rep, "idle")
	if !idle.Drained || time.Duration(idle.DrainS*float64(time.Second)) > 100*ms || idle.DepthMax != 0 || idle.LagMaxS != 0 || idle.Samples != a.Samples {
		t.Errorf("idle = %+v, want empty throughout and drained at once", idle)
	}

	var out bytes.Buffer
	printReport(&out, rep)
	if !strings.Contains(out.String(), "queue lag") || !strings.Contains(out.String(), "archive") {
		t.Errorf("text report has no sink table:\n%s", out.String())
	}
}

func TestUndrainedSinkFails(t *testing.T) {
	metrics := scriptedMetrics(t, func(e time.Duration) (int, float64) { return 3, e.Seconds() })
	url := serve(t, newBareServer())
	var out, errOut bytes.Buffer
	code := mainErr([]string{"run", "-url", url, "-c", "1", "-d", "200ms", "-warmup", "0s", "-json",
		"-metrics", metrics, "-sample", "50ms", "-drain-timeout", "300ms"}, &out, &errOut)
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("-json output is not JSON: %v\n%s", err, out.String())
	}
	a := sinkLag(t, &rep, "archive")
	if code != 1 || a.Drained || a.DrainS < 0.3 || a.DrainS > 1 || a.DepthEnd != 3 || a.Growth != 0 ||
		!strings.Contains(errOut.String(), "sink archive did not drain within 300ms") {
		t.Errorf("exit %d, archive %+v, stderr %s; want exit 1, not drained after 0.3s", code, a, errOut.String())
	}
	if strings.Contains(errOut.String(), "sink idle") || !sinkLag(t, &rep, "idle").Drained {
		t.Errorf("the empty sink idle was reported as not drained: %s", errOut.String())
	}
	if !strings.Contains(out.String(), `"lag_p99_s"`) || !strings.Contains(out.String(), `"drained": false`) {
		t.Errorf("-json output lacks the sink fields:\n%s", out.String())
	}
}

func TestUnreadableMetricsFailsBeforeLoad(t *testing.T) {
	var posts atomic.Int64
	target := serve(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		bareHandler().ServeHTTP(w, r)
	})})
	other := serve(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "# TYPE go_goroutines gauge\ngo_goroutines 7\n")
	})})
	rebuilding := serve(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "# TYPE pipelined_queues_rebuilding gauge\npipelined_queues_rebuilding 1\n")
	})})
	// A port nothing listens on, closed after the servers above started:
	// closed before them, it was handed to one of them in a run.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String() + "/metrics"
	ln.Close()
	for _, tc := range []struct{ url, want string }{
		{dead, "read metrics " + dead + ": dial tcp " + ln.Addr().String() + ": connect: connection refused"},
		// A daemon just started with a backlog: no queue gauges yet.
		{rebuilding + "metrics", "read metrics " + rebuilding + "metrics: the daemon is rebuilding its queues after its start: no pipelined_queue_depth yet"},
		// Some other program's metrics: no queue gauges.
		{other + "metrics", "read metrics " + other + "metrics: no pipelined_queue_depth series in the answer"},
		// Not a metrics endpoint at all: it answers JSON.
		{target + "metrics", "read metrics " + target + "metrics: not the Prometheus text format: "},
	} {
		var out, errOut bytes.Buffer
		code := mainErr([]string{"run", "-url", target, "-c", "1", "-d", "100ms", "-metrics", tc.url}, &out, &errOut)
		if code != 1 || !strings.HasPrefix(errOut.String(), "pipelined-load: "+tc.want) ||
			strings.Count(errOut.String(), "\n") != 1 || out.Len() != 0 {
			t.Errorf("-metrics %s: exit %d, stdout %q, stderr %q; want exit 1 and the one line %q", tc.url, code, out.String(), errOut.String(), tc.want)
		}
	}
	if n := posts.Load(); n != 1 { // the GET of the third case
		t.Errorf("target got %d requests, want only the metrics GET: no load without metrics", n)
	}
}
