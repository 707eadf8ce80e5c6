// Package memlog is an in-memory [pipeline.Log] for tests: the same contract
// as the durable logs, checked by the same suite (package logtest), with
// nothing kept across a restart.
//
// A [Log] is guarded by one mutex. A blocked [pipeline.Queue.Fetch] waits on a
// channel that Append, Settle and Close close to wake it, and on a timer set
// for the earliest retry that is not yet due.
package memlog

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

var (
	_ pipeline.Log          = (*Log)(nil)
	_ pipeline.RejectionLog = (*Log)(nil)
	_ pipeline.DeliveryLog  = (*Log)(nil)
)

// sweepEvery is how many appended entries pass between sweeps of expired
// dedup keys; lookups also drop the expired keys they meet.
const sweepEvery = 1024

// Log is an in-memory [pipeline.Log]. Its zero value is not usable; call
// [New]. All methods are safe for concurrent use. Append is atomic per call;
// "durable" means only that it is visible to the other methods until Close.
type Log struct {
	mu     sync.Mutex
	closed bool
	done   chan struct{} // closed by Close to release blocked fetches
	seq    uint64        // Seq of the last appended event
	events map[string]*stored
	order  []*stored // by Seq: order[i].seq == i+1
	dedup  map[dedupKey]dedupEntry
	queues map[string]*queue
	swept  int // entries appended since the last dedup sweep

	rejects []pipeline.Rejection // by ID; see reject.go
	rejSeq  uint64
}

// New returns an empty log.
func New() *Log {
	return &Log{
		done:   make(chan struct{}),
		events: make(map[string]*stored),
		dedup:  make(map[dedupKey]dedupEntry),
		queues: make(map[string]*queue),
	}
}

type stored struct {
	seq   uint64
	ev    pipeline.Event
	sinks []string
	// recs holds the delivery record of each sink the event was routed
	// or replayed to.
	recs map[string]*pipeline.DeliveryRecord
}

type dedupKey struct{ source, key string }

type dedupEntry struct {
	id      string
	expires time.Time
}

// queue is one sink's state. Every entry is in exactly one of ready,
// leased, retry or dead.
type queue struct {
	ready  []*entry // first deliveries, in Seq order, not leased
	leased map[uint64]*entry
	retry  map[uint64]*entry // settled as Retry, ready again at retryAt
	dead   map[uint64]*deadEntry
	wake   chan struct{} // closed and replaced when something may have become ready
}

type entry struct {
	seq      uint64
	ev       *pipeline.Event
	route    string
	payload  []byte
	attempts int // deliveries so far
	lastErr  string
	retryAt  time.Time
}

type deadEntry struct {
	e        *entry
	err      string
	failedAt time.Time
}

func newQueue() *queue {
	return &queue{
		leased: make(map[uint64]*entry),
		retry:  make(map[uint64]*entry),
		dead:   make(map[uint64]*deadEntry),
		wake:   make(chan struct{}),
	}
}

// notify wakes a Fetch blocked on q.
func (q *queue) notify() {
	close(q.wake)
	q.wake = make(chan struct{})
}

// queueLocked returns the named queue, creating it. l.mu must be held.
func (l *Log) queueLocked(sink string) *queue {
	q, ok := l.queues[sink]
	if !ok {
		q = newQueue()
		l.queues[sink] = q
	}
	return q
}

// Append implements [pipeline.Log.Append]. It checks the whole call first and
// writes nothing when an entry is invalid: an empty event id, an id already in
// the log or repeated in the call, a target without a sink, or two targets for
// one sink. Entries that are duplicates are not checked, since nothing of them
// is written. It never returns [pipeline.ErrFull].
func (l *Log) Append(ctx context.Context, entries []pipeline.Entry) ([]pipeline.Appended, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memlog: append: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("memlog: append: %w", pipeline.ErrClosed)
	}
	now := time.Now()

	// First pass: decide duplicates and validate, changing nothing.
	out := make([]pipeline.Appended, len(entries))
	inCall := make(map[dedupKey]string)
	ids := make(map[string]bool)
	for i, en := range entries {
		id := en.Event.ID
		if en.DedupKey != "" {
			k := dedupKey{en.Event.Source, en.DedupKey}
			if first, ok := inCall[k]; ok {
				out[i] = pipeline.Appended{ID: first, Duplicate: true}
				continue
			}
			if d, ok := l.dedup[k]; ok {
				if now.Before(d.expires) {
					out[i] = pipeline.Appended{ID: d.id, Duplicate: true}
					continue
				}
				delete(l.dedup, k)
			}
			inCall[k] = id
		}
		if id == "" {
			return nil, fmt.Errorf("memlog: append: entry %d: empty event id", i)
		}
		if _, ok := l.events[id]; ok || ids[id] {
			return nil, fmt.Errorf("memlog: append: entry %d: event id %q already in the log", i, id)
		}
		ids[id] = true
		sinks := make(map[string]bool, len(en.Targets))
		for _, tg := range en.Targets {
			if tg.Sink == "" {
				return nil, fmt.Errorf("memlog: append: entry %d: target without a sink", i)
			}
			if sinks[tg.Sink] {
				return nil, fmt.Errorf("memlog: append: entry %d: sink %q targeted twice", i, tg.Sink)
			}
			sinks[tg.Sink] = true
		}
		out[i] = pipeline.Appended{ID: id}
	}

	// Second pass: write.
	woken := make(map[*queue]bool)
	for i, en := range entries {
		if out[i].Duplicate {
			continue
		}
		l.seq++
		s := &stored{seq: l.seq, ev: cloneEvent(en.Event), recs: make(map[string]*pipeline.DeliveryRecord, len(en.Targets))}
		if en.DedupKey != "" {
			s.ev.DedupKey = en.DedupKey
		}
		for _, tg := range en.Targets {
			s.sinks = append(s.sinks, tg.Sink)
		}
		l.events[s.ev.ID] = s
		l.order = append(l.order, s)
		if en.DedupKey != "" {
			l.dedup[dedupKey{en.Event.Source, en.DedupKey}] = dedupEntry{id: s.ev.ID, expires: now.Add(en.DedupWindow)}
		}
		for _, tg := range en.Targets {
			q := l.queueLocked(tg.Sink)
			e := &entry{seq: s.seq, ev: &s.ev, route: tg.Route, payload: bytes.Clone(tg.Payload)}
			s.recs[tg.Sink] = &pipeline.DeliveryRecord{Sink: tg.Sink, Route: tg.Route, State: pipeline.StateQueued}
			if tg.Err != "" {
				s.recs[tg.Sink].State, s.recs[tg.Sink].LastError = pipeline.StateDead, tg.Err
				q.dead[e.seq] = &deadEntry{e: e, err: tg.Err, failedAt: now}
				continue
			}
			q.ready = append(q.ready, e)
			woken[q] = true
		}
	}
	for q := range woken {
		q.notify()
	}
	l.swept += len(entries)
	if l.swept >= sweepEvery {
		l.swept = 0
		maps.DeleteFunc(l.dedup, func(_ dedupKey, d dedupEntry) bool { return !now.Before(d.expires) })
	}
	return out, nil
}

var _ pipeline.QueueLister = (*Log)(nil)

// QueueNames implements [pipeline.QueueLister].
func (l *Log) QueueNames(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memlog: queue names: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("memlog: queue names: %w", pipeline.ErrClosed)
	}
	var names []string
	for name, q := range l.queues {
		if len(q.ready)+len(q.leased)+len(q.retry)+len(q.dead) > 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// Queue implements [pipeline.Log.Queue]. The queue of a sink that was never
// appended to is empty. After Close the returned queue's methods return
// [pipeline.ErrClosed].
func (l *Log) Queue(sink string) pipeline.Queue {
	l.mu.Lock()
	defer l.mu.Unlock()
	return &Queue{l: l, sink: sink, q: l.queueLocked(sink)}
}

// Event implements [pipeline.Log.Event]. Events stay after every queue has
// settled them; memlog has no retention.
func (l *Log) Event(ctx context.Context, id string) (pipeline.Event, error) {
	if err := ctx.Err(); err != nil {
		return pipeline.Event{}, fmt.Errorf("memlog: event %q: %w", id, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return pipeline.Event{}, fmt.Errorf("memlog: event %q: %w", id, pipeline.ErrClosed)
	}
	s, ok := l.events[id]
	if !ok {
		return pipeline.Event{}, fmt.Errorf("memlog: event %q: %w", id, pipeline.ErrNotFound)
	}
	return cloneEvent(s.ev), nil
}

// Close implements [pipeline.Log.Close]. It releases every blocked Fetch,
// which then returns [pipeline.ErrClosed]. Closing twice is not an error.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		close(l.done)
	}
	return nil
}

var _ pipeline.WriteChecker = (*Log)(nil)

// CheckWrite implements [pipeline.WriteChecker]: ErrClosed after Close, else
// nil (memlog is never full).
func (l *Log) CheckWrite() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("memlog: %w", pipeline.ErrClosed)
	}
	return nil
}

// Queue is one sink's delivery queue in a [Log], as returned by [Log.Queue].
type Queue struct {
	l    *Log
	sink string
	q    *queue
}

var _ pipeline.Queue = (*Queue)(nil)

// Fetch implements [pipeline.Queue.Fetch]. Due retries come first, in Seq
// order, then first deliveries in Seq order. It returns an error when max is
// less than 1, ctx's error when ctx is done before anything is ready (even if
// entries are ready when it is called with a done ctx), and
// [pipeline.ErrClosed] when the log is closed, also while it waits.
func (q *Queue) Fetch(ctx context.Context, max int) ([]pipeline.Delivery, error) {
	if max < 1 {
		return nil, fmt.Errorf("memlog: fetch %s: max %d is less than 1", q.sink, max)
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("memlog: fetch %s: %w", q.sink, err)
		}
		q.l.mu.Lock()
		if q.l.closed {
			q.l.mu.Unlock()
			return nil, fmt.Errorf("memlog: fetch %s: %w", q.sink, pipeline.ErrClosed)
		}
		now := time.Now()
		ds, next := q.takeLocked(now, max)
		wake := q.q.wake
		q.l.mu.Unlock()
		if len(ds) > 0 {
			return ds, nil
		}

		var due <-chan time.Time
		if !next.IsZero() {
			if timer == nil {
				timer = time.NewTimer(next.Sub(now))
			} else {
				timer.Reset(next.Sub(now))
			}
			due = timer.C
		}
		select {
		case <-ctx.Done():
		case <-q.l.done:
		case <-wake:
		case <-due:
		}
	}
}

// takeLocked leases up to max ready entries and returns them, or, when none
// is ready, the time the earliest retry becomes due (zero if there is none).
// q.l.mu must be held.
func (q *Queue) takeLocked(now time.Time, max int) ([]pipeline.Delivery, time.Time) {
	var due []*entry
	var next time.Time
	for _, e := range q.q.retry {
		if !e.retryAt.After(now) {
			due = append(due, e)
		} else if next.IsZero() || e.retryAt.Before(next) {
			next = e.retryAt
		}
	}
	slices.SortFunc(due, func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
	if len(due) > max {
		due = due[:max]
	}
	for _, e := range due {
		delete(q.q.retry, e.seq)
	}
	n := min(max-len(due), len(q.q.ready))
	take := append(due, q.q.ready[:n]...)
	q.q.ready = q.q.ready[n:]
	if len(take) == 0 {
		return nil, next
	}
	ds := make([]pipeline.Delivery, len(take))
	for i, e := range take {
		e.attempts++
		q.q.leased[e.seq] = e
		ds[i] = pipeline.Delivery{
			Seq:       e.seq,
			Event:     cloneEvent(*e.ev),
			Route:     e.route,
			Payload:   bytes.Clone(e.payload),
			Attempt:   e.attempts,
			LastError: e.lastErr,
		}
	}
	return ds, time.Time{}
}

// Settle implements [pipeline.Queue.Settle]. Every settled Seq must be leased
// (fetched and not yet settled) and appear once in the call, and every outcome
// must be known; otherwise Settle returns an error and changes nothing.
func (q *Queue) Settle(ctx context.Context, s []pipeline.Settlement) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memlog: settle %s: %w", q.sink, err)
	}
	q.l.mu.Lock()
	defer q.l.mu.Unlock()
	if q.l.closed {
		return fmt.Errorf("memlog: settle %s: %w", q.sink, pipeline.ErrClosed)
	}
	seen := make(map[uint64]bool, len(s))
	for _, st := range s {
		if _, ok := q.q.leased[st.Seq]; !ok || seen[st.Seq] {
			return fmt.Errorf("memlog: settle %s: seq %d is not leased or settled twice", q.sink, st.Seq)
		}
		seen[st.Seq] = true
		switch st.Outcome {
		case pipeline.Ack, pipeline.Retry, pipeline.Dead, pipeline.Hold:
		default:
			return fmt.Errorf("memlog: settle %s: seq %d: unknown outcome %d", q.sink, st.Seq, st.Outcome)
		}
	}
	now := time.Now()
	retried := false
	for _, st := range s {
		e := q.q.leased[st.Seq]
		delete(q.q.leased, st.Seq)
		if st.Outcome == pipeline.Hold {
			q.hold(e)
			continue
		}
		r := q.record(e.ev, e.route)
		*r = r.Settled(st, now)
		switch st.Outcome {
		case pipeline.Retry:
			if st.NotAttempted {
				e.attempts-- // the one Fetch counted; LastError stays the last attempt's
			} else {
				e.lastErr = st.Err
			}
			e.retryAt = st.RetryAt
			q.q.retry[e.seq] = e
			retried = true
		case pipeline.Dead:
			if st.NotAttempted {
				e.attempts-- // the one Fetch counted
			}
			q.q.dead[e.seq] = &deadEntry{e: e, err: st.Err, failedAt: now}
		}
	}
	if retried {
		// A waiting Fetch recomputes its timer for the earliest retry.
		q.q.notify()
	}
	return nil
}

// Stats implements [pipeline.Queue.Stats]. Ready counts first deliveries and
// every leased entry (retries included); Retrying counts entries settled as
// Retry and not fetched since, due or not.
func (q *Queue) Stats(ctx context.Context) (pipeline.QueueStats, error) {
	if err := ctx.Err(); err != nil {
		return pipeline.QueueStats{}, fmt.Errorf("memlog: stats %s: %w", q.sink, err)
	}
	q.l.mu.Lock()
	defer q.l.mu.Unlock()
	if q.l.closed {
		return pipeline.QueueStats{}, fmt.Errorf("memlog: stats %s: %w", q.sink, pipeline.ErrClosed)
	}
	return pipeline.QueueStats{
		Ready:    len(q.q.ready) + len(q.q.leased),
		Retrying: len(q.q.retry),
		Dead:     len(q.q.dead),
	}, nil
}

// DeadLetters implements [pipeline.Queue.DeadLetters]. A limit less than 1
// returns nothing.
func (q *Queue) DeadLetters(ctx context.Context, after uint64, limit int) ([]pipeline.DeadLetter, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memlog: dead letters %s: %w", q.sink, err)
	}
	q.l.mu.Lock()
	defer q.l.mu.Unlock()
	if q.l.closed {
		return nil, fmt.Errorf("memlog: dead letters %s: %w", q.sink, pipeline.ErrClosed)
	}
	if limit < 1 {
		return nil, nil
	}
	var ds []*deadEntry
	for seq, d := range q.q.dead {
		if seq > after {
			ds = append(ds, d)
		}
	}
	slices.SortFunc(ds, func(a, b *deadEntry) int { return cmp.Compare(a.e.seq, b.e.seq) })
	if len(ds) > limit {
		ds = ds[:limit]
	}
	out := make([]pipeline.DeadLetter, len(ds))
	for i, d := range ds {
		out[i] = pipeline.DeadLetter{
			Seq:      d.e.seq,
			Event:    cloneEvent(*d.e.ev),
			Route:    d.e.route,
			Payload:  bytes.Clone(d.e.payload),
			Attempts: d.e.attempts,
			Err:      d.err,
			FailedAt: d.failedAt,
		}
	}
	return out, nil
}

// cloneEvent copies ev so that neither the caller nor the log can change
// what the other holds.
func cloneEvent(ev pipeline.Event) pipeline.Event {
	ev.Headers = maps.Clone(ev.Headers)
	ev.Body = bytes.Clone(ev.Body)
	return ev
}

// defaultLimit is the page size of Events when the filter has none.
const defaultLimit = 100

// Events implements [pipeline.Log.Events]. Its cursor is the decimal Seq of
// the last event it looked at; it looks at every event, so it never stops
// early.
func (l *Log) Events(ctx context.Context, f pipeline.EventFilter) ([]pipeline.EventInfo, string, error) {
	return l.listEvents(ctx, f, false)
}

// EventsNewestFirst implements [pipeline.NewestFirstLog]. Its cursor is the
// Seq of the last event it returned: the next call starts below it.
func (l *Log) EventsNewestFirst(ctx context.Context, f pipeline.EventFilter) ([]pipeline.EventInfo, string, error) {
	return l.listEvents(ctx, f, true)
}

// listEvents lists in log order, or newest first when reverse.
func (l *Log) listEvents(ctx context.Context, f pipeline.EventFilter, reverse bool) ([]pipeline.EventInfo, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", fmt.Errorf("memlog: events: %w", err)
	}
	after := uint64(0)
	if f.After != "" {
		n, err := strconv.ParseUint(f.After, 10, 64)
		if err != nil {
			return nil, "", fmt.Errorf("memlog: events: after %q: %w", f.After, pipeline.ErrBadCursor)
		}
		after = n
	}
	if !pipeline.ValidFilterState(f.State) {
		return nil, "", fmt.Errorf("memlog: events: state %q: want queued, retrying, pending, delivered, dead or dropped", f.State)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, "", fmt.Errorf("memlog: events: %w", pipeline.ErrClosed)
	}
	// The event of seq k is l.order[k-1]. In log order a page starts
	// after the cursor's seq; newest first, below it.
	n := uint64(len(l.order))
	var out []pipeline.EventInfo
	add := func(idx uint64) bool {
		if s := l.order[idx]; match(s, f) {
			out = append(out, pipeline.EventInfo{Event: cloneEvent(s.ev), Seq: s.seq, Sinks: slices.Clone(s.sinks)})
		}
		return len(out) == limit
	}
	if !reverse {
		for i := after; i < n; i++ {
			if add(i) {
				if i+1 < n {
					return out, strconv.FormatUint(l.order[i].seq, 10), nil
				}
				break
			}
		}
		return out, "", nil
	}
	top := n // indices below it
	if f.After != "" {
		top = min(max(after, 1)-1, n)
	}
	for i := top; i > 0; i-- {
		if add(i - 1) {
			if i > 1 {
				return out, strconv.FormatUint(l.order[i-1].seq, 10), nil
			}
			break
		}
	}
	return out, "", nil
}

// record returns the delivery record of ev in this queue, creating it
// (queued) when there is none, and sets its route. q.l.mu is held.
func (q *Queue) record(ev *pipeline.Event, route string) *pipeline.DeliveryRecord {
	s := q.l.events[ev.ID]
	r, ok := s.recs[q.sink]
	if !ok {
		r = &pipeline.DeliveryRecord{Sink: q.sink, State: pipeline.StateQueued}
		s.recs[q.sink] = r
	}
	r.Route = route
	return r
}

// Deliveries implements [pipeline.DeliveryLog].
func (l *Log) Deliveries(ctx context.Context, id string) ([]pipeline.DeliveryRecord, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memlog: deliveries %q: %w", id, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("memlog: deliveries %q: %w", id, pipeline.ErrClosed)
	}
	s, ok := l.events[id]
	if !ok {
		return nil, fmt.Errorf("memlog: deliveries %q: %w", id, pipeline.ErrNotFound)
	}
	out := make([]pipeline.DeliveryRecord, 0, len(s.recs))
	for _, sink := range s.sinks {
		out = append(out, *s.recs[sink])
	}
	for _, sink := range slices.Sorted(maps.Keys(s.recs)) {
		if !slices.Contains(s.sinks, sink) {
			out = append(out, *s.recs[sink])
		}
	}
	for i := range out {
		if q := l.queues[out[i].Sink]; q != nil {
			if e, ok := q.retry[s.seq]; ok && e.retryAt.Equal(heldAt) {
				out[i].Held = true
			}
		}
	}
	return out, nil
}

// matchState reports whether s has a delivery to sink (to any sink when
// sink is empty) in the filter's state.
func matchState(s *stored, sink, state string) bool {
	if state == "" {
		return true
	}
	for name, r := range s.recs {
		if (sink == "" || name == sink) && pipeline.MatchState(state, r.State) {
			return true
		}
	}
	return false
}

func match(s *stored, f pipeline.EventFilter) bool {
	ev := &s.ev
	switch {
	case f.ID != "" && ev.ID != f.ID,
		f.Source != "" && ev.Source != f.Source,
		f.DedupKey != "" && ev.DedupKey != f.DedupKey,
		f.Sink != "" && !slices.Contains(s.sinks, f.Sink),
		!f.Since.IsZero() && ev.ReceivedAt.Before(f.Since),
		!f.Until.IsZero() && !ev.ReceivedAt.Before(f.Until),
		!matchState(s, f.Sink, f.State):
		return false
	}
	return true
}

// lock locks the log for a queue call named op, or returns why it cannot.
func (q *Queue) lock(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memlog: %s %s: %w", op, q.sink, err)
	}
	q.l.mu.Lock()
	if q.l.closed {
		q.l.mu.Unlock()
		return fmt.Errorf("memlog: %s %s: %w", op, q.sink, pipeline.ErrClosed)
	}
	return nil
}

// deadSeqs returns seqs, or every dead seq when seqs is nil. q.l.mu is held.
func (q *Queue) deadSeqs(seqs []uint64) []uint64 {
	if seqs == nil {
		seqs = slices.Sorted(maps.Keys(q.q.dead))
	}
	return seqs
}

// RetryDead implements [pipeline.Queue.RetryDead].
func (q *Queue) RetryDead(ctx context.Context, seqs []uint64) (int, error) {
	if err := q.lock(ctx, "retry dead"); err != nil {
		return 0, err
	}
	defer q.l.mu.Unlock()
	now := time.Now()
	n := 0
	for _, seq := range q.deadSeqs(seqs) {
		d, ok := q.q.dead[seq]
		if !ok {
			continue
		}
		delete(q.q.dead, seq)
		e := d.e
		e.attempts = 0
		e.lastErr = d.err
		e.retryAt = now
		q.q.retry[seq] = e
		r := q.record(e.ev, e.route)
		r.State, r.NextAttemptAt = pipeline.StateRetrying, now
		n++
	}
	if n > 0 {
		q.q.notify()
	}
	return n, nil
}

// DropDead implements [pipeline.Queue.DropDead].
func (q *Queue) DropDead(ctx context.Context, seqs []uint64) (int, error) {
	dropped, err := q.dropDead(ctx, seqs)
	return len(dropped), err
}

// DropDeadSeqs implements [pipeline.Holder.DropDeadSeqs].
func (q *Queue) DropDeadSeqs(ctx context.Context, seqs []uint64) ([]uint64, error) {
	if seqs == nil {
		return nil, nil
	}
	return q.dropDead(ctx, seqs)
}

// dropDead drops the dead letters among seqs (nil: all) and returns their
// seqs in increasing order.
func (q *Queue) dropDead(ctx context.Context, seqs []uint64) ([]uint64, error) {
	if err := q.lock(ctx, "drop dead"); err != nil {
		return nil, err
	}
	defer q.l.mu.Unlock()
	now := time.Now()
	var dropped []uint64
	for _, seq := range q.deadSeqs(seqs) {
		if d, ok := q.q.dead[seq]; ok {
			delete(q.q.dead, seq)
			r := q.record(d.e.ev, d.e.route)
			*r = r.Dropped(now)
			dropped = append(dropped, seq)
		}
	}
	slices.Sort(dropped)
	return dropped, nil
}

// has reports whether the queue holds an entry for seq. q.l.mu is held.
func (q *Queue) has(seq uint64) bool {
	if _, ok := q.q.leased[seq]; ok {
		return true
	}
	if _, ok := q.q.retry[seq]; ok {
		return true
	}
	if _, ok := q.q.dead[seq]; ok {
		return true
	}
	_, ok := slices.BinarySearchFunc(q.q.ready, seq, func(e *entry, seq uint64) int { return cmp.Compare(e.seq, seq) })
	return ok
}

// Requeue implements [pipeline.Queue.Requeue].
func (q *Queue) Requeue(ctx context.Context, rs []pipeline.Requeue) (int, error) {
	if err := q.lock(ctx, "requeue"); err != nil {
		return 0, err
	}
	defer q.l.mu.Unlock()
	for _, r := range rs {
		if r.Seq == 0 || r.Seq > uint64(len(q.l.order)) {
			return 0, fmt.Errorf("memlog: requeue %s: event seq %d: %w", q.sink, r.Seq, pipeline.ErrNotFound)
		}
	}
	now := time.Now()
	n := 0
	for i, r := range rs {
		_, rs[i].Dead = q.q.dead[r.Seq]
		if q.has(r.Seq) {
			continue
		}
		s := q.l.order[r.Seq-1]
		q.q.retry[r.Seq] = &entry{seq: r.Seq, ev: &s.ev, route: r.Route, payload: bytes.Clone(r.Payload), retryAt: now}
		rec := q.record(&s.ev, r.Route)
		rec.State, rec.NextAttemptAt = pipeline.StateQueued, time.Time{}
		n++
	}
	if n > 0 {
		q.q.notify()
	}
	return n, nil
}

// Oldest implements [pipeline.Queue.Oldest].
func (q *Queue) Oldest(ctx context.Context) (time.Time, error) {
	if err := q.lock(ctx, "oldest"); err != nil {
		return time.Time{}, err
	}
	defer q.l.mu.Unlock()
	var oldest *entry
	consider := func(e *entry) {
		if oldest == nil || e.seq < oldest.seq {
			oldest = e
		}
	}
	if len(q.q.ready) > 0 {
		consider(q.q.ready[0])
	}
	for _, e := range q.q.leased {
		consider(e)
	}
	for _, e := range q.q.retry {
		consider(e)
	}
	if oldest == nil {
		return time.Time{}, nil
	}
	return oldest.ev.ReceivedAt, nil
}
