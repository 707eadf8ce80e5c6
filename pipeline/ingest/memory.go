package ingest

import "sync/atomic"

// DecodeCost is the most memory, in bytes per byte of body, that reading
// a body and decoding it for the rules can take: "[0,0,0,...]" becomes a
// boxed number and two slice slots per two bytes, "[{},{},...]" a map per
// three. TestDecodeCost holds decodeOwned under it on the costliest shapes.
const DecodeCost = 80

// bodyMemory bounds the memory that the bodies of the requests in flight
// take together (Config.MaxBodyMemory): each request takes its share
// before its body is decoded and gives it back when it is answered.
type bodyMemory struct {
	max  int64
	used atomic.Int64
}

// take takes the share of a body of n bytes: DecodeCost times n, or all
// of max for a body too big for it (it is then handled alone). It reports
// the share taken, 0 and false when the others' leave too little.
func (m *bodyMemory) take(n int64) (int64, bool) {
	share := min(max(n, 1)*DecodeCost, m.max)
	if m.used.Add(share) > m.max {
		m.used.Add(-share)
		return 0, false
	}
	return share, true
}

// give gives back a share that take returned.
func (m *bodyMemory) give(share int64) { m.used.Add(-share) }
