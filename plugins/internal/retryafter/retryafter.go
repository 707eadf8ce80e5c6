// Package retryafter reads the Retry-After header of an HTTP answer, for
// the sinks that honour it.
package retryafter

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Cap is the longest wait the plugins take from a Retry-After: a day. It
// lets a receiver ask for a long pause (a maintenance window) while a
// date far ahead, a mistake or a hostile answer, holds an event back no
// longer than that: well inside the host's default max_age of 72h, so the
// event is tried again before it is given up on.
const Cap = 24 * time.Hour

// Parse reads a Retry-After value as RFC 9110 §10.2.3 defines it: either
// delay-seconds (one or more ASCII digits) or an HTTP-date, in any of the
// three formats a recipient must accept ([http.ParseTime]). Whitespace
// around the value is ignored.
//
// It returns the wait from now and true: the seconds given, or the time
// until the date (0 for a date not after now), at most max (a max below
// zero counts as zero). A number too large to represent is max too. An
// empty value, a signed or fractional number, or anything else that is
// neither form gives 0 and false: the caller uses its own backoff.
func Parse(value string, now time.Time, max time.Duration) (time.Duration, bool) {
	if max < 0 {
		max = 0
	}
	v := strings.TrimSpace(value)
	if v == "" {
		return 0, false
	}
	if digits(v) {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n > int64(max/time.Second) { // err: only out of range, as v is digits
			return max, true
		}
		return min(time.Duration(n)*time.Second, max), true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now) // saturates, however far the date
	if d < 0 {
		d = 0
	}
	return min(d, max), true
}

// digits reports whether s is one or more ASCII digits.
func digits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
