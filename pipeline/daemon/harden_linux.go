//go:build linux

package daemon

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// nonDumpable clears the process's dumpable flag.
func nonDumpable() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("make the daemon non-dumpable (prctl PR_SET_DUMPABLE 0): %w", err)
	}
	return nil
}
