// Package lograte bounds how often a log line that a fault can repeat
// (a full disk, a collector that is down) is written: the first at once,
// then one per period, each saying how many were left out.
package lograte

import (
	"sync/atomic"
	"time"
)

// Every lets one line per Period through, without a lock. Safe for
// concurrent use; the zero Period lets every line through.
type Every struct {
	Period time.Duration

	last       atomic.Int64 // unix nanoseconds of the last line let through
	suppressed atomic.Int64
}

// Allow reports whether a line may be written now and, if so, how many
// were not since the last one.
func (e *Every) Allow() (ok bool, suppressed int64) { return e.allowAt(time.Now().UnixNano()) }

// allowAt is Allow at now, in unix nanoseconds.
func (e *Every) allowAt(now int64) (ok bool, suppressed int64) {
	prev := e.last.Load()
	if (prev != 0 && now-prev < int64(e.Period)) || !e.last.CompareAndSwap(prev, now) {
		e.suppressed.Add(1)
		return false, 0
	}
	return true, e.suppressed.Swap(0)
}
