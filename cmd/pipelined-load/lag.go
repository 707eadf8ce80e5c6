package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The daemon's gauges that -metrics reads.
const (
	depthMetric = "pipelined_queue_depth"              // {sink, state}: entries queued
	ageMetric   = "pipelined_queue_oldest_age_seconds" // {sink}: age of the oldest queued event
)

// SinkLag is how one sink's queue behaved during a run with -metrics. The
// lag and depth figures are over the samples of the measured window (one
// every -sample): a distribution of samples, not of events.
type SinkLag struct {
	Sink    string `json:"sink"`
	Samples int    `json:"samples"` // samples inside the measured window
	// LagP50S, LagP99S and LagMaxS are percentiles of the queue lag, the age
	// of the oldest event still queued for the sink, in seconds.
	LagP50S float64 `json:"lag_p50_s"`
	LagP99S float64 `json:"lag_p99_s"`
	LagMaxS float64 `json:"lag_max_s"`
	// DepthStart, DepthEnd and DepthMax are events queued (ready and
	// retrying) at the first and last sample of the window and at most;
	// Growth is DepthEnd - DepthStart.
	DepthStart int64 `json:"depth_start"`
	DepthEnd   int64 `json:"depth_end"`
	DepthMax   int64 `json:"depth_max"`
	Growth     int64 `json:"growth"`
	// DrainS is the time from the last answer of the load to the first
	// sample where the queue was empty (when that sample's answer arrived: an
	// upper bound, to within one -sample interval); if Drained is false, the queue was
	// still not empty after -drain-timeout, and DrainS is the time waited.
	DrainS  float64 `json:"drain_s"`
	Drained bool    `json:"drained"`
}

// scrapeError is a metrics endpoint that could not be read before the load
// started: the run is not made.
type scrapeError struct {
	URL string
	Err error
}

func (e *scrapeError) Error() string { return "read metrics " + e.URL + ": " + e.Err.Error() }
func (e *scrapeError) Unwrap() error { return e.Err }

// Phases of a run, as a sample is tagged with them.
const (
	phaseWarmup = iota
	phaseWindow // the measured window, both ends included
	phaseAfter  // after the window: draining
)

// queueSample is one scrape of the queue gauges.
type queueSample struct {
	at    time.Time // when the answer arrived: the gauges were read before
	phase int
	depth map[string]float64 // sink → entries queued, all states summed
	age   map[string]float64 // sink → age of its oldest queued event, seconds
}

// queueWatch samples the daemon's queue gauges during a run. Only its watch
// goroutine touches it until watch returns.
type queueWatch struct {
	url    string
	every  time.Duration
	drain  time.Duration
	client *http.Client

	samples  []queueSample
	stopped  time.Time     // when the last request of the load was answered
	waited   time.Duration // from stopped to the last sample
	errs     int64         // failed scrapes during the run
	firstErr string
}

func newQueueWatch(cfg *config) *queueWatch {
	return &queueWatch{
		url:    cfg.MetricsURL,
		every:  cfg.Sample,
		drain:  cfg.DrainTimeout,
		client: &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second},
	}
}

func (q *queueWatch) close() { q.client.CloseIdleConnections() }

// first takes the sample before the warmup; its failure is the run's.
func (q *queueWatch) first(ctx context.Context) error {
	s, err := q.scrape(ctx)
	if err != nil {
		return &scrapeError{URL: q.url, Err: err}
	}
	q.samples = append(q.samples, s)
	return nil
}

// watch samples every q.every and at the two ends of the measured window
// [warmupEnd, end]. Once loadDone is closed it samples at once, then every
// q.every until every sink's queue is empty or q.drain has passed.
func (q *queueWatch) watch(ctx context.Context, warmupEnd, end time.Time, loadDone <-chan struct{}) {
	tick := time.NewTicker(q.every)
	defer tick.Stop()
	atStart, atEnd := time.After(time.Until(warmupEnd)), time.After(time.Until(end))
	var deadline time.Time
	phase := phaseWarmup
	for {
		p := phase
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-atStart:
			phase, p = phaseWindow, phaseWindow
		case <-atEnd:
			phase, p = phaseAfter, phaseWindow
		case <-loadDone:
			loadDone = nil
			q.stopped = time.Now()
			deadline = q.stopped.Add(q.drain)
			phase, p = phaseAfter, phaseAfter
		}
		s, err := q.scrape(ctx)
		if err != nil && ctx.Err() == nil {
			if q.errs++; q.firstErr == "" {
				q.firstErr = err.Error()
			}
		}
		if err == nil {
			s.phase = p
			q.samples = append(q.samples, s)
		}
		if now := time.Now(); !q.stopped.IsZero() && ((err == nil && empty(s)) || !now.Before(deadline)) {
			q.waited = now.Sub(q.stopped)
			return
		}
	}
}

func empty(s queueSample) bool {
	for _, d := range s.depth {
		if d != 0 {
			return false
		}
	}
	return true
}

// scrape reads the queue gauges once.
func (q *queueWatch) scrape(ctx context.Context) (queueSample, error) {
	s := queueSample{depth: map[string]float64{}, age: map[string]float64{}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, q.url, nil)
	if err != nil {
		return s, err
	}
	resp, err := q.client.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // it would repeat the URL
		}
		return s, err
	}
	defer resp.Body.Close()
	s.at = time.Now()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("status %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return s, fmt.Errorf("not the Prometheus text format: %w", err)
	}
	for _, m := range fams[depthMetric].GetMetric() {
		s.depth[sinkOf(m)] += m.GetGauge().GetValue()
	}
	for _, m := range fams[ageMetric].GetMetric() {
		s.age[sinkOf(m)] = m.GetGauge().GetValue()
	}
	if len(s.depth) == 0 {
		if m := fams["pipelined_queues_rebuilding"].GetMetric(); len(m) > 0 && m[0].GetGauge().GetValue() == 1 {
			return s, errors.New("the daemon is rebuilding its queues after its start: no " + depthMetric + " yet")
		}
		return s, errors.New("no " + depthMetric + " series in the answer")
	}
	return s, nil
}

// sinkOf returns the value of m's sink label.
func sinkOf(m *dto.Metric) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == "sink" {
			return l.GetValue()
		}
	}
	return ""
}

// summary reduces the samples to one SinkLag per sink, by name.
func (q *queueWatch) summary() []SinkLag {
	var names []string
	for _, s := range q.samples {
		for sink := range s.depth {
			if !slices.Contains(names, sink) {
				names = append(names, sink)
			}
		}
	}
	slices.Sort(names)
	out := make([]SinkLag, 0, len(names))
	for _, sink := range names {
		l := SinkLag{Sink: sink}
		var ages []float64
		for _, s := range q.samples {
			d, ok := s.depth[sink]
			if !ok {
				continue
			}
			depth := int64(d)
			if s.phase == phaseWindow {
				if l.Samples == 0 {
					l.DepthStart = depth
				}
				l.Samples++
				l.DepthEnd = depth
				l.DepthMax = max(l.DepthMax, depth)
				ages = append(ages, s.age[sink])
			}
			if depth == 0 && !l.Drained && !q.stopped.IsZero() && !s.at.Before(q.stopped) {
				l.Drained, l.DrainS = true, s.at.Sub(q.stopped).Seconds()
			}
		}
		if !l.Drained {
			l.DrainS = q.waited.Seconds()
		}
		l.Growth = l.DepthEnd - l.DepthStart
		slices.Sort(ages)
		l.LagP50S, l.LagP99S = nearestRank(ages, 0.50), nearestRank(ages, 0.99)
		if len(ages) > 0 {
			l.LagMaxS = ages[len(ages)-1]
		}
		out = append(out, l)
	}
	return out
}

// nearestRank returns the q-quantile of the sorted xs: the smallest x with
// at least a fraction q of xs at or below it.
func nearestRank(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return xs[max(0, int(math.Ceil(q*float64(len(xs))))-1)]
}
