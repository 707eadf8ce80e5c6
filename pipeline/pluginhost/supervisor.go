package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pipelined/pipelined/sdk"
)

// States reported by [Supervisor.State].
const (
	StateStarting = "starting" // the plugin is being started and configured
	StateRunning  = "running"  // the plugin is up
	StateBackoff  = "backoff"  // the plugin exited or failed to start; the next start waits out a delay
	StateStopped  = "stopped"  // not started yet, or stopped by Stop
)

// Supervisor keeps one sink's plugin running. It starts the plugin on the
// first call (or [Supervisor.Start]), and when the plugin exits, fails to
// start, or stops answering, it starts a new process on the next call after
// a delay: BackoffMin doubling per failure in a row up to BackoffMax, the
// count reset once a plugin has run for HealthyAfter (see [Options]).
//
// Its methods are safe for concurrent use; deliveries are made one at a time.
//
// Lock order: sem (one operation on the plugin at a time) before mu (the
// fields below).
type Supervisor struct {
	spec Spec
	opts Options
	log  *slog.Logger

	sem chan struct{}

	mu        sync.Mutex
	p         *Plugin
	state     string
	pid       int
	lastErr   error
	failures  int       // failures in a row
	notBefore time.Time // no start before this
	startedAt time.Time
	stopped   bool
	launched  bool // a start was tried already: the next one is a restart
}

// NewSupervisor returns a Supervisor for spec. It starts nothing yet.
func NewSupervisor(spec Spec, opts *Options) *Supervisor {
	o := opts.withDefaults()
	return &Supervisor{
		spec:  spec,
		opts:  o,
		log:   o.Logger.With("sink", spec.Sink),
		sem:   make(chan struct{}, 1),
		state: StateStopped,
	}
}

// Start starts the plugin now if it is not running, waiting out a pending
// backoff (bounded by ctx), so that a daemon can report ready only once its
// plugins are up. Deliver starts it anyway when needed.
func (s *Supervisor) Start(ctx context.Context) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	_, err := s.plugin(ctx)
	return err
}

// Deliver sends batch to the plugin, starting it first when needed (waiting
// out the restart backoff, bounded by ctx), and returns its per-event
// results. A non-nil error means the whole batch failed and is to be
// retried: when the plugin process died or stopped answering during the
// call, the error wraps [ErrPluginExited] and the next call starts a new
// process; after Stop it wraps [ErrStopped].
func (s *Supervisor) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
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
			s.state = StateBackoff
			return nil, err
		}
		s.launched = true
		s.failures++
		delay := s.backoff()
		s.notBefore = time.Now().Add(delay)
		s.state = StateBackoff
		s.lastErr = err
		s.pid = 0
		s.log.Error("plugin failed to start", "error", err, "retry_in", delay, "failures", s.failures)
		return nil, err
	}
	s.launched = true
	s.p = p
	s.pid = p.Pid()
	s.state = StateRunning
	s.startedAt = time.Now()
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
	if time.Since(s.startedAt) >= s.opts.HealthyAfter {
		s.failures = 0
	}
	s.failures++
	delay := s.backoff()
	s.notBefore = time.Now().Add(delay)
	s.lastErr = err
	s.state = StateBackoff
	if s.stopped {
		s.state = StateStopped
	}
	s.log.Warn("plugin exited; restarting it on the next delivery", "pid", p.Pid(), "error", err, "retry_in", delay, "failures", s.failures)
	s.mu.Unlock()
	p.kill()
}

// backoff returns the delay before the next start after s.failures failures
// in a row. Call with mu held.
func (s *Supervisor) backoff() time.Duration {
	d := s.opts.BackoffMin
	for i := 1; i < s.failures && d < s.opts.BackoffMax; i++ {
		d *= 2
	}
	return min(d, s.opts.BackoffMax)
}

// State reports what the plugin is doing (StateStarting, StateRunning,
// StateBackoff or StateStopped), its process id while it runs, and the last
// error that made it exit or fail to start (nil if none yet).
func (s *Supervisor) State() (state string, pid int, lastErr error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == StateRunning && s.p != nil && s.p.Exited() {
		return StateBackoff, 0, s.p.exitedError(nil)
	}
	if s.state != StateRunning {
		return s.state, 0, s.lastErr
	}
	return s.state, s.pid, s.lastErr
}

// Stop stops the plugin: it waits for an in-flight delivery to return, asks
// the plugin to Close (bounded by ctx), and ends the process. If ctx expires
// first, the process is killed and Stop returns the ctx's cause. Later calls
// to Deliver return an error wrapping [ErrStopped].
func (s *Supervisor) Stop(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	if err := s.acquire(ctx); err != nil {
		s.mu.Lock()
		p := s.p
		s.mu.Unlock()
		if p != nil {
			p.hardKill() // unblocks the in-flight delivery, whose caller cleans up
		}
		return fmt.Errorf("sink %q: stop plugin: %w", s.spec.Sink, err)
	}
	defer s.release()
	s.mu.Lock()
	p := s.p
	s.p = nil
	s.state = StateStopped
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	err := p.Stop(ctx)
	s.log.Info("plugin stopped", "pid", p.Pid())
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
