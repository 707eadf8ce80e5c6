package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// config is what `pipelined-load run` does.
type config struct {
	URL      string
	Conns    int           // connections (closed loop) or the most in flight (open loop)
	Duration time.Duration // measured window, after the warmup
	Warmup   time.Duration
	Rate     float64 // total requests/s; 0 means closed loop
	Dup      float64 // fraction of requests that resend an acknowledged callSid
	Timeout  time.Duration
	Body     *bodyTemplate
	// AnyOK accepts any 2xx without reading its body: for baselines
	// (Benthos, other receivers) that do not answer pipelined's JSON.
	AnyOK bool
	// MetricsURL, if set, is the daemon's admin /metrics: its queue gauges
	// are sampled every Sample during the run and, after it, until the
	// queues are empty or DrainTimeout has passed (lag.go).
	MetricsURL   string
	Sample       time.Duration
	DrainTimeout time.Duration
	// Interval, if positive, prints a line on each interval's answers to
	// IntervalOut (interval.go).
	Interval    time.Duration
	IntervalOut io.Writer
}

// Report is the outcome of a run; it is also the -json output.
type Report struct {
	Mode        string  `json:"mode"` // "closed" (fixed concurrency) or "open" (fixed rate)
	URL         string  `json:"url"`
	Connections int     `json:"connections"`
	Rate        float64 `json:"rate,omitempty"`
	Dup         float64 `json:"dup"`
	WarmupS     float64 `json:"warmup_s"`
	DurationS   float64 `json:"duration_s"`
	// Requests is the number of correct answers received inside the
	// measured window; RequestsPerSec is Requests / DurationS.
	Requests       int64     `json:"requests"`
	RequestsPerSec float64   `json:"requests_per_sec"`
	Latency        LatencyMS `json:"latency_ms"`
	Sent           int64     `json:"sent"`            // all requests, warmup included
	DuplicatesSent int64     `json:"duplicates_sent"` // of Sent, reusing an acknowledged callSid
	Unsent         int64     `json:"unsent,omitempty"`
	// SendLag (open loop) is how late requests left after their scheduled
	// time: the generator's own timer and scheduling delay plus any backlog.
	// It is part of Latency; if it is large while the server is idle, the
	// generator, not the server, is the limit.
	SendLag       *LatencyMS        `json:"send_lag_ms,omitempty"` // open loop: scheduled but never sent (backlog at the end)
	Errors        int64             `json:"errors"`                // failed answers, warmup included
	ErrorKinds    map[string]int64  `json:"error_kinds"`
	ErrorExamples map[string]string `json:"error_examples,omitempty"`
	// Sinks (with -metrics) is each sink's queue lag and depth in the
	// measured window, and how long its queue took to drain after the load.
	Sinks []SinkLag `json:"sinks,omitempty"`
	// MetricsErrors counts the metrics scrapes that failed during the run
	// (their samples are missing); MetricsError is the first one.
	MetricsErrors int64  `json:"metrics_errors,omitempty"`
	MetricsError  string `json:"metrics_error,omitempty"`
	// Generator is what the load generator itself spent while sending
	// (warmup included, the drain of -metrics not): on a machine it shares
	// with the server, that CPU is not the server's.
	Generator *GeneratorCost `json:"generator,omitempty"`
}

// GeneratorCost is the load generator's own CPU time and context switches
// (getrusage of the process) over the requests it sent.
type GeneratorCost struct {
	CPUS float64 `json:"cpu_s"` // user + system
	// CPUPerRequestUS is CPUS over Sent, in microseconds. It is not a
	// constant of the generator: part of its CPU is spent per second of
	// waiting (the Go runtime parking and waking its threads), so it is
	// higher against a server that answers more slowly (docs/performance.md,
	// twenty-fourth round).
	CPUPerRequestUS float64 `json:"cpu_us_per_request"`
	// Voluntary switches are the generator's threads going to sleep for
	// want of work (each is later woken); involuntary, preempted.
	VoluntarySwitchesPerRequest   float64 `json:"voluntary_switches_per_request"`
	InvoluntarySwitchesPerRequest float64 `json:"involuntary_switches_per_request"`
}

// rusage is the process's CPU time and context switches so far.
type rusage struct {
	cpu        time.Duration
	nvcsw, niv int64
}

func getUsage() (rusage, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return rusage{}, false
	}
	return rusage{
		cpu:   time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		nvcsw: int64(ru.Nvcsw), niv: int64(ru.Nivcsw),
	}, true
}

// generatorCost is what the process spent between u0 and now, over sent requests.
func generatorCost(u0 rusage, ok0 bool, sent int64) *GeneratorCost {
	u1, ok1 := getUsage()
	if !ok0 || !ok1 || sent <= 0 {
		return nil
	}
	n := float64(sent)
	cpu := u1.cpu - u0.cpu
	return &GeneratorCost{
		CPUS:                          cpu.Seconds(),
		CPUPerRequestUS:               float64(cpu.Microseconds()) / n,
		VoluntarySwitchesPerRequest:   float64(u1.nvcsw-u0.nvcsw) / n,
		InvoluntarySwitchesPerRequest: float64(u1.niv-u0.niv) / n,
	}
}

// LatencyMS holds latencies in milliseconds. In open-loop mode they are
// measured from the scheduled send time, not from the actual one.
type LatencyMS struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99.9"`
	Max   float64 `json:"max"`
}

var contentTypeJSON = []string{"application/json"}

// schedule is the state the workers of one run share.
type schedule struct {
	start, warmupEnd, end time.Time
	next                  atomic.Int64 // open loop: the next slot to claim
	ring                  sidRing
}

// sidRing keeps callSids the server has acknowledged as new, for -dup. Only
// acknowledged ids are reused, so the expected answer is certain: resending
// an id whose first request is still in flight would race with it.
type sidRing struct {
	mu  sync.Mutex
	ids [][]byte
	n   int
}

const ringSize = 4096

func (r *sidRing) add(id []byte) {
	r.mu.Lock()
	if len(r.ids) < ringSize {
		r.ids = append(r.ids, id)
	} else {
		r.ids[r.n%ringSize] = id
	}
	r.n++
	r.mu.Unlock()
}

func (r *sidRing) pick(rng *mrand.Rand) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ids) == 0 {
		return nil
	}
	return r.ids[rng.IntN(len(r.ids))]
}

type worker struct {
	cfg    *config
	s      *schedule
	client *http.Client
	rng    *mrand.Rand
	idPre  []byte // run nonce and worker number
	seq    uint64
	resp   bytes.Buffer

	hist Histogram
	iv   *intervalLog // -interval, or nil
	// inflightDue is the due time (UnixNano) of the request in flight, 0
	// when none: read by the interval log.
	inflightDue inflight
	lag         Histogram // open loop: actual send - scheduled send
	ok          int64     // correct answers completed inside the window
	sent        int64
	dupSent     int64
	errs        map[string]int64
	examples    map[string]string
}

// answer is the body the daemon sends with a 200.
type answer struct {
	ID        string `json:"id"`
	Duplicate *bool  `json:"duplicate"`
}

// run drives the load described by cfg and reports on it.
func run(ctx context.Context, cfg config) (*Report, error) {
	if cfg.Conns < 1 {
		return nil, errors.New("-c must be at least 1")
	}
	if cfg.Duration <= 0 || cfg.Warmup < 0 {
		return nil, errors.New("-d must be positive and -warmup not negative")
	}
	if cfg.Rate < 0 || cfg.Dup < 0 || cfg.Dup > 1 || math.IsNaN(cfg.Dup) || math.IsNaN(cfg.Rate) {
		return nil, errors.New("-rate must be >= 0 and -dup within [0, 1]")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if _, err := http.NewRequest(http.MethodPost, cfg.URL, nil); err != nil {
		return nil, err
	}
	var qw *queueWatch
	if cfg.MetricsURL != "" {
		if cfg.Sample <= 0 || cfg.DrainTimeout <= 0 {
			return nil, errors.New("-sample and -drain-timeout must be positive")
		}
		qw = newQueueWatch(&cfg)
		defer qw.close()
		if err := qw.first(ctx); err != nil {
			return nil, err
		}
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        cfg.Conns,
		MaxIdleConnsPerHost: cfg.Conns,
		MaxConnsPerHost:     cfg.Conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		// A non-nil empty map turns HTTP/2 off, even over TLS.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		Timeout:   cfg.Timeout,
		// A redirect is an error to count, not something to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	var nonce [8]byte
	rand.Read(nonce[:])
	s := &schedule{start: time.Now()}
	s.warmupEnd = s.start.Add(cfg.Warmup)
	s.end = s.warmupEnd.Add(cfg.Duration)
	loadDone := make(chan struct{})
	var watching sync.WaitGroup
	if qw != nil {
		watching.Go(func() { qw.watch(ctx, s.warmupEnd, s.end, loadDone) })
	}

	u0, ok0 := getUsage()
	var iv *intervalLog
	if cfg.Interval > 0 && cfg.IntervalOut != nil {
		iv = newIntervalLog(cfg.Interval, cfg.IntervalOut, s, cfg.Rate)
	}
	workers := make([]*worker, cfg.Conns)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{
			iv:       iv,
			cfg:      &cfg,
			s:        s,
			client:   client,
			rng:      mrand.New(mrand.NewPCG(uint64(s.start.UnixNano()), uint64(i))),
			idPre:    []byte(hex.EncodeToString(nonce[:]) + "-" + strconv.Itoa(i) + "-"),
			errs:     map[string]int64{},
			examples: map[string]string{},
		}
		workers[i] = w
		wg.Go(func() {
			if cfg.Rate > 0 {
				w.openLoop(ctx)
			} else {
				w.closedLoop(ctx)
			}
		})
	}
	if iv != nil {
		watching.Go(func() { iv.run(workers, loadDone) })
	}
	wg.Wait()
	var sent int64
	for _, w := range workers {
		sent += w.sent
	}
	gen := generatorCost(u0, ok0, sent)
	close(loadDone)
	watching.Wait()

	rep := &Report{
		Mode:        "closed",
		URL:         cfg.URL,
		Connections: cfg.Conns,
		Rate:        cfg.Rate,
		Dup:         cfg.Dup,
		WarmupS:     cfg.Warmup.Seconds(),
		DurationS:   cfg.Duration.Seconds(),
		ErrorKinds:  map[string]int64{},
		Generator:   gen,
	}
	var h, lag Histogram
	for _, w := range workers {
		h.Merge(&w.hist)
		lag.Merge(&w.lag)
		rep.Requests += w.ok
		rep.Sent += w.sent
		rep.DuplicatesSent += w.dupSent
		for k, n := range w.errs {
			rep.ErrorKinds[k] += n
			rep.Errors += n
		}
		for k, e := range w.examples {
			if rep.ErrorExamples == nil {
				rep.ErrorExamples = map[string]string{}
			}
			rep.ErrorExamples[k] = e
		}
	}
	if cfg.Rate > 0 {
		rep.Mode = "open"
		slots := int64(math.Ceil(float64(cfg.Warmup+cfg.Duration) * cfg.Rate / 1e9))
		rep.Unsent = max(0, slots-rep.Sent)
		l := latencyMS(&lag)
		rep.SendLag = &l
	}
	rep.RequestsPerSec = float64(rep.Requests) / cfg.Duration.Seconds()
	rep.Latency = latencyMS(&h)
	if qw != nil {
		rep.Sinks = qw.summary()
		rep.MetricsErrors, rep.MetricsError = qw.errs, qw.firstErr
	}
	return rep, ctx.Err()
}

func latencyMS(h *Histogram) LatencyMS {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return LatencyMS{
		Count: h.Count(),
		Mean:  ms(h.Mean()),
		P50:   ms(h.Quantile(0.50)),
		P90:   ms(h.Quantile(0.90)),
		P99:   ms(h.Quantile(0.99)),
		P999:  ms(h.Quantile(0.999)),
		Max:   ms(h.Max()),
	}
}

// closedLoop sends one request after another until the end of the run.
// Latency is from the actual send.
func (w *worker) closedLoop(ctx context.Context) {
	for ctx.Err() == nil {
		t0 := time.Now()
		if !t0.Before(w.s.end) {
			return
		}
		w.do(ctx, t0)
	}
}

// openLoop claims send slots at fixed intervals (slot i is due at
// start + i/rate, across all workers) and sends each at its due time, or as
// soon as it can if every worker was busy. Latency runs from the due time, so
// a server that stalls is charged for the requests it kept from being sent
// (no coordinated omission).
func (w *worker) openLoop(ctx context.Context) {
	for ctx.Err() == nil {
		i := w.s.next.Add(1) - 1
		due := w.s.start.Add(time.Duration(float64(i) * 1e9 / w.cfg.Rate))
		if !due.Before(w.s.end) {
			return
		}
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return
			}
		} else if !time.Now().Before(w.s.end) {
			return // backlog at the end of the run: reported as unsent
		}
		lag := time.Since(due)
		if !due.Before(w.s.warmupEnd) {
			w.lag.Record(lag)
		}
		if w.iv != nil {
			w.iv.sent(lag)
		}
		w.do(ctx, due)
	}
}

// nextSid returns the callSid of the next request and whether it reuses an
// acknowledged one.
func (w *worker) nextSid() ([]byte, bool) {
	if w.cfg.Dup > 0 && w.rng.Float64() < w.cfg.Dup {
		if sid := w.s.ring.pick(w.rng); sid != nil {
			return sid, true
		}
	}
	w.seq++
	sid := make([]byte, 0, len(w.idPre)+13)
	sid = append(sid, w.idPre...)
	return strconv.AppendUint(sid, w.seq, 36), false
}

// do sends one request due at the given time and checks its answer.
func (w *worker) do(ctx context.Context, due time.Time) {
	sid, dup := w.nextSid()
	// A fresh body each time: the transport may still hold the previous one.
	body := w.cfg.Body.render(make([]byte, 0, w.cfg.Body.size()+len(sid)), sid)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		w.fail("request", err.Error())
		return
	}
	req.Header["Content-Type"] = contentTypeJSON
	w.sent++
	if dup {
		w.dupSent++
	}
	w.inflightDue.Store(due.UnixNano())
	resp, err := w.client.Do(req)
	if err != nil {
		w.inflightDue.Store(0)
		if ctx.Err() == nil {
			w.fail(transportKind(err), err.Error())
			if w.iv != nil {
				w.iv.fail(time.Now())
			}
		}
		return
	}
	w.resp.Reset()
	_, err = w.resp.ReadFrom(resp.Body)
	resp.Body.Close()
	done := time.Now()
	w.inflightDue.Store(0)
	ok := false
	defer func() {
		if w.iv == nil {
			return
		}
		if ok {
			w.iv.record(done, done.Sub(due))
		} else {
			w.iv.fail(done)
		}
	}()
	if err != nil {
		w.fail(transportKind(err), err.Error())
		return
	}
	if w.cfg.AnyOK && resp.StatusCode/100 == 2 {
		resp.StatusCode = http.StatusOK
		w.resp.Reset()
		w.resp.WriteString(`{"id":"-"}`)
	}
	if resp.StatusCode != http.StatusOK {
		w.fail("status "+strconv.Itoa(resp.StatusCode), truncate(w.resp.String()))
		return
	}
	var ans answer
	if err := json.Unmarshal(w.resp.Bytes(), &ans); err != nil || ans.ID == "" {
		w.fail("bad body", truncate(w.resp.String()))
		return
	}
	if (ans.Duplicate == nil && w.cfg.Dup > 0) || (ans.Duplicate != nil && *ans.Duplicate != dup) {
		w.fail("duplicate mismatch", "sent duplicate="+strconv.FormatBool(dup)+", answer "+truncate(w.resp.String()))
		return
	}
	ok = true
	if w.cfg.Dup > 0 && !dup {
		w.s.ring.add(sid)
	}
	if !due.Before(w.s.warmupEnd) && due.Before(w.s.end) {
		w.hist.Record(done.Sub(due))
	}
	if !done.Before(w.s.warmupEnd) && !done.After(w.s.end) {
		w.ok++
	}
}

func (w *worker) fail(kind, example string) {
	w.errs[kind]++
	if _, ok := w.examples[kind]; !ok {
		w.examples[kind] = example
	}
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// transportKind names the kind of a transport error, for counting.
func transportKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "transport: timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "transport: connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "transport: connection reset"
	case errors.Is(err, syscall.EPIPE):
		return "transport: broken pipe"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "transport: unexpected EOF"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "transport: no local port"
	}
	return "transport: other"
}

// sortedKinds lists error kinds most frequent first.
func sortedKinds(m map[string]int64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		if m[ks[i]] != m[ks[j]] {
			return m[ks[i]] > m[ks[j]]
		}
		return ks[i] < ks[j]
	})
	return ks
}
