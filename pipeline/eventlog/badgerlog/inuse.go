package badgerlog

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// InUse returns an error naming the process that has the log in dir open
// (from Badger's pid file) and what to do, or nil when none has, or when
// dir holds no log yet. Open would refuse the same log, but only after the
// caller started whatever it starts beside it: the daemon asks first, so
// that a second daemon on one directory fails before it starts a plugin.
// A process that opens the log after InUse answered is still refused by
// Open.
func InUse(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return nil // no log yet, or one Open will say it cannot read
	}
	defer f.Close()
	// Badger holds an exclusive lock on the directory while it is open: a
	// shared one is refused then, and taken and let go at once otherwise.
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if err == nil {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return nil
	}
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		return nil // a file system without locks: Open decides
	}
	who := "another process"
	if pid, err := os.ReadFile(filepath.Join(dir, "LOCK")); err == nil && len(strings.TrimSpace(string(pid))) > 0 {
		who = "process " + strings.TrimSpace(string(pid))
	}
	return fmt.Errorf("event log %s is in use by %s: is pipelined running already (systemctl status pipelined)? Stop that one, or give this one another [log] dir", dir, who)
}
