package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/pipeline/pluginhost"
	"github.com/pipelined/pipelined/pipeline/rules"
	"github.com/pipelined/pipelined/pipeline/telemetry"
)

// sinks is the set of sinks the daemon runs, by name, in config order.
// Sinks removed by a reload stay listed (state "removed") while their queue
// holds events, so operators see them.
type sinks struct {
	log     *slog.Logger
	db      pipeline.Log
	metrics *metrics.Metrics
	pauses  *pauses           // the sinks an operator paused; set by Run
	tracer  *telemetry.Tracer // nil: tracing off; set by Run

	// mu guards order, by, giveUps and pages; held for short sections
	// only, and never while waiting for a lock of pages (a page takes mu
	// under its lock, to ask whether its sink is still removed).
	mu    sync.Mutex
	order []string
	by    map[string]*sinkRun
	// giveUps are the entries given up on, by sink: kept here, not in a
	// sinkRun, so that a sink restarted by a reload keeps them.
	giveUps map[string]*dispatch.GiveUps
	// pages lock a removed sink's queue for a page of dlq add --all
	// against a reload that brings the sink back (see lockRemoved and
	// claim), by sink; made at a sink's first page.
	pages map[string]*sync.Mutex
	// giveUpStore keeps giveUps across restarts; nil: in memory only
	// (the JetStream backend, which offers no give-ups). Set by Run.
	giveUpStore *giveUpStore

	// timing is when a stop says what it waits for, and how long a
	// plugin's stop may take; zero: the defaults (see stopTiming).
	timing stopTiming
	// status tells systemd what a stop waits for; nil: no one.
	status func(string)
}

// sinkRun is one sink: its plugin supervisor, its queue and its dispatcher.
type sinkRun struct {
	name     string
	spec     pluginhost.Spec
	delivery config.Delivery
	orderKey *rules.Program         // delivery.order_key as config compiled it; nil when none
	sup      *pluginhost.Supervisor // nil once removed; see plugin and detach
	q        pipeline.Queue
	log      *slog.Logger
	metrics  *metrics.Metrics
	tracer   *telemetry.Tracer

	pauses *pauses
	// giveUps are the entries of the sink an operator gave up on, shared
	// by its dispatchers (see sinks.giveUpsOf).
	giveUps *dispatch.GiveUps

	// disp is nil when not dispatching. Atomic: the admin API reads it
	// (pause, status) while a reload replaces it.
	disp atomic.Pointer[dispatch.Dispatcher]

	// mu guards sup once the sink runs (the reload that removes the sink
	// clears it while the admin API and the metrics read it) and the
	// delivery outcomes below.
	mu        sync.Mutex
	failure   string    // why the last failed delivery failed
	failedAt  time.Time // when it did
	deliverAt time.Time // when a delivery last succeeded
}

// gone reports whether a sink is left out of /v1/sinks and of the queue
// series: a reload removed it and no event waits in its queue any more.
func gone(removed bool, st pipeline.QueueStats) bool {
	return removed && st.Ready+st.Retrying+st.Dead == 0
}

// plugin returns the sink's plugin supervisor, nil once a reload removed
// the sink.
func (sr *sinkRun) plugin() *pluginhost.Supervisor {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	return sr.sup
}

// reportUp sets pipelined_sink_up from the sink's plugin, and nothing for
// a removed sink, which it reports. It holds mu, so that a scrape cannot
// bring back the series that detach removed.
func (sr *sinkRun) reportUp() (removed bool) {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if sr.sup == nil {
		return true
	}
	sr.metrics.SinkUp(sr.name, sr.sup.Status().State == pluginhost.StateRunning)
	return false
}

// detach forgets the plugin of a sink that a reload removed (it was
// stopped), and removes the sink's series: a sink with no plugin is not
// down.
func (sr *sinkRun) detach() {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	sr.sup = nil
	sr.metrics.RemoveSink(sr.name)
}

// observe records the outcome of a batch for LAST ERROR.
func (sr *sinkRun) observe(r dispatch.Report) {
	now := time.Now()
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if r.Delivered > 0 {
		sr.deliverAt = now
	}
	if r.Failure != "" {
		sr.failure, sr.failedAt = r.Failure, now
	}
}

// lastError returns the sink's most recent failure, a plugin exit or
// failed start (from its supervisor's status) or a failed delivery, and
// when it happened; "" once a later delivery succeeded.
func (sr *sinkRun) lastError(st pluginhost.Status) (string, time.Time) {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	msg, at := sr.failure, sr.failedAt
	if st.Err != nil && st.ErrAt.After(at) {
		msg, at = st.Err.Error(), st.ErrAt
	}
	if msg == "" || sr.deliverAt.After(at) {
		return "", time.Time{}
	}
	return msg, at
}

// supervisor makes the supervisor of spec's plugin, not started.
func (s *sinks) supervisor(spec pluginhost.Spec) *pluginhost.Supervisor {
	return pluginhost.NewSupervisor(spec, &pluginhost.Options{Logger: s.log, Metrics: s.metrics})
}

// sinkRun makes the sink of spec, whose plugin sup supervises; the log
// must be open.
func (s *sinks) sinkRun(spec pluginhost.Spec, sup *pluginhost.Supervisor, d config.Delivery, orderKey *rules.Program) *sinkRun {
	return &sinkRun{
		name:     spec.Sink,
		spec:     spec,
		delivery: d,
		orderKey: orderKey,
		sup:      sup,
		q:        s.db.Queue(spec.Sink),
		log:      s.log,
		metrics:  s.metrics,
		pauses:   s.pauses,
		giveUps:  s.giveUpsOf(spec.Sink),
		tracer:   s.tracer,
	}
}

// giveUpsOf returns the entries of sink given up on, made at the first
// call.
func (s *sinks) giveUpsOf(sink string) *dispatch.GiveUps {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.giveUps[sink]
	if g == nil {
		if s.giveUps == nil {
			s.giveUps = map[string]*dispatch.GiveUps{}
		}
		g = &dispatch.GiveUps{}
		if s.giveUpStore != nil {
			g.Keep = s.giveUpStore.keeper(sink)
		}
		s.giveUps[sink] = g
	}
	return g
}

// lockRemoved locks sink's queue for one page of dlq add --all, for
// admin.Options.LockRemoved: a reload that brings the sink back waits for
// unlock before the sink's dispatcher starts (see claim). Only the pages
// of dlq add --all and such a reload take the lock: delivery never does.
func (s *sinks) lockRemoved(sink string) (unlock func()) {
	s.mu.Lock()
	m := s.pages[sink]
	if m == nil {
		if s.pages == nil {
			s.pages = map[string]*sync.Mutex{}
		}
		m = &sync.Mutex{}
		s.pages[sink] = m
	}
	s.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// claim makes sr the sink of its name, seen as configured from now on (a
// page of dlq add --all that starts after it is refused), then waits for
// the page of dlq add --all in progress on its queue, if any: a reload
// calls it before it starts the dispatcher of a sink that comes back or is
// new, so that no page overlaps the dispatcher and none is left to move
// to the dead-letter queue what the dispatcher fetches. A page is
// bounded (1,000 events, 30 s), so the reload waits for that much at most.
func (s *sinks) claim(sr *sinkRun) {
	s.mu.Lock()
	if s.by == nil {
		s.by = map[string]*sinkRun{}
	}
	s.by[sr.name] = sr
	m := s.pages[sr.name]
	s.mu.Unlock()
	if m == nil {
		return // no page was ever run on its queue
	}
	if !m.TryLock() {
		s.log.Info("reload: waiting for the page of pipelined dlq add --all in progress on the queue of a sink that comes back; its dispatcher starts after it",
			"sink", sr.name)
		m.Lock()
	}
	m.Unlock()
}

// pluginStart is a sink's plugin starting in the background.
type pluginStart struct {
	spec pluginhost.Spec
	sup  *pluginhost.Supervisor
	done chan struct{} // closed when Start has returned
	err  error         // what Start returned; read after done
}

// startPlugins starts the plugin of every spec, each in a goroutine of its
// own, and returns at once: a plugin's start is mostly its process's
// (exec, the Go runtime's start, the handshake, Configure), which the
// daemon only waits for.
func (s *sinks) startPlugins(ctx context.Context, specs []pluginhost.Spec) []*pluginStart {
	starts := make([]*pluginStart, len(specs))
	for i, spec := range specs {
		ps := &pluginStart{spec: spec, sup: s.supervisor(spec), done: make(chan struct{})}
		go func() {
			defer close(ps.done)
			ps.err = ps.sup.Start(ctx)
		}()
		starts[i] = ps
	}
	return starts
}

// stopStarts waits for starts and stops their plugins: the path of a
// start-up that fails before the sinks are installed.
func (s *sinks) stopStarts(starts []*pluginStart) {
	var wg sync.WaitGroup
	for _, ps := range starts {
		wg.Go(func() {
			<-ps.done
			stopSupervisor(s.log, ps.spec.Sink, ps.sup, s.timing.withDefaults().pluginStop, nil)
		})
	}
	wg.Wait()
}

// install makes runs the current sinks, in that order, keeping removed
// ones listed after them.
func (s *sinks) install(runs []*sinkRun) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.by == nil {
		s.by = map[string]*sinkRun{}
	}
	var order []string
	for _, sr := range runs {
		s.by[sr.name] = sr
		order = append(order, sr.name)
	}
	for _, name := range s.order {
		if !slices.Contains(order, name) {
			order = append(order, name)
		}
	}
	s.order = order
}

func (s *sinks) list() []*sinkRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*sinkRun, 0, len(s.order))
	for _, n := range s.order {
		out = append(out, s.by[n])
	}
	return out
}

func (sr *sinkRun) startDispatch() {
	disp := sr.pauses.attach(sr.name, func(paused bool) *dispatch.Dispatcher { return sr.newDispatcher(paused) })
	sr.metrics.InitSink(sr.name)
	sr.metrics.SinkBreaker(sr.name, false)
	sr.disp.Store(disp)
	go func() {
		if err := disp.Run(context.Background()); err != nil {
			sr.log.Error("dispatcher stopped", "sink", sr.name, "err", err)
		}
	}()
}

// newDispatcher returns the sink's dispatcher, paused or not.
func (sr *sinkRun) newDispatcher(paused bool) *dispatch.Dispatcher {
	return dispatch.New(dispatch.Options{
		Sink:        sr.name,
		Queue:       sr.q,
		Deliverer:   sr.sup,
		BatchMax:    sr.delivery.BatchMax,
		BatchWait:   sr.delivery.BatchWait.Duration,
		MaxAttempts: sr.delivery.MaxAttempts,
		BackoffMin:  sr.delivery.BackoffMin.Duration,
		BackoffMax:  sr.delivery.BackoffMax.Duration,
		MaxAge:      sr.delivery.MaxAge.Duration,

		BreakerFailures: sr.delivery.BreakerFailures,
		BreakerProbe:    sr.delivery.BreakerProbe.Duration,
		BreakerProbeMax: sr.delivery.BreakerProbeMax.Duration,
		Rate:            sr.delivery.Rate.PerSecond,
		Paused:          paused,
		OnBreaker:       func(open bool) { sr.metrics.SinkBreaker(sr.name, open) },
		Logger:          sr.log.With("component", "dispatch"),
		Tracing:         sr.tracer,
		Observe: func(r dispatch.Report) {
			sr.metrics.Delivery(sr.name, r.Delivered, r.Retried, r.NotAttempted, r.Dead, r.Duration, r.Err)
			sr.observe(r)
		},
		OrderKey:         sr.orderKeyFunc(),
		OrderBlockOnDead: sr.delivery.OrderOnDead == config.OrderOnDeadBlock,
		OnOrderKeyError:  func() { sr.metrics.OrderKeyError(sr.name) },
		GiveUps:          sr.giveUps,
		WrapUp:           sr.wrapUp,
	})
}

// wrapUp asks the sink's plugin to wrap up its delivery in flight: the
// dispatcher's stop does, when its deadline is near (see
// [dispatch.Options.WrapUp]).
func (sr *sinkRun) wrapUp(ctx context.Context) {
	if sr.sup == nil {
		return
	}
	if err := sr.sup.WrapUp(ctx); err != nil {
		sr.log.Warn("could not ask the sink plugin to wrap up its delivery in flight; it is waited for until the stop deadline", "sink", sr.name, "err", err)
	}
}

// stopDispatch stops the dispatcher after its in-flight batch is settled,
// or when ctx ends: then that batch is given up (its events are delivered
// again after a restart) and the dispatcher ends on its own soon after;
// the log says so.
func (sr *sinkRun) stopDispatch(ctx context.Context) {
	if err := sr.haltDispatch(ctx); err != nil {
		events := 0
		if se := (*dispatch.StopError)(nil); errors.As(err, &se) {
			events = se.Events
		}
		sr.log.Warn("dispatcher did not settle its batch in time; its events will be delivered again after a restart",
			"sink", sr.name, "events", events, "err", err)
	}
}

// haltDispatch is stopDispatch that returns the [*dispatch.StopError] of a
// batch given up on instead of logging it.
func (sr *sinkRun) haltDispatch(ctx context.Context) error {
	disp := sr.disp.Load()
	if disp == nil {
		return nil
	}
	err := disp.Stop(ctx)
	sr.disp.Store(nil)
	return err
}

// stopPlugin stops the sink's plugin, waiting up to within (a plugin not
// stopped by then is killed); track, when not nil, follows the stop for a
// stop's report.
func (sr *sinkRun) stopPlugin(within time.Duration, track *pluginStops) {
	if sr.sup == nil {
		return
	}
	stopSupervisor(sr.log, sr.name, sr.sup, within, track)
}

// stopSupervisor stops sink's plugin, waiting up to within: a plugin that
// has not stopped by then is killed, and the log says so, naming it.
// track, when not nil, follows the stop for a stop's report.
func stopSupervisor(log *slog.Logger, sink string, sup *pluginhost.Supervisor, within time.Duration, track *pluginStops) {
	pid := sup.Status().PID
	if track != nil {
		track.begin(sink, pid)
		defer track.end(sink)
	}
	ctx, cancel := context.WithTimeoutCause(context.Background(), within,
		fmt.Errorf("the plugin did not stop within %v", within))
	defer cancel()
	err := sup.Stop(ctx)
	switch {
	case errors.Is(err, pluginhost.ErrKilled):
		log.Warn("sink plugin did not stop in time and was killed (SIGKILL)", "sink", sink, "pid", pid, "timeout", within.String(), "err", err)
	case err != nil:
		log.Warn("stop sink plugin", "sink", sink, "err", err)
	}
}

// stopDispatch stops every dispatcher, in parallel, within ctx (see
// [sinkRun.stopDispatch]), and returns a [*dispatch.StopError] for each
// one that ctx ended before its batch in flight was settled.
func (s *sinks) stopDispatch(ctx context.Context) []error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, sr := range s.list() {
		wg.Go(func() {
			if err := sr.haltDispatch(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errs
}

// stopAll stops every dispatcher, then every plugin, each within the
// plugins' stop timeout (10s), saying which it waits for after stopGrace.
// Run has stopped the dispatchers within its shutdown deadline already;
// this stops those of the paths that end Run early, which started none.
func (s *sinks) stopAll() {
	s.stopDispatch(context.Background())
	t := s.timing.withDefaults()
	var track pluginStops
	rep := reportStop(s.log, s.status, "the plugins' stop timeout", t.pluginStop, t)
	defer rep.stop()
	rep.waitFor(track.waits)
	var wg sync.WaitGroup
	for _, sr := range s.list() {
		wg.Go(func() { sr.stopPlugin(t.pluginStop, &track) })
	}
	wg.Wait()
}

// sameSpec reports whether two specs start the same plugin the same way.
func sameSpec(a, b pluginhost.Spec) bool {
	return a.Sink == b.Sink && a.Plugin == b.Plugin && a.Command == b.Command && a.SHA256 == b.SHA256 &&
		slices.Equal(a.Dirs, b.Dirs) && jsonEqual(a.Config, b.Config)
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return string(a) == string(b)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

// applySinks makes the running sinks those of specs: sinks that are new or
// whose plugin or config changed get a new plugin, all started at once
// before anything else changes — if one fails, nothing changes; then old
// plugins of replaced sinks stop after their in-flight batch, and removed
// sinks stop. A batch in flight is waited for while ctx lasts.
func (s *sinks) applySinks(ctx context.Context, specs []pluginhost.Spec, cfgs []config.Sink, orderKeys map[string]*rules.Program) error {
	current := map[string]*sinkRun{}
	for _, sr := range s.list() {
		current[sr.name] = sr
	}
	next := make([]*sinkRun, len(specs))
	var freshSpecs []pluginhost.Spec // the sinks that get a new plugin, all started at once
	var at []int                     // their index in specs
	for i, spec := range specs {
		old := current[spec.Sink]
		if old != nil && old.sup != nil && sameSpec(old.spec, spec) {
			next[i] = old
			continue
		}
		freshSpecs = append(freshSpecs, spec)
		at = append(at, i)
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	starts := s.startPlugins(sctx, freshSpecs)
	for _, ps := range starts {
		<-ps.done
	}
	cancel()
	for _, ps := range starts {
		if ps.err != nil {
			s.stopStarts(starts)
			return ps.err // it names the sink
		}
	}
	for j, ps := range starts {
		i := at[j]
		next[i] = s.sinkRun(ps.spec, ps.sup, cfgs[i].Delivery, orderKeys[ps.spec.Sink])
	}
	// Nothing can fail from here on.
	wanted := map[string]bool{}
	for i, sr := range next {
		wanted[sr.name] = true
		old := current[sr.name]
		switch {
		case old == sr && old.delivery != cfgs[i].Delivery:
			old.stopDispatch(ctx) // same plugin, new batching or retry settings
			old.delivery, old.orderKey = cfgs[i].Delivery, orderKeys[sr.name]
			old.startDispatch()
		case old == sr:
		case old != nil:
			old.stopDispatch(ctx)
			old.stopPlugin(s.timing.withDefaults().pluginStop, nil) // sets pipelined_sink_up to 0: set it again for the new plugin
			if old.sup == nil {
				// It comes back: seen as configured from now on, not
				// only at the install below (after the other sinks'
				// batches in flight), so that a dlq add --all of its
				// queue stops before its next page, and its page in
				// progress ends before this dispatcher reads the queue
				// and before the give-ups are pruned (a page moves
				// entries given up on by id to the dead-letter queue).
				s.claim(sr)
				s.pruneGiveUps(ctx, sr.name)
			}
			sr.reportUp()
			sr.startDispatch()
			s.log.Info("sink restarted with its new plugin or config", "sink", sr.name)
		default:
			// Its queue may be listed as a removed sink's (adopted as an
			// orphan since this reload read the sinks).
			s.claim(sr)
			s.pruneGiveUps(ctx, sr.name)
			sr.startDispatch()
			s.log.Info("sink added", "sink", sr.name)
		}
	}
	for name, old := range current {
		if wanted[name] || old.sup == nil {
			continue
		}
		old.stopDispatch(ctx)
		old.stopPlugin(s.timing.withDefaults().pluginStop, nil)
		old.detach()
		s.log.Info("sink removed; its queued events stay in the log until it returns, or they are given up on (pipelined dlq add SINK --all) and dropped", "sink", name)
	}
	s.install(next)
	return nil
}

func (s *sinks) sinkStatus(ctx context.Context) ([]admin.SinkStatus, error) {
	runs := s.list()
	out := make([]admin.SinkStatus, 0, len(runs))
	var errs []error
	// Asked once: every sink of one answer is rebuilding, or none is.
	_, rebuilding := pipeline.QueuesRebuilding(s.db)
	for _, sr := range runs {
		ss := admin.SinkStatus{Name: sr.name, Plugin: admin.PluginRemoved}
		var st pluginhost.Status
		sup := sr.plugin()
		if sup != nil {
			st = sup.Status()
			ss.Plugin, ss.PID, ss.PluginReason = st.State, st.PID, st.Reason
		}
		ss.LastError, ss.LastErrorAt = sr.lastError(st)
		ss.Paused = sr.pauses.is(sr.name)
		if disp := sr.disp.Load(); disp != nil {
			ds := disp.Status()
			ss.Breaker = "closed"
			if ds.Open {
				ss.Breaker = "open"
			}
			if ds.InFlight > 0 {
				ss.InFlight, ss.InFlightSeconds = ds.InFlight, time.Since(ds.InFlightSince).Seconds()
			}
			if !ds.NextProbe.IsZero() {
				// At least a millisecond: 0 would leave the field out.
				ss.NextProbeSeconds = max(time.Until(ds.NextProbe).Seconds(), 0.001)
			}
			orderStatus(&ss, disp)
		}
		if rebuilding {
			// The counts wait for the rebuild after the start; say so now
			// (a removed sink too: whether its queue is empty is not
			// known yet).
			ss.Rebuilding = true
			out = append(out, ss)
			continue
		}
		qs, err := sr.q.Stats(ctx)
		if err != nil {
			if ctx.Err() != nil {
				errs = append(errs, fmt.Errorf("sink %s: %w", sr.name, err))
				continue
			}
			// The rest of its status is known: say it, with why the
			// counts are not (a stream without a quorum, say).
			ss.QueueError = err.Error()
			out = append(out, ss)
			continue
		}
		ss.Ready, ss.Retrying, ss.Dead = qs.Ready, qs.Retrying, qs.Dead
		if gone(sup == nil, qs) {
			continue
		}
		out = append(out, ss)
	}
	return out, errors.Join(errs...)
}

// pruneGiveUps takes out of sink's give-ups the entries that no longer
// wait in its queue, before a reload brings the sink back: while it was
// removed, its whole queue may have been given up on (dlq add --all, no
// dispatcher involved), which leaves the entries given up on by id before
// in the set; a dead letter of them retried later would be given up on
// again. An entry whose state cannot be read is kept.
func (s *sinks) pruneGiveUps(ctx context.Context, sink string) {
	dl, ok := s.db.(pipeline.DeliveryLog)
	g := s.giveUpsOf(sink)
	if !ok || g.Len() == 0 {
		return
	}
	var settled []uint64
	for _, e := range g.List() {
		if waiting, err := admin.WaitingIn(ctx, dl, sink, e.ID); err == nil && !waiting {
			settled = append(settled, e.Seq)
		}
	}
	if err := g.Remove(settled); err != nil {
		s.log.Warn("the list that keeps give-ups across restarts still names events no longer waiting; it is written again at its next change",
			"sink", sink, "err", err)
	}
}

// giveUpOptions sets what the admin API gives up on events with: the
// give-ups of each sink, and the lock of a removed sink's queue for a page
// of dlq add --all.
func (s *sinks) giveUpOptions(o *admin.Options) {
	o.GiveUps = s.giveUpSet
	o.LockRemoved = s.lockRemoved
}

// giveUpSet returns the entries of sink an operator gave up on, for
// admin.Options.GiveUps; nil for a sink a reload removed, which nothing
// delivers.
func (s *sinks) giveUpSet(sink string) admin.GiveUpSet {
	s.mu.Lock()
	sr := s.by[sink]
	s.mu.Unlock()
	if sr == nil || sr.plugin() == nil {
		return nil
	}
	return sr.giveUps
}

// pause pauses or resumes sink's delivery: kept in the pause file first,
// then applied to its dispatcher. It reports whether the state changed.
func (s *sinks) pause(sink string, paused bool) (bool, error) {
	s.mu.Lock()
	sr := s.by[sink]
	s.mu.Unlock()
	if sr == nil {
		return false, fmt.Errorf("unknown sink %q", sink)
	}
	if s.pauses == nil {
		return false, errors.New("pipelined is not running")
	}
	changed, err := s.pauses.set(sink, paused)
	if err != nil {
		return false, err
	}
	if changed {
		if paused {
			s.log.Info("sink paused: delivery holds until resumed (kept across restarts)", "sink", sink)
		} else {
			s.log.Info("sink resumed", "sink", sink)
		}
	}
	return changed, nil
}

// probeNow makes the open breaker of sink's dispatcher probe at once, for
// pipelined sinks retry-now, and reports whether it was open; false for a
// sink that is not dispatching.
func (s *sinks) probeNow(sink string) bool {
	s.mu.Lock()
	sr := s.by[sink]
	s.mu.Unlock()
	if sr == nil {
		return false
	}
	d := sr.disp.Load()
	return d != nil && d.ProbeNow()
}
