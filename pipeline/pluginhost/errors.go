package pluginhost

import "errors"

// ErrPluginExited is returned (wrapped) by [Plugin.Deliver] and
// [Supervisor.Deliver] when the plugin process exited or stopped answering
// during the call, or was already gone. Whether the plugin stored any of the
// batch is unknown: the caller delivers the whole batch again (events carry
// stable ids, so sinks absorb the repeat). A [Supervisor] restarts the plugin
// on its next call.
var ErrPluginExited = errors.New("sink plugin exited")

// ErrNotFound is returned (wrapped) by [Find] when no plugin binary exists in
// any of the places searched; the message lists them.
var ErrNotFound = errors.New("plugin not found")

// ErrStopped is returned (wrapped) by [Supervisor.Deliver] after
// [Supervisor.Stop]: the sink is being shut down and the batch stays queued.
var ErrStopped = errors.New("sink plugin stopped")
