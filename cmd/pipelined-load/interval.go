package main

import (
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// intervalLog (-interval) prints, every interval of the measured window and
// once at the end, one line on the answers that arrived in that interval:
// their count, latency p50, p99 and max (from the due time in open loop, as
// in the report), the failures, and what was still waiting at its end: the
// requests in flight and the age of the oldest, and (open loop) the slots
// already due but not yet sent; and (open loop) the latest that a request
// sent in the interval left after its due time: the generator's own delay,
// which is part of the latency (a starved generator, not the server). Answers are counted by the time they
// arrived, so a stall shows as in-flight age while it lasts and as the max
// of the interval in which it ends. For long runs (soaks), to line latency
// up with other per-second records (vmstat, the daemon's log) by wall clock.
type intervalLog struct {
	every time.Duration
	out   io.Writer
	s     *schedule
	rate  float64

	mu      sync.Mutex
	h       Histogram
	errs    int64
	sendLag time.Duration // open loop: the latest send after its due time
	from    time.Time     // start of the current interval
}

func newIntervalLog(every time.Duration, out io.Writer, s *schedule, rate float64) *intervalLog {
	return &intervalLog{every: every, out: out, s: s, rate: rate, from: s.warmupEnd}
}

// record counts a correct answer that arrived at done.
func (l *intervalLog) record(done time.Time, lat time.Duration) {
	if done.Before(l.s.warmupEnd) {
		return
	}
	l.mu.Lock()
	l.h.Record(lat)
	l.mu.Unlock()
}

// sent notes how late (open loop) a request left after its due time.
func (l *intervalLog) sent(lag time.Duration) {
	l.mu.Lock()
	l.sendLag = max(l.sendLag, lag)
	l.mu.Unlock()
}

// fail counts a failed answer that arrived at done.
func (l *intervalLog) fail(done time.Time) {
	if done.Before(l.s.warmupEnd) {
		return
	}
	l.mu.Lock()
	l.errs++
	l.mu.Unlock()
}

// run prints a line at the end of every interval until loadDone is closed,
// then one for the last (partial) interval.
func (l *intervalLog) run(workers []*worker, loadDone <-chan struct{}) {
	if d := time.Until(l.s.warmupEnd); d > 0 {
		select {
		case <-time.After(d):
		case <-loadDone:
			return
		}
	}
	t := time.NewTicker(l.every)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			l.flush(now, workers)
		case <-loadDone:
			l.flush(time.Now(), workers)
			return
		}
	}
}

// flush writes the line of the interval ending at now and starts the next.
func (l *intervalLog) flush(now time.Time, workers []*worker) {
	l.mu.Lock()
	lat := latencyMS(&l.h)
	errs, from, lag := l.errs, l.from, l.sendLag
	l.h, l.errs, l.from, l.sendLag = Histogram{}, 0, now, 0
	l.mu.Unlock()

	inflight, oldest := 0, time.Duration(0)
	for _, w := range workers {
		if due := w.inflightDue.Load(); due != 0 {
			inflight++
			oldest = max(oldest, now.Sub(time.Unix(0, due)))
		}
	}
	behind := int64(0)
	if l.rate > 0 {
		dueSlots := min(int64(math.Floor(now.Sub(l.s.start).Seconds()*l.rate)), int64(math.Ceil(l.s.end.Sub(l.s.start).Seconds()*l.rate)))
		behind = max(0, dueSlots-l.s.next.Load())
	}
	fmt.Fprintf(l.out, "interval %s %.1fs answered=%d p50_ms=%.3f p99_ms=%.3f max_ms=%.3f errors=%d inflight=%d oldest_inflight_ms=%.1f behind=%d send_lag_max_ms=%.1f\n",
		now.UTC().Format("2006-01-02T15:04:05.000Z"), now.Sub(from).Seconds(), lat.Count, lat.P50, lat.P99, lat.Max, errs,
		inflight, float64(oldest)/1e6, behind, float64(lag)/1e6)
}

// inflight marks a worker's request as sent (due is its due time) or done.
type inflight struct{ atomic.Int64 }
