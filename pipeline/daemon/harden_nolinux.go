//go:build !linux

package daemon

// nonDumpable is Linux only; elsewhere it does nothing.
func nonDumpable() error { return nil }
