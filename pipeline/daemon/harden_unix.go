//go:build unix

package daemon

import "syscall"

// tightenUmask adds 027 to the process umask.
func tightenUmask() {
	old := syscall.Umask(0o027)
	syscall.Umask(old | 0o027)
}
