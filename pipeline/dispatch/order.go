package dispatch

// Per-key order (delivery.order_key): see [Options.OrderKey].
//
// State, in memory, per key that has an event not yet settled for good:
// its head (the one event of the key that may be fetched and delivered:
// in flight, retrying, released, or — with OrderBlockOnDead — dead) and
// the seqs of the key's later events, held in the queue ([pipeline.Hold])
// behind it. Fetched entries of a key whose head is another event are
// settled as Hold at once (no attempt counted, no plugin call). When the
// head is acknowledged (or goes dead, unless OrderBlockOnDead), the
// lowest held seq is released ([pipeline.Holder.Release]) and becomes the
// head. The held seqs cost about 16 bytes each: a key stuck for a day
// keeps its events on disk, not in memory.
//
// At start the state is rebuilt from the queue ([pipeline.Holder.Waiting]):
// per key, the lowest seq that is not held (retrying, dead in block mode,
// or ready and fetched before the restart) is the head; when there is
// none, the lowest held one is, and it is released.

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// OrderStatus is what [Dispatcher.Order] reports of per-key order.
type OrderStatus struct {
	// Enabled is true when the sink has an order key.
	Enabled bool
	// HeldKeys counts the keys that have events held back behind one of
	// theirs that is in flight, retrying or (block mode) dead.
	HeldKeys int
	// Held counts the events held back.
	Held int
	// OldestHeld is the ReceivedAt of the oldest event held back; zero when
	// none is.
	OldestHeld time.Time
}

// order is a dispatcher's per-key state; nil when the sink has no order key.
type order struct {
	q     pipeline.Holder
	key   func(pipeline.Event) (string, error)
	block bool

	mu    sync.Mutex // guards the fields below; Run's goroutine writes, Order reads
	keys  map[string]*keyState
	heads map[uint64]string // the head seq of each key → the key
	held  int
	// unrecorded are the held seqs whose Hold is not in the log yet (the
	// batch in flight's): a release finds only recorded holds, so
	// DroppedDead leaves a head among them in late, and settleOrdered
	// releases it once the Hold is recorded.
	unrecorded map[uint64]bool
	late       []uint64
	// loaded says rebuild has run; early are the dead letters DroppedDead
	// was told of before, applied by rebuild (a drop between its read of
	// the queue and its lock would otherwise find no key and be lost).
	loaded bool
	early  []uint64

	// Run's goroutine only:
	release []uint64              // heads chosen but not yet released in the log
	holds   []pipeline.Settlement // Hold settlements of the batch in flight
}

type keyState struct {
	head uint64
	dead bool      // the head is a dead letter (block mode)
	held []heldSeq // ascending by seq
}

type heldSeq struct {
	seq uint64
	at  int64 // the event's ReceivedAt, unix nanoseconds
}

// errNoHolder is why a dispatcher with an order key refuses to run on a
// queue that cannot hold entries.
var errNoHolder = errors.New(`delivery.order_key needs a log whose queues can hold entries back, and this one cannot: use [log] backend = "badger", or remove order_key from the sink`)

func newOrder(o Options) *order {
	if o.OrderKey == nil {
		return nil
	}
	h, _ := o.Queue.(pipeline.Holder)
	return &order{q: h, key: o.OrderKey, block: o.OrderBlockOnDead, keys: map[string]*keyState{}, heads: map[uint64]string{}}
}

// keyOf returns the order key of an event; an event whose key expression
// fails (or gives no key) is in a key of its own.
func (d *Dispatcher) keyOf(seq uint64, ev pipeline.Event) string {
	k, err := d.ord.key(ev)
	if err == nil && k != "" {
		return "k" + k
	}
	if err == nil {
		err = errors.New("the expression gave no key (null or empty)")
	}
	d.o.Logger.Warn("order key failed; the event is delivered in a key of its own, unordered",
		"sink", d.o.Sink, "event_id", ev.ID, "err", err)
	if d.o.OnOrderKeyError != nil {
		d.o.OnOrderKeyError()
	}
	return "\x00" + strconv.FormatUint(seq, 10)
}

// loadOrder rebuilds the per-key state from the queue; false when ctx
// ended first. It retries while the log fails, except when it is closed.
func (d *Dispatcher) loadOrder(ctx context.Context) (bool, error) {
	o := d.ord
	if o.q == nil {
		d.o.Logger.Error("sink cannot keep per-key order; nothing is delivered", "sink", d.o.Sink, "err", errNoHolder)
		<-ctx.Done()
		return false, nil
	}
	for {
		start := time.Now()
		per := map[string][]pipeline.Waiting{}
		err := o.q.Waiting(ctx, o.block, func(w pipeline.Waiting) error {
			k := d.keyOf(w.Seq, w.Event)
			w.Event = pipeline.Event{ReceivedAt: w.Event.ReceivedAt}
			per[k] = append(per[k], w)
			return nil
		})
		if err == nil {
			n := o.rebuild(per)
			d.o.Logger.Info("per-key order state rebuilt", "sink", d.o.Sink, "entries", n, "keys", len(per),
				"held", o.held, "took", time.Since(start).Round(time.Millisecond))
			return d.releaseHeads(ctx), nil
		}
		if ctx.Err() != nil {
			return false, nil
		}
		if errors.Is(err, pipeline.ErrClosed) || errors.Is(err, pipeline.ErrHalted) {
			return false, err
		}
		d.o.Logger.Error("read sink queue for per-key order failed, trying again", "sink", d.o.Sink, "err", err)
		if !sleep(ctx, time.Second) {
			return false, nil
		}
	}
}

// rebuild sets the state from the waiting entries by key and returns how
// many entries there were.
func (o *order) rebuild(per map[string][]pipeline.Waiting) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for k, ws := range per {
		n += len(ws)
		slices.SortFunc(ws, func(a, b pipeline.Waiting) int { return cmp.Compare(a.Seq, b.Seq) })
		st := &keyState{}
		head := -1
		for i, w := range ws {
			if w.State != pipeline.WaitingHeld {
				head = i
				break
			}
		}
		if head < 0 {
			head = 0
			o.release = append(o.release, ws[0].Seq)
		}
		st.head, st.dead = ws[head].Seq, ws[head].State == pipeline.WaitingDead
		for i, w := range ws {
			if i != head && w.State == pipeline.WaitingHeld {
				st.held = append(st.held, heldSeq{seq: w.Seq, at: w.Event.ReceivedAt.UnixNano()})
			}
		}
		o.held += len(st.held)
		o.keys[k] = st
		o.heads[st.head] = k
	}
	o.loaded = true
	o.release = append(o.release, o.dropLocked(o.early)...)
	o.early = nil
	return n
}

// admit returns the entries of fetched that may be delivered now: at most
// one per key, the key's head. The others are remembered behind their
// key's head and added to the Hold settlements of the batch (o.holds),
// recorded with its outcomes (settleOrdered), or by settleHolds when no
// entry of the batch may be delivered. A batch may be fetched in parts,
// each admitted in turn: batch, when not nil, gathers the keys of the
// entries returned so far, and hurry reports whether one of those keys
// has events held behind the batch's entry (see fetch).
func (d *Dispatcher) admit(fetched []pipeline.Delivery, batch map[string]bool) (out []pipeline.Delivery, hurry bool) {
	o := d.ord
	keys := make([]string, len(fetched))
	for i, e := range fetched {
		keys[i] = d.keyOf(e.Seq, e.Event)
	}
	var holds []pipeline.Settlement
	o.mu.Lock()
	for i, e := range fetched {
		k := keys[i]
		st := o.keys[k]
		switch {
		case st == nil:
			o.keys[k] = &keyState{head: e.Seq}
			o.heads[e.Seq] = k
			out = append(out, e)
			if batch != nil {
				batch[k] = true
			}
		case st.head == e.Seq:
			st.dead = false
			out = append(out, e)
			if batch != nil {
				batch[k] = true
				hurry = hurry || len(st.held) > 0
			}
		default:
			hurry = hurry || batch[k]
			i, found := slices.BinarySearchFunc(st.held, e.Seq, func(h heldSeq, seq uint64) int { return cmp.Compare(h.seq, seq) })
			if !found {
				st.held = slices.Insert(st.held, i, heldSeq{seq: e.Seq, at: e.Event.ReceivedAt.UnixNano()})
				o.held++
			}
			holds = append(holds, pipeline.Settlement{Seq: e.Seq, Outcome: pipeline.Hold})
			if o.unrecorded == nil {
				o.unrecorded = map[uint64]bool{}
			}
			o.unrecorded[e.Seq] = true
		}
	}
	o.mu.Unlock()
	o.holds = append(o.holds, holds...)
	return out, hurry
}

// settleHolds records the Hold settlements of a batch none of whose
// entries may be delivered now (see admit).
func (d *Dispatcher) settleHolds(ctx context.Context) {
	if len(d.ord.holds) > 0 {
		d.settleOrdered(ctx, nil)
	}
}

// settleOrdered records the batch's outcomes s with its holds (settled
// with the outcomes: one transaction per batch), moves each key whose
// head was settled for good (acked; dead unless OrderBlockOnDead) to its
// next held event, and releases those in the same call. It tries again
// while the log refuses, like settle, until ctx ends; outcomes too big for
// one atomic write are recorded in parts, as settle does, and the releases
// after them. The order of the writes does not matter for a crash: at
// start the lowest event of a key that is not held is its head, whether
// released or not.
func (d *Dispatcher) settleOrdered(ctx context.Context, s []pipeline.Settlement) (recorded bool) {
	o := d.ord
	s = append(s, o.holds...)
	o.holds = nil
	o.mu.Lock()
	for _, x := range s {
		k, ok := o.heads[x.Seq]
		if !ok || x.Outcome == pipeline.Retry || x.Outcome == pipeline.Hold {
			continue
		}
		st := o.keys[k]
		if x.Outcome == pipeline.Dead && o.block {
			st.dead = true
			continue
		}
		delete(o.heads, x.Seq)
		if len(st.held) == 0 {
			delete(o.keys, k)
			continue
		}
		st.head, st.held = st.held[0].seq, st.held[1:]
		o.held--
		o.heads[st.head] = k
		o.release = append(o.release, st.head)
	}
	o.mu.Unlock()
	tooBig := false
	if !d.record(ctx, func() int { return len(s) }, func() error {
		err := o.q.SettleRelease(ctx, s, o.release)
		if errors.Is(err, pipeline.ErrTooBig) && len(s) > 1 {
			tooBig = true
			return nil
		}
		return err
	}) {
		return false
	}
	if !tooBig {
		o.release = o.release[:0]
		d.holdsRecorded(ctx, s)
		return true
	}
	// Too big for one atomic write: the outcomes in parts, as settle does,
	// and the releases after all of them, since an event released before
	// its hold is recorded would stay held for ever.
	if !d.settle(ctx, s) {
		return false
	}
	if d.releaseHeads(ctx) {
		d.holdsRecorded(ctx, s)
	}
	return true
}

// holdsRecorded notes that the Holds in s are in the log and releases the
// heads DroppedDead chose among them meanwhile.
func (d *Dispatcher) holdsRecorded(ctx context.Context, s []pipeline.Settlement) {
	o := d.ord
	o.mu.Lock()
	for _, x := range s {
		if x.Outcome == pipeline.Hold {
			delete(o.unrecorded, x.Seq)
		}
	}
	if len(o.unrecorded) == 0 {
		o.unrecorded = nil // a map keeps its size: a batch of 10,000 holds would pin it
	}
	o.release = append(o.release, o.late...)
	o.late = nil
	o.mu.Unlock()
	d.releaseHeads(ctx)
}

// releaseHeads records the pending releases, in parts when they are too
// many for one write, trying again while the log refuses, as record does;
// false when ctx ended or the log closed first.
func (d *Dispatcher) releaseHeads(ctx context.Context) bool {
	o := d.ord
	return d.record(ctx, func() int { return len(o.release) }, func() error {
		n, err := inParts(o.release, d.writeReleases(ctx))
		o.release = o.release[:copy(o.release, o.release[n:])]
		return err
	})
}

// releaseAllHeld releases every entry held in the queue, for a dispatcher
// without an order key (order_key was removed, or a breaker's probes held
// entries when the process stopped: see probeEntry): no entry stays parked
// where Fetch never reaches it. It retries while the log fails.
func (d *Dispatcher) releaseAllHeld(ctx context.Context) error {
	h, ok := d.o.Queue.(pipeline.Holder)
	if !ok {
		return nil
	}
	for {
		n, err := h.Release(ctx, nil)
		if err == nil {
			if n > 0 {
				d.o.Logger.Info("released held events: the sink has no order_key now, or a breaker's probes had looked past them", "sink", d.o.Sink, "events", n)
			}
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, pipeline.ErrClosed) {
			return err
		}
		d.o.Logger.Error("release held events failed, trying again", "sink", d.o.Sink, "err", err)
		if !sleep(ctx, time.Second) {
			return nil
		}
	}
}

// DroppedDead tells the dispatcher that the dead letters seqs were
// dropped: each key held behind one of them (OrderBlockOnDead) goes on
// with its next held event. Safe for concurrent use; told before Run has
// rebuilt the per-key state, the dispatcher applies it once it has. When
// it fails, the keys stay held until the dispatcher starts again (its
// rebuild does not see dropped dead letters).
func (d *Dispatcher) DroppedDead(ctx context.Context, seqs []uint64) error {
	o := d.ord
	if o == nil || !o.block || o.q == nil {
		return nil
	}
	o.mu.Lock()
	if !o.loaded {
		o.early = append(o.early, seqs...)
		o.mu.Unlock()
		return nil
	}
	release := o.dropLocked(seqs)
	o.mu.Unlock()
	_, err := inParts(release, d.writeReleases(ctx))
	return err
}

// dropLocked moves each key whose dead head is among seqs to its next held
// event and returns those to release now; a head whose Hold is not yet
// recorded goes to late instead. o.mu is held.
func (o *order) dropLocked(seqs []uint64) (release []uint64) {
	for _, seq := range seqs {
		k, ok := o.heads[seq]
		if !ok || !o.keys[k].dead {
			continue
		}
		st := o.keys[k]
		delete(o.heads, seq)
		if len(st.held) == 0 {
			delete(o.keys, k)
			continue
		}
		st.head, st.held, st.dead = st.held[0].seq, st.held[1:], false
		o.held--
		o.heads[st.head] = k
		if o.unrecorded[st.head] {
			o.late = append(o.late, st.head)
			continue
		}
		release = append(release, st.head)
	}
	return release
}

// writeReleases returns what writes a part of the releases, for inParts:
// [pipeline.Holder.Release].
func (d *Dispatcher) writeReleases(ctx context.Context) func([]uint64) error {
	return func(seqs []uint64) error {
		_, err := d.ord.q.Release(ctx, seqs)
		return err
	}
}

// Order reports the per-key order state. Safe for concurrent use; it
// costs time in proportion to the keys that hold events back.
func (d *Dispatcher) Order() OrderStatus {
	o := d.ord
	if o == nil {
		return OrderStatus{}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	st := OrderStatus{Enabled: true, Held: o.held}
	oldest := int64(0)
	for _, k := range o.keys {
		if len(k.held) == 0 {
			continue
		}
		st.HeldKeys++
		if h := k.held[0]; oldest == 0 || h.at < oldest { // a key's lowest seq is about its oldest
			oldest = h.at
		}
	}
	if oldest != 0 {
		st.OldestHeld = time.Unix(0, oldest).UTC()
	}
	return st
}
