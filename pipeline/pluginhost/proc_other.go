//go:build !linux

package pluginhost

import "syscall"

func procAttr() *syscall.SysProcAttr { return nil }
