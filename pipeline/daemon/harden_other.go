//go:build !unix

package daemon

func tightenUmask() {}
