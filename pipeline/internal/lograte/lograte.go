// Package lograte bounds how often a log line that a fault or a flood can
// repeat (a full disk, a collector that is down, refused requests, dead
// letters) is written: the first at once ([Every]) or a few ([Burst]),
// then one per period, each saying how many were left out.
package lograte

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
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

// Burst lets n lines through at once, then one per period, as a token
// bucket does; each line let through after some were not says how many.
// Safe for concurrent use. Make one with [NewBurst].
type Burst struct {
	mu         sync.Mutex
	lim        *rate.Limiter
	suppressed int
}

// NewBurst returns a Burst of n lines, then one per period.
func NewBurst(n int, period time.Duration) *Burst {
	return &Burst{lim: rate.NewLimiter(rate.Every(period), n)}
}

// AllowAt reports whether a line may be written at now and, if so, how
// many were not since the last one that was.
func (b *Burst) AllowAt(now time.Time) (ok bool, suppressed int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.lim.AllowN(now, 1) {
		b.suppressed++
		return false, 0
	}
	n := b.suppressed
	b.suppressed = 0
	return true, n
}

// Spent reports whether a line at now would not be let through: the
// burst is used up. A line let through can say so, for those that follow.
func (b *Burst) Spent(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lim.TokensAt(now) < 1
}
