// Package backoff computes retry delays: exponential, with jitter.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Delay returns how long to wait after the given failed attempt (1 for the
// first). The ceiling doubles with each attempt, from 2×min, up to max; the
// delay is drawn uniformly between min and that ceiling ("full jitter" above
// a floor), so many failing senders spread out instead of retrying in step,
// and no retry comes sooner than min.
func Delay(attempt int, min, max time.Duration) time.Duration {
	return delay(attempt, min, max, rand.Int64N)
}

func delay(attempt int, min, max time.Duration, randN func(int64) int64) time.Duration {
	if min <= 0 {
		min = time.Millisecond
	}
	if max < min {
		max = min
	}
	if attempt < 1 {
		attempt = 1
	}
	ceiling := max
	if attempt < 62 {
		if c := min << attempt; c > 0 && c < max {
			ceiling = c
		}
	}
	if ceiling <= min {
		return min
	}
	return min + time.Duration(randN(int64(ceiling-min)+1))
}
