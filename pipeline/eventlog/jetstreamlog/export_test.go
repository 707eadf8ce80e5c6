package jetstreamlog

// SetHastenReads sets the records one HastenRetries call reads at most,
// for a test, and returns what restores it.
func SetHastenReads(n int) (restore func()) {
	old := hastenReads
	hastenReads = n
	return func() { hastenReads = old }
}

// SetRequeueHold sets the bytes of event bodies one Requeue call holds at
// most, for a test, and returns what restores it.
func SetRequeueHold(n int) (restore func()) {
	old := requeueHold
	requeueHold = n
	return func() { requeueHold = old }
}
