package pluginhost

import "syscall"

// procAttr makes the kernel kill a plugin when the daemon dies without
// stopping it (kill -9, a crash), so no orphan keeps files or sockets.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
