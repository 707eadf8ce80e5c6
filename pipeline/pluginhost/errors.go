package pluginhost

import "errors"

// ErrPluginExited is returned (wrapped) by [Plugin.Deliver] and
// [Supervisor.Deliver] when the plugin process exited or stopped answering
// during the call, or was already gone, and by [Start] when the process
// exited while it was being started (a crash, not a config error: the
// message quotes its last stderr line). Whether the plugin stored any of the
// batch is unknown: the caller delivers the whole batch again (events carry
// stable ids, so sinks absorb the repeat). A [Supervisor] restarts the plugin
// on its own after a backoff.
var ErrPluginExited = errors.New("sink plugin exited")

// ErrNotFound is returned (wrapped) by [Find] when no plugin binary exists in
// any of the places searched; the message lists them.
var ErrNotFound = errors.New("plugin not found")

// ErrStopped is returned (wrapped) by [Supervisor.Deliver] after
// [Supervisor.Stop]: the sink is being shut down and the batch stays queued.
var ErrStopped = errors.New("sink plugin stopped")

// ErrKilled is returned (wrapped) by [Plugin.Stop] and [Supervisor.Stop]
// when their ctx ended before the plugin had stopped (a delivery in
// flight, its Close, or its exit took too long): the process was killed
// with SIGKILL. The events of a batch it held are still queued and are
// delivered again.
var ErrKilled = errors.New("killed (SIGKILL): it did not stop in time")

// ErrInvalidConfig is returned (wrapped) by [Start] when the sink's config
// table does not fit the plugin's description (every problem is listed) or
// the plugin's Configure rejects it. Starting again will not help: the
// operator fixes the [[sink]] config table.
var ErrInvalidConfig = errors.New("invalid sink config")

// invalidConfigError keeps the message of err and matches both err and
// [ErrInvalidConfig].
type invalidConfigError struct{ err error }

func (e *invalidConfigError) Error() string   { return e.err.Error() }
func (e *invalidConfigError) Unwrap() []error { return []error{e.err, ErrInvalidConfig} }

// exitedAtStartError keeps the message of err and matches both err and
// [ErrPluginExited].
type exitedAtStartError struct{ err error }

func (e *exitedAtStartError) Error() string   { return e.err.Error() }
func (e *exitedAtStartError) Unwrap() []error { return []error{e.err, ErrPluginExited} }

func exitedAtStart(err error) error { return &exitedAtStartError{err} }
