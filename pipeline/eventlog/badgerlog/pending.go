package badgerlog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
)

// A queue's ready entries live in memory, not in Badger. An event appended
// with a route to a sink is queued there until its first settlement (or a
// hold), and every such change writes the event's delivery record for the
// sink (delivery.go). So the log itself says what is queued: an event
// whose record lists a route to the sink (logpb.Event routes) and that has
// no delivery record for it. Append writes no key per sink, settling the
// first attempt deletes none, and Fetch reads no key to find what is next:
// with two sinks that is four Badger writes of an event's ten, and the
// queue scan, gone (docs/performance.md). A first-attempt ack's record may
// be its place in the sink's Acks (acks.go): that counts as one too.
//
// The queues are rebuilt from the event records, in the background after
// Open (loadQueues), from the pending mark (m/pending) on: a seq below
// which no event is queued anywhere, written every markInterval and at
// Close. Queued only ever turns into something
// else (a settlement or a hold writes the record; Requeue and RetryDead
// write retry keys, never a queued entry), and new entries get seqs above
// every other, so a mark once true stays true.
//
// Records written before routes existed have ready keys (q/<sink>/<seq>);
// Open finds those too, and settling such an entry deletes its key.

var keyPendingMark = []byte("m/pending")

// markInterval is how often the pending mark is written when it moved
// (Open starts it, Close writes the last one): it bounds how much of the
// log Open reads after a crash.
const markInterval = 2 * time.Second

// pending is the seqs of one sink's queued entries, ready or leased, in
// ascending order. Its lock is a leaf: nothing is locked while it is held.
type pending struct {
	seqs    []uint64                 // ascending; seqs[:next] are leased or settled, seqs[next:] ready
	next    int                      // index of the first entry not fetched
	settled map[uint64]bool          // settled entries still in seqs[:next]
	legacy  map[uint64]*logpb.Target // entries that have a ready key (records written before routes)
}

// add queues seqs, each above every seq added before.
func (p *pending) add(seqs ...uint64) { p.seqs = append(p.seqs, seqs...) }

// take leases up to max ready entries, oldest first.
func (p *pending) take(max int) []uint64 {
	n := min(max, len(p.seqs)-p.next)
	out := p.seqs[p.next : p.next+n : p.next+n]
	p.next += n
	return out
}

// untake puts back the last n entries take leased: nothing was handed out.
func (p *pending) untake(n int) { p.next -= n }

// settle takes seq, a leased entry, out of the queue.
func (p *pending) settle(seq uint64) {
	if p.settled == nil {
		p.settled = map[uint64]bool{}
	}
	p.settled[seq] = true
	delete(p.legacy, seq)
	for p.next > 0 && p.settled[p.seqs[0]] {
		delete(p.settled, p.seqs[0])
		p.seqs = p.seqs[1:]
		p.next--
	}
	if len(p.settled) >= 256 && 2*len(p.settled) >= p.next {
		// An entry leased long (a batch given up at a stop deadline stays
		// leased until a restart) holds the ones settled after it: drop
		// them, moving the leased ones up to next, so that what is kept is
		// bounded by what is queued. Amortized O(1): next is at most twice
		// what this drops.
		j := p.next
		for i := p.next - 1; i >= 0; i-- {
			if !p.settled[p.seqs[i]] {
				j--
				p.seqs[j] = p.seqs[i]
			}
		}
		p.seqs, p.next, p.settled = p.seqs[j:], p.next-j, nil
	}
	if len(p.seqs) == 0 {
		p.seqs = nil // let a long queue's array go
	}
}

// has reports whether seq is queued (ready or leased).
func (p *pending) has(seq uint64) bool {
	_, found := slices.BinarySearch(p.seqs, seq)
	return found && !p.settled[seq]
}

// len returns how many entries are queued (ready or leased).
func (p *pending) len() int { return len(p.seqs) - len(p.settled) }

// lowest returns the lowest queued seq; false if none.
func (p *pending) lowest() (uint64, bool) {
	if len(p.seqs) == 0 {
		return 0, false
	}
	return p.seqs[0], true // settled entries leave from the front at once
}

// below returns the queued seqs below top, ascending.
func (p *pending) below(top uint64) []uint64 {
	var out []uint64
	for _, s := range p.seqs {
		if s >= top {
			break
		}
		if !p.settled[s] {
			out = append(out, s)
		}
	}
	return out
}

// pendingMark returns a seq below which no event is queued for any sink:
// the lowest queued entry, or the next seq when none is. It reads next
// before the queues: Append adds an event to its queues before it moves
// next, so every seq below it is in them by then. Until the queues are
// rebuilt after Open (or when that failed), it is the mark Open read.
func (l *DB) pendingMark() uint64 {
	if !l.queuesLoaded() {
		return l.openMark
	}
	l.mu.Lock()
	mark := l.next
	qs := make([]*queue, 0, len(l.queues))
	for _, q := range l.queues {
		qs = append(qs, q)
	}
	l.mu.Unlock()
	for _, q := range qs {
		q.pmu.Lock()
		if s, ok := q.pending.lowest(); ok {
			mark = min(mark, s)
		}
		q.pmu.Unlock()
	}
	return mark
}

// writeMark writes the pending mark when it moved past the one written
// last (written holds that one) and returns the one written now.
func (l *DB) writeMark(written uint64) (uint64, error) {
	mark := l.pendingMark()
	if mark <= written {
		return written, nil
	}
	txn := l.newBlindTxn()
	if err := txn.Set(keyPendingMark, seqBytes(mark)); err != nil {
		return written, l.writeErr(err)
	}
	if err := l.commit(txn); err != nil {
		return written, err
	}
	return mark, nil
}

// loadQueues rebuilds the queues from the event records of seqs mark to
// top (loadPending) and then closes l.loaded. Open runs it in the
// background: webhooks are taken while a backlog of millions is read
// (~3 s per million), and everything that needs the queues whole waits
// for it (waitQueues): fetches, statistics, replays, retention. Events
// appended meanwhile (top and above) are queued by Append as always, after
// the ones rebuilt.
//
// A rebuild that fails (a record Badger cannot read now) is tried again,
// every loadRetry at first and then less often: it changes nothing until
// it succeeds, and until then nothing is delivered or removed. loadErr is
// then only ever ErrClosed.
func (l *DB) loadQueues(mark, top uint64) {
	defer l.wg.Done()
	defer close(l.loaded)
	start := time.Now()
	for wait := loadRetry; ; wait = min(2*wait, time.Minute) {
		read, err := l.loadPending(mark, top)
		if err == nil {
			took := time.Since(start)
			level := slog.LevelDebug
			if took >= time.Second { // a backlog held delivery back that long: worth a line
				level = slog.LevelInfo
			}
			l.log.Log(context.Background(), level, "event log: the sinks' queues are rebuilt; delivery starts", "events_read", read, "took", took.Round(time.Millisecond))
			return
		}
		if !errors.Is(err, pipeline.ErrClosed) {
			msg := err.Error()
			l.loadFailed.Store(&msg)
			l.log.Error("event log: could not rebuild the sinks' queues; nothing is delivered and nothing removed by retention until it succeeds; trying again", "err", err, "in", wait)
			select {
			case <-l.closed:
			case <-time.After(wait):
				continue
			}
		}
		l.loadErr = pipeline.ErrClosed
		return
	}
}

// loadRetry is how soon a failed rebuild of the queues is tried again
// (doubling, up to a minute); tests shorten it.
var loadRetry = time.Second

// queuesLoaded reports whether the queues are rebuilt after Open.
func (l *DB) queuesLoaded() bool {
	select {
	case <-l.loaded:
		return l.loadErr == nil
	default:
		return false
	}
}

// QueuesRebuilding implements [pipeline.QueueRebuilder]: true while Open's
// rebuild of the queues runs or waits to be tried again.
func (l *DB) QueuesRebuilding() (pipeline.QueueRebuild, bool) {
	select {
	case <-l.loaded:
		return pipeline.QueueRebuild{}, false
	case <-l.closed:
		return pipeline.QueueRebuild{}, false
	default:
		p := pipeline.QueueRebuild{Read: l.loadRead.Load(), Total: l.loadTotal}
		if msg := l.loadFailed.Load(); msg != nil {
			p.Err = *msg
		}
		return p, true
	}
}

// waitQueues returns nil once the log is open with its queues rebuilt
// (after Open, in the background), waiting for the rebuild: ErrClosed when
// the log is closed or closes first, ctx's error when ctx ends first.
func (l *DB) waitQueues(ctx context.Context) error {
	if err := l.checkOpen(); err != nil {
		return err
	}
	select {
	case <-l.loaded:
		return l.loadErr
	default:
	}
	select {
	case <-l.loaded:
		return l.loadErr
	case <-l.closed:
		return pipeline.ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("the sinks' queues are still being rebuilt after the start: %w", ctx.Err())
	}
}

// loadPending rebuilds every queue's entries from the event records of
// seqs mark to top: each queue gets them ahead of any it has (appended
// after Open). It returns how many records it read.
func (l *DB) loadPending(mark, top uint64) (int, error) {
	loaded := map[string]*pending{}
	read := 0
	l.loadRead.Store(0)
	err := l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: preEvent, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		look := newSettledLookup(txn, mark)
		defer look.close()
		var recorded []string // sinks of seq's routes where it was settled
		for it.Seek(eventKey(mark)); it.ValidForPrefix(preEvent); it.Next() {
			seq := binary.BigEndian.Uint64(it.Item().Key()[len(preEvent):])
			if seq >= top {
				break
			}
			if err := l.checkOpen(); err != nil { // Close waits for this goroutine
				return err
			}
			if loadHook != nil {
				loadHook(seq)
			}
			read++
			l.loadRead.Store(int64(read))
			l.progressed()
			rec := &logpb.Event{}
			if err := it.Item().Value(func(v []byte) error { return decode(v, rec) }); err != nil {
				return fmt.Errorf("decode event %d: %w", seq, err)
			}
			look.at(seq)
			recorded = recorded[:0]
			for _, r := range rec.GetRoutes() {
				if settled, err := look.settled(seq, r.GetSink()); err != nil {
					return err
				} else if settled {
					recorded = append(recorded, r.GetSink())
				}
			}
			if err := loadEntries(txn, loaded, seq, rec, recorded); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, pipeline.ErrClosed) {
			return read, err
		}
		return read, fmt.Errorf("rebuild the queues: %w", err)
	}
	for sink, p := range loaded {
		q := l.queue(sink)
		q.pmu.Lock()
		q.pending.seqs = append(p.seqs, q.pending.seqs...)
		q.pending.legacy = p.legacy // only the rebuild finds entries with a ready key
		q.pmu.Unlock()
	}
	return read, nil
}

// loadHook, when set (by tests only), is called with each event record
// loadPending reads.
var loadHook func(seq uint64)

// loadEntries adds to loaded (by sink) the event at seq, whose record is
// rec and which has delivery records (or Acks) for the sinks recorded,
// where it is still queued. loadPending calls it in seq order.
func loadEntries(txn *badger.Txn, loaded map[string]*pending, seq uint64, rec *logpb.Event, recorded []string) error {
	queue := func(sink string) *pending {
		p := loaded[sink]
		if p == nil {
			p = &pending{}
			loaded[sink] = p
		}
		return p
	}
	for _, r := range rec.GetRoutes() {
		if !slices.Contains(recorded, r.GetSink()) {
			queue(r.GetSink()).add(seq)
		}
	}
	if len(rec.GetRoutes()) > 0 {
		return nil
	}
	for _, s := range rec.GetSinks() { // written before routes: a ready key says queued
		item, err := txn.Get(readyKey(s, seq))
		if errors.Is(err, badger.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		t := &logpb.Target{}
		if err := item.Value(func(v []byte) error { return decode(v, t) }); err != nil {
			return fmt.Errorf("decode queue entry %d: %w", seq, err)
		}
		p := queue(s)
		p.add(seq)
		if p.legacy == nil {
			p.legacy = map[uint64]*logpb.Target{}
		}
		p.legacy[seq] = t
	}
	return nil
}

// routing is an event's routes and their transform payloads, from its
// full record or the recent-events cache.
type routing struct {
	routes   []*logpb.Route
	payloads []*logpb.Payload
}

// target returns the event's target for sink: its route and payload.
func (r routing) target(sink string) *logpb.Target {
	t := &logpb.Target{}
	t.Route, _ = routeIn(r.routes, sink)
	for _, p := range r.payloads {
		if p.GetSink() == sink {
			t.Payload = p.GetPayload()
			break
		}
	}
	return t
}

// routeTo returns the route of the event whose record is rec to sink;
// false when the event was not queued there at append.
func routeTo(rec *logpb.Event, sink string) (string, bool) { return routeIn(rec.GetRoutes(), sink) }

func routeIn(routes []*logpb.Route, sink string) (string, bool) {
	for _, r := range routes {
		if r.GetSink() == sink {
			return r.GetRoute(), true
		}
	}
	return "", false
}

// clonePayloads copies ps and their bytes; nil when there are none.
func clonePayloads(ps []*logpb.Payload) []*logpb.Payload {
	if len(ps) == 0 {
		return nil
	}
	out := make([]*logpb.Payload, len(ps))
	for i, p := range ps {
		out[i] = &logpb.Payload{Sink: p.GetSink(), Payload: bytes.Clone(p.GetPayload())}
	}
	return out
}

var _ pipeline.QueueLister = (*DB)(nil)

// QueueNames implements [pipeline.QueueLister]: the sinks with ready
// entries in memory (once the queues are rebuilt), and those with keys of
// retries, held entries or dead letters (and ready keys of older logs),
// found with a seek per sink rather than a walk of their keys.
func (l *DB) QueueNames(ctx context.Context) ([]string, error) {
	if err := l.waitQueues(ctx); err != nil {
		return nil, err
	}
	names := map[string]bool{}
	l.mu.Lock()
	qs := maps.Clone(l.queues)
	l.mu.Unlock()
	for name, q := range qs {
		q.pmu.Lock()
		if _, ok := q.pending.lowest(); ok {
			names[name] = true
		}
		q.pmu.Unlock()
	}
	err := l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for _, pre := range [][]byte{preReady, preRetry, preDead} {
			for it.Seek(pre); it.ValidForPrefix(pre); {
				if err := ctx.Err(); err != nil {
					return err
				}
				k := it.Item().Key()
				end := bytes.IndexByte(k[len(pre):], '/')
				if end < 0 {
					it.Next()
					continue
				}
				names[string(k[len(pre):len(pre)+end])] = true
				// Past every key of this sink: '0' follows '/'.
				it.Seek(append(slices.Clip(k[:len(pre)+end]), '/'+1))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the queues: %w", err)
	}
	return slices.Sorted(maps.Keys(names)), nil
}
