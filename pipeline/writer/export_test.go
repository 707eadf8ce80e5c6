package writer

// Pending returns how many requests wait in w's queue, for tests that
// must know the appends they started are queued.
func Pending(w *Writer) int { return len(w.reqs) }
