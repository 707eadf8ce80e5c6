package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/pipelined/pipelined/pipeline/internal/backoff"
	"github.com/pipelined/pipelined/sdk"
)

// States reported by [Supervisor.State].
const (
	StateStarting = "starting" // the plugin is being started and configured
	StateRunning  = "running"  // the plugin is up
	StateBackoff  = "backoff"  // the plugin exited; it is started again after a delay
	StateFailed   = "failed"   // the last start failed; it is tried again after a delay
	StateStopped  = "stopped"  // not started yet, or stopped by Stop
)

// watchInterval is how often a [Supervisor] checks that its plugin process
// still runs.
const watchInterval = 50 * time.Millisecond

// Supervisor keeps one sink's plugin running. It starts the plugin on
// [Supervisor.Start] (or the first delivery), and from then on watches it:
// when the plugin exits or fails to start, it starts a new process on its
// own, whether or not events wait, after a delay drawn with jitter between
// BackoffMin and a ceiling that doubles per failure in a row up to
// BackoffMax; the count is reset once a plugin has run for HealthyAfter
// (see [Options]). A delivery that finds no plugin running starts one too.
//
// Its methods are safe for concurrent use; deliveries are made one at a time.
//
// Lock order: sem (one operation on the plugin at a time) before mu (the
// fields below).
type Supervisor struct {
	spec Spec
	opts Options
	log  *slog.Logger

	sem  chan struct{}
	stop chan struct{} // closed by Stop: the watcher returns
	wake chan struct{} // a delivery saw the plugin exit

	mu        sync.Mutex
	p         *Plugin
	state     string
	pid       int
	reason    string    // why the last start failed, for StateFailed
	lastErr   error     // the last exit or start failure
	lastErrAt time.Time // when lastErr happened
	failures  int       // failures in a row
	notBefore time.Time // no start before this
	startedAt time.Time
	stopped   bool
	launched  bool          // a start was tried already: the next one is a restart
	watched   chan struct{} // closed when the watcher returns; nil before it starts
}

// Status is what a [Supervisor] reports about its plugin.
type Status struct {
	// State is StateStarting, StateRunning, StateBackoff, StateFailed or
	// StateStopped.
	State string
	// PID is the plugin's process id while it runs.
	PID int
	// Reason says, for StateFailed, why the last start failed: the last
	// line the plugin wrote to stderr, or else the start error.
	Reason string
	// Err is the last exit or start failure, and ErrAt when it happened;
	// nil and zero if there was none.
	Err   error
	ErrAt time.Time
}

// NewSupervisor returns a Supervisor for spec. It starts nothing yet.
func NewSupervisor(spec Spec, opts *Options) *Supervisor {
	o := opts.withDefaults()
	return &Supervisor{
		spec:  spec,
		opts:  o,
		log:   o.Logger.With("sink", spec.Sink),
		sem:   make(chan struct{}, 1),
		stop:  make(chan struct{}),
		wake:  make(chan struct{}, 1),
		state: StateStopped,
	}
}

// Start starts the plugin now if it is not running, waiting out a pending
// backoff (bounded by ctx), so that a daemon can report ready only once its
// plugins are up, and from then on keeps it running. Whether or not the
// start succeeds, the Supervisor goes on starting the plugin after each
// exit or failed start until Stop. Deliver starts it anyway when needed.
// Its errors name the sink, as [Start]'s do.
func (s *Supervisor) Start(ctx context.Context) error {
	defer s.watch()
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("sink %q: start plugin: %w", s.spec.Sink, err)
	}
	defer s.release()
	_, err := s.plugin(ctx)
	return err
}

// Deliver sends batch to the plugin, starting it first when needed (waiting
// out the restart backoff, bounded by ctx), and returns its per-event
// results. A non-nil error means the whole batch failed and is to be
// retried: when the plugin process died or stopped answering during the
// call, the error wraps [ErrPluginExited] and a new process is started
// after the backoff; after Stop it wraps [ErrStopped].
func (s *Supervisor) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	defer s.watch()
	if err := s.acquire(ctx); err != nil {
		return nil, err
	}
	defer s.release()
	p, err := s.plugin(ctx)
	if err != nil {
		return nil, err
	}
	results, err := p.Deliver(ctx, batch)
	if errors.Is(err, ErrPluginExited) {
		s.failed(p, err)
	}
	return results, err
}

// WrapUp asks the running plugin to wrap up its Deliver in flight (see
// [Plugin.WrapUp]): that Deliver then returns at once with the sink's
// answer for what it did. It does nothing when no plugin runs, or the
// plugin does not know the call (built before it). ctx limits the call.
func (s *Supervisor) WrapUp(ctx context.Context) error {
	s.mu.Lock()
	p := s.p
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.WrapUp(ctx)
}

// watch starts the watcher goroutine once, unless stopped. Stop waits for it.
func (s *Supervisor) watch() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watched != nil || s.stopped {
		return
	}
	s.watched = make(chan struct{})
	go s.watcher(s.watched)
}

// watcher notices that the plugin exited and starts it again once the
// backoff has passed, until Stop.
func (s *Supervisor) watcher(done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(watchInterval)
	defer tick.Stop()
	for {
		s.mu.Lock()
		p, stopped, wait := s.p, s.stopped, time.Until(s.notBefore)
		s.mu.Unlock()
		if stopped {
			return
		}
		if p != nil {
			if p.Exited() {
				s.failed(p, p.exitedError(nil))
				continue
			}
			select {
			case <-s.stop:
				return
			case <-s.wake:
			case <-tick.C:
			}
			continue
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-s.stop:
				t.Stop()
				return
			case <-t.C:
			}
		}
		ctx, cancel := context.WithCancelCause(context.Background())
		go func() {
			select {
			case <-s.stop:
				cancel(fmt.Errorf("sink %q: %w", s.spec.Sink, ErrStopped))
			case <-ctx.Done():
			}
		}()
		if s.acquire(ctx) == nil {
			_, _ = s.plugin(ctx) // a failure is logged and scheduled by plugin
			s.release()
		}
		cancel(nil)
	}
}

// plugin returns the running plugin, starting one if needed. Call with sem
// held.
func (s *Supervisor) plugin(ctx context.Context) (*Plugin, error) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil, fmt.Errorf("sink %q: %w", s.spec.Sink, ErrStopped)
	}
	p := s.p
	s.mu.Unlock()
	if p != nil {
		if !p.Exited() {
			return p, nil
		}
		s.failed(p, p.exitedError(nil))
	}

	s.mu.Lock()
	wait := time.Until(s.notBefore)
	s.mu.Unlock()
	if wait > 0 {
		if d, ok := ctx.Deadline(); ok && time.Until(d) < wait {
			s.mu.Lock()
			err := s.lastErr
			s.mu.Unlock()
			return nil, fmt.Errorf("sink %q: plugin restarts in %v, after the call's deadline (last error: %v): %w",
				s.spec.Sink, wait.Round(time.Millisecond), err, ErrPluginExited)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("sink %q: wait to restart plugin: %w", s.spec.Sink, context.Cause(ctx))
		}
	}

	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil, fmt.Errorf("sink %q: %w", s.spec.Sink, ErrStopped)
	}
	prev := s.state
	s.state = StateStarting
	if s.launched {
		s.opts.Metrics.PluginRestart(s.spec.Sink)
	}
	s.mu.Unlock()

	p, err := Start(ctx, s.spec, &s.opts)
	s.mu.Lock()
	if err == nil && s.stopped {
		// Stop ran while we were starting: it could not see this plugin.
		s.mu.Unlock()
		p.kill()
		return nil, fmt.Errorf("sink %q: %w", s.spec.Sink, ErrStopped)
	}
	defer s.mu.Unlock()
	if err != nil {
		if s.stopped {
			s.state = StateStopped
			return nil, err
		}
		if ctx.Err() != nil {
			// The caller gave up; that is no fault of the plugin.
			s.state = prev
			if prev == StateStopped || prev == StateRunning {
				s.state = StateBackoff
			}
			return nil, err
		}
		first := !s.launched
		s.launched = true
		s.failures++
		delay := s.backoff()
		s.notBefore = time.Now().Add(delay)
		s.state = StateFailed
		s.reason = stderrLine(err)
		if s.reason == "" {
			s.reason = oneLine(err.Error())
		}
		s.lastErr, s.lastErrAt = err, time.Now()
		s.pid = 0
		s.opts.Metrics.SinkUp(s.spec.Sink, false)
		if !first {
			s.log.Error("plugin failed to start; trying again after a delay", "error", err, "retry_in", delay, "failures", s.failures)
		} // else the daemon's start or reload reports it: it fails, or it serves on and says the plugin is tried again
		return nil, err
	}
	s.launched = true
	s.p = p
	s.pid = p.Pid()
	s.state = StateRunning
	s.reason = ""
	s.startedAt = time.Now()
	s.opts.Metrics.SinkUp(s.spec.Sink, true)
	s.log.Info("plugin running", "pid", p.Pid(), "path", p.Path())
	return p, nil
}

// failed records that p exited or broke, ends it and schedules the restart.
func (s *Supervisor) failed(p *Plugin, err error) {
	s.mu.Lock()
	if s.p != p {
		s.mu.Unlock()
		return
	}
	s.p = nil
	s.pid = 0
	if time.Since(s.startedAt) >= s.opts.HealthyAfter {
		s.failures = 0
	}
	s.failures++
	delay := s.backoff()
	s.notBefore = time.Now().Add(delay)
	s.lastErr, s.lastErrAt = err, time.Now()
	s.state = StateBackoff
	if s.stopped {
		s.state = StateStopped
	}
	s.opts.Metrics.SinkUp(s.spec.Sink, false)
	msg := "plugin exited; restarting it"
	if !p.Exited() {
		msg = "plugin hung; restarting it" // frozen, or its sink stuck: the error says which
	}
	s.log.Warn(msg, "pid", p.Pid(), "error", err, "retry_in", delay, "failures", s.failures)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	p.kill()
}

// backoff returns the delay before the next start after s.failures failures
// in a row: between BackoffMin and a ceiling that doubles per failure, up to
// BackoffMax, with jitter so that plugins that fail together do not restart
// in step. Call with mu held.
func (s *Supervisor) backoff() time.Duration {
	return backoff.Delay(s.failures, s.opts.BackoffMin, s.opts.BackoffMax)
}

// State reports what the plugin is doing (StateStarting, StateRunning,
// StateBackoff, StateFailed or StateStopped), its process id while it runs,
// and the last error that made it exit or fail to start (nil if none yet).
func (s *Supervisor) State() (state string, pid int, lastErr error) {
	st := s.Status()
	return st.State, st.PID, st.Err
}

// Status reports the plugin's state, its process id while it runs, why its
// last start failed, and its last exit or start failure with the time.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{State: s.state, Err: s.lastErr, ErrAt: s.lastErrAt}
	switch {
	case s.state == StateRunning && s.p != nil && s.p.Exited():
		// Exited a moment ago; the watcher has not seen it yet.
		st.State, st.Err, st.ErrAt = StateBackoff, s.p.exitedError(nil), time.Now()
	case s.state == StateRunning:
		st.PID = s.pid
	case s.state == StateFailed:
		st.Reason = s.reason
	}
	return st
}

// Stop stops the plugin: it stops restarting it, waits for an in-flight
// delivery to return, asks the plugin to Close (bounded by ctx), and ends
// the process. If ctx expires first, the process is killed and Stop returns
// an error wrapping the ctx's cause and, when there was a process to kill,
// [ErrKilled]. Later calls to Deliver return an error wrapping
// [ErrStopped].
func (s *Supervisor) Stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.stop)
	}
	watched := s.watched
	s.mu.Unlock()
	s.opts.Metrics.SinkUp(s.spec.Sink, false)
	if err := s.acquire(ctx); err != nil {
		s.mu.Lock()
		p := s.p
		s.mu.Unlock()
		err = fmt.Errorf("sink %q: stop plugin while a delivery is in flight: %w", s.spec.Sink, err)
		if p != nil && p.hardKill() { // unblocks the in-flight delivery, whose caller cleans up
			err = p.killedError(err)
		}
		return err
	}
	defer s.release()
	s.mu.Lock()
	p := s.p
	s.p = nil
	s.state = StateStopped
	s.mu.Unlock()
	var err error
	if p != nil {
		err = p.Stop(ctx)
		if !errors.Is(err, ErrKilled) { // the caller says that one, with why
			s.log.Info("plugin stopped", "pid", p.Pid())
		}
	}
	if watched != nil {
		select {
		case <-watched:
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("sink %q: stop plugin watcher: %w", s.spec.Sink, context.Cause(ctx))
			}
		}
	}
	return err
}

func (s *Supervisor) acquire(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (s *Supervisor) release() { <-s.sem }

// oneLine puts s on one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
