package jetstreamlog

// SetHastenReads sets the records one HastenRetries call reads at most,
// for a test, and returns what restores it.
func SetHastenReads(n int) (restore func()) {
	old := hastenReads
	hastenReads = n
	return func() { hastenReads = old }
}
