package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// intervalFields parses the key=value fields of the -interval lines.
func intervalFields(t *testing.T, out string) []map[string]float64 {
	t.Helper()
	var lines []map[string]float64
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "interval" {
			t.Fatalf("not an interval line: %q", line)
		}
		if _, err := time.Parse("2006-01-02T15:04:05.000Z", f[1]); err != nil {
			t.Fatalf("line %q: time: %v", line, err)
		}
		m := map[string]float64{}
		for _, kv := range f[3:] {
			k, v, ok := strings.Cut(kv, "=")
			x, err := strconv.ParseFloat(v, 64)
			if !ok || err != nil {
				t.Fatalf("line %q: field %q", line, kv)
			}
			m[k] = x
		}
		lines = append(lines, m)
	}
	return lines
}

// A server that stalls for 400 ms once, in the middle of an open-loop run:
// the interval lines show the stall (in flight while it lasts, as the max of
// the interval where it ends), and the others stay fast; every answer of
// the window is counted in exactly one line.
func TestIntervalLinesShowAStall(t *testing.T) {
	var n atomic.Int64
	url := serve(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if n.Add(1) == 150 { // about 0.35 s into the run at 400/s
			time.Sleep(400 * time.Millisecond)
		}
		w.Write(bareAnswer)
	})})
	cfg := testConfig(t, url)
	var out bytes.Buffer
	cfg.Rate, cfg.Conns, cfg.Warmup, cfg.Duration = 400, 8, 0, time.Second
	cfg.Interval, cfg.IntervalOut = 100*time.Millisecond, &out
	rep, err := run(context.Background(), cfg)
	if err != nil || rep.Errors != 0 {
		t.Fatalf("run: %v, %+v", err, rep)
	}
	lines := intervalFields(t, out.String())
	if len(lines) < 9 || len(lines) > 12 {
		t.Fatalf("%d lines for 1 s at 100 ms:\n%s", len(lines), out.String())
	}
	var answered, stalled, inflightSeen int
	for _, l := range lines {
		answered += int(l["answered"])
		if l["max_ms"] >= 390 {
			stalled++
		}
		if l["oldest_inflight_ms"] >= 50 {
			inflightSeen++
		}
		if _, ok := l["send_lag_max_ms"]; !ok {
			t.Errorf("line %v: no send_lag_max_ms", l)
		}
		if l["errors"] != 0 || l["p50_ms"] > l["p99_ms"] || l["p99_ms"] > l["max_ms"] {
			t.Errorf("line %v", l)
		}
	}
	if int64(answered) != rep.Latency.Count {
		t.Errorf("lines count %d answers, the report %d:\n%s", answered, rep.Latency.Count, out.String())
	}
	if stalled != 1 || inflightSeen < 2 {
		t.Errorf("stall seen as max in %d lines (want 1), as in-flight in %d (want >= 2):\n%s", stalled, inflightSeen, out.String())
	}
}

// Without -interval nothing is printed; with it, cmdRun writes the lines to stderr.
func TestIntervalFlag(t *testing.T) {
	url := serve(t, newBareServer())
	var out, errOut bytes.Buffer
	if code := mainErr([]string{"run", "-url", url, "-c", "2", "-d", "300ms", "-warmup", "0s", "-rate", "100", "-interval", "100ms"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if lines := intervalFields(t, errOut.String()); len(lines) < 3 {
		t.Fatalf("want >= 3 lines:\n%s", errOut.String())
	}
	errOut.Reset()
	if code := mainErr([]string{"run", "-url", url, "-c", "2", "-d", "100ms", "-warmup", "0s"}, &out, &errOut); code != 0 || errOut.Len() != 0 {
		t.Fatalf("exit %d, stderr %q: want nothing without -interval", code, errOut.String())
	}
}

// With one sender, a stall of the server holds back the requests due
// meanwhile: they leave late, and send_lag_max_ms says so.
func TestIntervalLinesShowSendLag(t *testing.T) {
	var n atomic.Int64
	url := serve(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if n.Add(1) == 20 {
			time.Sleep(300 * time.Millisecond)
		}
		w.Write(bareAnswer)
	})})
	cfg := testConfig(t, url)
	var out bytes.Buffer
	cfg.Rate, cfg.Conns, cfg.Warmup, cfg.Duration = 100, 1, 0, 600*time.Millisecond
	cfg.Interval, cfg.IntervalOut = 100*time.Millisecond, &out
	if _, err := run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for _, l := range intervalFields(t, out.String()) {
		worst = max(worst, l["send_lag_max_ms"])
	}
	if worst < 250 {
		t.Errorf("send_lag_max_ms at most %.1f, want >= 250 after a 300 ms stall with one sender:\n%s", worst, out.String())
	}
}
