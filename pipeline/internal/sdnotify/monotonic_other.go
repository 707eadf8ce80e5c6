//go:build !linux

package sdnotify

// monotonicUsec is not known off Linux, where there is no systemd: the
// message goes without MONOTONIC_USEC.
func monotonicUsec() (uint64, bool) { return 0, false }
