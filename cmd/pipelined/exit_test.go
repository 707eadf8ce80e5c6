package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/daemon"
	"github.com/pipelined/pipelined/pipeline/pluginhost"
)

// TestExitStatus: what systemd reads of a stop. The unit restarts on
// every status but 0 and 78 (RestartPreventExitStatus=78): a halted event
// log, which only a restart heals, must not exit 78.
func TestExitStatus(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"event log halted", fmt.Errorf("%w after a failed write: write event log: input/output error", pipeline.ErrHalted), 1},
		{"stop gave up on the log", fmt.Errorf("stop: %w", daemon.ErrUncleanStop), exitUncleanStop},
		{"sink config refused", fmt.Errorf("sink s: %w", pluginhost.ErrInvalidConfig), exitConfig},
		{"plugin not found", fmt.Errorf("sink s: %w", pluginhost.ErrNotFound), exitConfig},
		{"socket units do not fit", fmt.Errorf("listeners: %w", daemon.ErrSocketActivation), exitConfig},
		{"a listener's port taken", errors.New("listen tcp 127.0.0.1:8080: bind: address already in use"), 1},
	}
	for _, tt := range tests {
		if got := exitStatus(tt.err); got != tt.want {
			t.Errorf("%s: exitStatus(%v) = %d, want %d", tt.name, tt.err, got, tt.want)
		}
	}
}
