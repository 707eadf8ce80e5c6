package badgerlog

import (
	"sync"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// Bounds of the recent-events cache: the events of the last appends, as
// every sink's dispatcher reads them back moments later.
const (
	recentEvents = 2048
	recentBytes  = 4 << 20 // of bodies and headers
)

// recent holds the events of the latest appends, after their commit, so
// that a queue's Fetch finds them without a Badger get, a pread of the
// write-ahead log and two protobuf decodes per event and per sink. It is
// bounded in events and bytes (P9), oldest out first; a miss reads the log
// as before. The events it holds share their Body and Headers with the
// appender's: nothing in the daemon changes an event after it is appended.
type recent struct {
	mu    sync.Mutex
	bySeq map[uint64]recentEvent
	order []uint64 // seqs, oldest first
	bytes int
}

func eventSize(ev *pipeline.Event) int {
	n := len(ev.Body) + 64
	for k, v := range ev.Headers {
		n += len(k) + len(v)
	}
	return n
}

// recentEvent is an event of the cache and its routes.
type recentEvent struct {
	ev      pipeline.Event
	routing routing
	size    int // as counted in recent.bytes, payloads included
}

// add keeps ev, appended and committed at seq with its routes, as
// eventFromRecord would return it from the log.
func (r *recent) add(seq uint64, ev pipeline.Event, dedupKey string, routes routing) {
	ev.ReceivedAt = time.Unix(0, ev.ReceivedAt.UnixNano()).UTC()
	if dedupKey != "" {
		ev.DedupKey = dedupKey // as Append stores it
	}
	if len(ev.Headers) == 0 {
		ev.Headers = nil // as protobuf decodes an empty map
	}
	if len(ev.Body) == 0 {
		ev.Body = nil
	}
	size := eventSize(&ev)
	for _, p := range routes.payloads {
		size += len(p.GetPayload())
	}
	if size > recentBytes/4 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bySeq == nil {
		r.bySeq = make(map[uint64]recentEvent, recentEvents)
	}
	for len(r.order) > 0 && (len(r.order) >= recentEvents || r.bytes+size > recentBytes) {
		old := r.order[0]
		r.order = r.order[1:]
		if e, ok := r.bySeq[old]; ok {
			r.bytes -= e.size
			delete(r.bySeq, old)
		}
	}
	r.order = append(r.order, seq)
	r.bySeq[seq] = recentEvent{ev, routes, size}
	r.bytes += size
}

// get returns the event at seq, and its routes, if it is among the latest
// appended.
func (r *recent) get(seq uint64) (pipeline.Event, routing, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.bySeq[seq]
	return e.ev, e.routing, ok
}
