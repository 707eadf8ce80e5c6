package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/dispatch"
)

// What a stop says while it waits. A shutdown that is over within
// stopGrace says nothing more than "shutting down"; one that waits longer
// says what it waits for (which sinks, how many events, how long so far,
// how long until its deadline) after stopGrace and then every stopEvery,
// in the log and in systemd's status, so that an operator watching
// `journalctl -f` or `systemctl status` knows why it takes time and what
// a deadline that passes costs.
const (
	stopGrace = 2 * time.Second
	stopEvery = 5 * time.Second
	// pluginStopTimeout bounds the stop of each plugin (its Close, then
	// its exit); one that is not over by then is killed.
	pluginStopTimeout = 10 * time.Second
	// writerGrace is how long past shutdown_timeout the writer may still
	// take to commit what it holds: a healthy commit takes a millisecond
	// or so (one fdatasync; see docs/performance.md), so only a log that
	// cannot commit (a stalled disk, a JetStream stream without a
	// quorum) is given up on, and the requests still waiting are
	// answered 503 with Retry-After.
	writerGrace = time.Second
	// logCloseTimeout bounds the event log's Close, the stop's last step.
	// A healthy Badger log with both memtables full closes in 0.34 s on
	// average and 0.72 s at worst at the default memtable_size (16 MiB),
	// 2.6 s and 3.9 s at the largest (256 MiB), measured on a loaded
	// 2-core machine (BenchmarkCloseFullMemtable in badgerlog); JetStream's
	// Close takes at most its request timeout (5 s) and a flush. 10 s is
	// 2.5 times the slowest healthy close, so that it is given up on only
	// when the log is stuck.
	logCloseTimeout = 10 * time.Second
	// answerWait bounds the wait, once the writer gave up, for the ingest
	// handlers it released to write their 503s before the stop goes on.
	answerWait = time.Second
)

// stopTiming is when a stop reports and how long a plugin's stop, the
// writer past shutdown_timeout and the log's close may take; tests
// shorten them. The zero value means the constants above.
type stopTiming struct {
	grace, every, pluginStop, writerGrace, logClose time.Duration
}

func (t stopTiming) withDefaults() stopTiming {
	if t.grace <= 0 {
		t.grace = stopGrace
	}
	if t.every <= 0 {
		t.every = stopEvery
	}
	if t.pluginStop <= 0 {
		t.pluginStop = pluginStopTimeout
	}
	if t.writerGrace <= 0 {
		t.writerGrace = writerGrace
	}
	if t.logClose <= 0 {
		t.logClose = logCloseTimeout
	}
	return t
}

// waiting is one thing a stop waits for: a log line (its message and
// attributes) and its part of systemd's status line, "sink crm (500
// events in flight)".
type waiting struct {
	msg    string
	attrs  []any
	status string
}

// stopReport says what a stop waits for (see [stopGrace]). Each step of
// the stop names what it waits for with waitFor; a goroutine asks for the
// details when it is time to report.
type stopReport struct {
	log      *slog.Logger
	status   func(string) // systemd's status line; nil: none
	limit    string       // the setting that sets the deadline, for the status
	start    time.Time
	deadline time.Time

	what    atomic.Pointer[step]
	done    chan struct{}
	stopped chan struct{}
}

// reportStop starts reporting a stop that has until limit to finish,
// after t.grace and then every t.every, until stop is called. name is the
// setting that sets limit ("shutdown_timeout"), for the status line.
func reportStop(log *slog.Logger, status func(string), name string, limit time.Duration, t stopTiming) *stopReport {
	t = t.withDefaults()
	now := time.Now()
	r := &stopReport{log: log, status: status, limit: name, start: now, deadline: now.Add(limit),
		done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(r.stopped)
		tm := time.NewTimer(t.grace)
		defer tm.Stop()
		for {
			select {
			case <-r.done:
				return
			case <-tm.C:
			}
			r.say(time.Now())
			tm.Reset(t.every)
		}
	}()
	return r
}

// step is what a stop waits for: pending lists what is still pending when
// asked, none once it is over. A step bounded by the stop's deadline ends
// with it; one that may outlast it (the writer appending what it holds,
// which gets writerGrace more) is still reported past the deadline, as
// overdue.
type step struct {
	pending   func() []waiting
	unbounded bool
}

// waitFor makes pending what the stop waits for from now on, until its
// deadline at most.
func (r *stopReport) waitFor(pending func() []waiting) { r.what.Store(&step{pending: pending}) }

// waitPastDeadline is waitFor for a step that its deadline does not end.
func (r *stopReport) waitPastDeadline(pending func() []waiting) {
	r.what.Store(&step{pending: pending, unbounded: true})
}

// stop ends the reports; nothing is said after it returns.
func (r *stopReport) stop() {
	close(r.done)
	<-r.stopped
}

// say logs one line per thing the stop waits for at now, and sets the
// status.
func (r *stopReport) say(now time.Time) {
	st := r.what.Load()
	rem := r.deadline.Sub(now)
	if st == nil || (!st.unbounded && rem <= 0) {
		return // nothing yet, or a step that ends at the deadline, now
	}
	ws := st.pending()
	if len(ws) == 0 {
		return
	}
	waited, left := roundWait(now.Sub(r.start)), roundWait(rem)
	if rem > 0 && left <= 0 {
		left = rem.Round(time.Millisecond) // not "0s" before the deadline
	}
	lvl, timing := slog.LevelInfo, []any{"waited", waited.String(), "deadline_in", left.String()}
	if rem <= 0 {
		// Past the deadline: only a step that may outlast it (the
		// writer appending what it holds, for writerGrace more).
		lvl, timing = slog.LevelWarn, []any{"waited", waited.String(), "overdue", (-left).String()}
	}
	var parts []string
	for _, w := range ws {
		r.log.Log(context.Background(), lvl, w.msg, append(slices.Clip(w.attrs), timing...)...)
		parts = append(parts, w.status)
	}
	if r.status != nil {
		r.status(stoppingStatus(parts, left, r.limit))
	}
}

// stoppingStatus is systemd's status line while a stop waits for parts,
// with left until its deadline (set by limit): "stopping: waiting for
// sink crm (500 events in flight, 12s left)".
func stoppingStatus(parts []string, left time.Duration, limit string) string {
	when := fmt.Sprintf("%v left", left)
	if left <= 0 {
		when = fmt.Sprintf("%v past %s", -left, limit)
	}
	if len(parts) == 1 {
		if p, ok := strings.CutSuffix(parts[0], ")"); ok {
			return "stopping: waiting for " + p + ", " + when + ")"
		}
		return "stopping: waiting for " + parts[0] + " (" + when + ")"
	}
	return "stopping: waiting for " + strings.Join(parts, ", ") + "; " + when
}

// roundWait rounds a wait for the log: to the second from 10s on, else
// to a tenth of a second ("2s", "999ms" is "1s").
func roundWait(d time.Duration) time.Duration {
	if d >= 10*time.Second || d <= -10*time.Second {
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}

// countRequests counts the requests h serves at the moment in n, for the
// shutdown's report of the ingest requests it waits for.
func countRequests(h http.Handler, n *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		defer n.Add(-1)
		h.ServeHTTP(w, r)
	})
}

// ingestWaits is what the ingest listener's shutdown waits for: the
// requests in flight, n of them, or connections that have not handed a
// request over yet (a client still sending its headers).
func ingestWaits(n *atomic.Int64) func() []waiting {
	return func() []waiting {
		k := n.Load()
		if k == 0 {
			return []waiting{{msg: "shutting down: waiting for the ingest connections to close", status: "ingest connections"}}
		}
		return []waiting{{
			msg:    "shutting down: waiting for the ingest requests in flight to be answered",
			attrs:  []any{"requests", k},
			status: fmt.Sprintf("%s in flight", quantity(k, "ingest request")),
		}}
	}
}

// quantity says n things: "1 event", "500 events".
func quantity[N int | int64](n N, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// waitingOn is a wait for a single step described by msg and status.
func waitingOn(msg, status string) func() []waiting {
	return func() []waiting { return []waiting{{msg: msg, status: status}} }
}

// dispatchWaits is what stopping the dispatchers waits for: each sink
// whose dispatcher has not stopped, with the events of its batch in
// flight.
func (s *sinks) dispatchWaits() []waiting {
	var ws []waiting
	for _, sr := range s.list() {
		disp := sr.disp.Load()
		if disp == nil {
			continue
		}
		st := disp.Status()
		w := waiting{
			msg:    "shutting down: waiting for a sink's batch in flight to be settled",
			attrs:  []any{"sink", sr.name, "events", st.InFlight},
			status: fmt.Sprintf("sink %s (%s in flight)", sr.name, quantity(st.InFlight, "event")),
		}
		if st.InFlight == 0 { // between batches: recording what it held back, say
			w.msg = "shutting down: waiting for a sink's dispatcher to stop"
			w.status = fmt.Sprintf("sink %s", sr.name)
		}
		ws = append(ws, w)
	}
	return ws
}

// unsettled logs, for each dispatcher that a shutdown gave up on (errs
// from [sinks.stopDispatch]), that its events in flight are delivered
// again after the restart, and what to change to wait longer.
func (d *Daemon) unsettled(errs []error, limit time.Duration) {
	for _, err := range errs {
		var se *dispatch.StopError
		if !errors.As(err, &se) {
			d.log.Warn("dispatcher did not stop within shutdown_timeout", "err", err)
			continue
		}
		if se.Events == 0 {
			// Given up on between batches: nothing to deliver again.
			d.log.Debug("shutdown_timeout passed with nothing in flight", "sink", se.Sink)
			continue
		}
		d.log.Warn("shutdown_timeout passed: the sink's events in flight were not settled and will be delivered again after the restart (to wait longer, raise [server] shutdown_timeout and keep systemd's TimeoutStopSec at least 25s above it)",
			"sink", se.Sink, "events", se.Events, "shutdown_timeout", limit.String())
	}
}

// pluginStops tracks the plugins a stop waits for, for its report.
type pluginStops struct {
	mu   sync.Mutex
	pids map[string]int // by sink: the plugins not stopped yet
}

func (p *pluginStops) begin(sink string, pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pids == nil {
		p.pids = map[string]int{}
	}
	p.pids[sink] = pid
}

func (p *pluginStops) end(sink string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.pids, sink)
}

// waits lists the plugins not stopped yet, by sink name.
func (p *pluginStops) waits() []waiting {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ws []waiting
	for sink, pid := range p.pids {
		ws = append(ws, waiting{
			msg:    "shutting down: waiting for a sink plugin to exit",
			attrs:  []any{"sink", sink, "pid", pid},
			status: fmt.Sprintf("plugin of sink %s (pid %d)", sink, pid),
		})
	}
	slices.SortFunc(ws, func(a, b waiting) int { return strings.Compare(a.status, b.status) })
	return ws
}

// ErrUncleanStop is returned (wrapped) by [Daemon.Run] when its stop gave
// up on the event log: the writer could not commit what it held within
// [server] shutdown_timeout and a second more, or the log's Close did not
// end within its own bound (10s). Nothing acknowledged is lost (the log
// kept every event answered 2xx before the answer) and the requests still
// waiting were answered 503 with Retry-After; the log said so in one line.
// `pipelined serve` then exits 75 (EX_TEMPFAIL), so that systemd marks
// the stop as failed.
var ErrUncleanStop = errors.New("the stop gave up on the event log, which did not commit or close in time")

// gaveUp is what a stop gave up on, for the line that says so.
type gaveUp struct {
	// requests counts the entries the writer was given up on with
	// (answered 503), and writer is its error; nil when it finished.
	requests int
	writer   error
	// close is set when the log's Close did not end within its bound.
	close bool
}

func (g gaveUp) any() bool { return g.writer != nil || g.close }

// The line that says what a stop gave up on and why nothing acknowledged
// is lost, for each kind of log.
const (
	msgGaveUpWAL = "stop gave up on the event log, which did not commit or close in time: nothing acknowledged is lost " +
		"(every event answered 2xx was fsynced to the write-ahead log before its answer, and the next start replays it); " +
		"the requests still waiting for a commit were answered 503 with Retry-After and their senders send them again"
	msgGaveUpJetStream = "stop gave up on the event log, which did not commit or close in time: nothing acknowledged is lost " +
		"(every event answered 2xx was stored by the stream's replicas before its answer, and the deliveries this daemon leased " +
		"and did not settle go out again once their ack wait passes); " +
		"the requests still waiting for a commit were answered 503 with Retry-After and their senders send them again"
)

// sayGaveUp logs, in one line, what the stop gave up on and why that is
// safe, and returns the error for Run; nil when it gave up on nothing.
func (d *Daemon) sayGaveUp(g gaveUp, began time.Time) error {
	if !g.any() {
		return nil
	}
	cfg := d.cfg.Load()
	t := d.sinks.timing.withDefaults()
	var on []string
	if g.writer != nil {
		on = append(on, "appends")
	}
	if g.close {
		on = append(on, "close")
	}
	msg := msgGaveUpWAL
	if cfg.Log.Backend == "jetstream" {
		msg = msgGaveUpJetStream
	}
	d.log.Error(msg, "gave_up_on", strings.Join(on, ","), "requests_answered_503", g.requests, "backend", cmp.Or(cfg.Log.Backend, "badger"),
		"waited", roundWait(time.Since(began)).String(), "shutdown_timeout", cfg.Server.ShutdownTimeout.Duration.String(),
		"log_close_timeout", t.logClose.String())
	var errs []error
	if g.writer != nil {
		errs = append(errs, g.writer)
	}
	if g.close {
		errs = append(errs, fmt.Errorf("close of the event log not over after %v", t.logClose))
	}
	return fmt.Errorf("%w: %w", ErrUncleanStop, errors.Join(errs...))
}

// closeLog closes db within t.logClose, saying after t.grace that it waits
// for it; it reports whether it gave up. A Close given up on goes on in
// its goroutine until the process exits, which leaves the log as a crash
// would: what it holds was durable before it was acknowledged.
func (d *Daemon) closeLog(db pipeline.Log) (gaveUp bool) {
	t := d.sinks.timing.withDefaults()
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	select {
	case err := <-closed: // the usual case, without a report's goroutine
		d.closed(err)
		return false
	default:
	}
	rep := reportStop(d.log, d.stoppingStatus, "the event log's close timeout", t.logClose, t)
	defer rep.stop()
	rep.waitFor(waitingOn("shutting down: waiting for the event log to close", "the event log's close"))
	tm := time.NewTimer(t.logClose)
	defer tm.Stop()
	select {
	case err := <-closed:
		d.closed(err)
		return false
	case <-tm.C:
		return true
	}
}

func (d *Daemon) closed(err error) {
	if err != nil {
		d.log.Error("close event log", "err", err)
	}
}

// waitAnswered waits, up to within, until no ingest request is in flight:
// once the writer gave up, the handlers it released write their 503s.
// One still reading a slow sender's body is not waited for past within.
func waitAnswered(n *atomic.Int64, within time.Duration) {
	deadline := time.Now().Add(within)
	for n.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}
