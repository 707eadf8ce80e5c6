package daemon

// Harden makes the running process safer to share a machine with. Call it
// once, first thing in `pipelined serve`:
//
//   - the umask gains 027, so every file the daemon creates (the Badger
//     log, its write-ahead log) is at most 0640 even when the data
//     directory already exists and the umask was 022 (Badger creates some
//     files 0666 less the umask, with no option to change it); plugins
//     inherit the umask, so their files (SQLite, archives) are covered too;
//   - on Linux the process is made non-dumpable (prctl PR_SET_DUMPABLE 0):
//     another process of the same user, such as a plugin, can no longer
//     read /proc/PID/environ or /proc/PID/mem of the daemon, which hold
//     every source's and sink's secrets. Plugins are execs, and execve
//     resets the flag, so they stay dumpable and debuggable.
//
// The error says which step failed; the caller may log it and go on.
func Harden() error {
	tightenUmask()
	return nonDumpable()
}
