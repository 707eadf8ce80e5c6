package writer

// Pending returns how many requests wait in w's queue, for tests that
// must know the appends they started are queued.
func Pending(w *Writer) int { return len(w.reqs) }

// Closed reports whether Close has begun on w: from then on Append
// refuses, while the entries already taken are still being appended.
func Closed(w *Writer) bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.closed
}
