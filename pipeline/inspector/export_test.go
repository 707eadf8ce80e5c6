package inspector

import "time"

// SetTailPing makes the live tails u opens from now on ping every d
// instead of every 15s.
func SetTailPing(u *UI, d time.Duration) { u.tailPing = d }
