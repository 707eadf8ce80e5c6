package dispatch

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"sync"

	"github.com/pipelined/pipelined/pipeline"
)

// GiveUps are the entries of one sink's queue that an operator gave up on
// (pipelined dlq add): each goes to the dead-letter queue at its next turn
// instead of to the plugin. An entry fetched after it was given up is
// settled Dead at once, with no call; one in flight when it was given up is
// settled Dead if that attempt fails, and delivered if it succeeds. The
// set lives in memory, and in whatever Keep writes it to: the daemon keeps
// it in a file, so that a give-up holds across restarts. Safe for
// concurrent use; the zero value is empty and ready.
//
// An entry leaves the set when the dispatcher settles it for good (Ack or
// Dead), once that settlement is recorded. The set knows entries by seq,
// which an event keeps when a dead-letter retry or a replay queues it
// again: so a caller that adds entries it saw waiting must look again
// afterwards and remove those that were settled meanwhile (see
// [GiveUps.Remove]); none is then left to give up on the event's next life.
// With several dispatchers on one queue (JetStream), one that never takes
// the entry would keep it: one set per queue, not per dispatcher.
type GiveUps struct {
	// Keep, if set, is given every entry of the set, in seq order, after
	// each change (nil after the last leaves), one call at a time, so
	// that what it writes follows the set. When it fails, Add takes its
	// entries back out and returns the error; Remove keeps its removal
	// (the entries are settled) and returns the error.
	Keep func([]pipeline.GiveUp) error

	mu sync.Mutex
	m  map[uint64]pipeline.GiveUp // by seq
}

// Add gives up on the entries gs (an entry already in the set takes its
// new reason). When Keep fails, nothing is added.
func (g *GiveUps) Add(gs []pipeline.GiveUp) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	was := maps.Clone(g.m)
	if g.m == nil {
		g.m = map[uint64]pipeline.GiveUp{}
	}
	for _, e := range gs {
		g.m[e.Seq] = e
	}
	if err := g.keep(); err != nil {
		g.m = was
		return err
	}
	return nil
}

// Remove takes the entries seqs out of the set. It returns Keep's error,
// if any; the entries are out of the set in any case.
func (g *GiveUps) Remove(seqs []uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := len(g.m)
	for _, s := range seqs {
		delete(g.m, s)
	}
	if len(g.m) == n {
		return nil
	}
	if len(g.m) == 0 {
		g.m = nil // a map keeps its size
	}
	return g.keep()
}

// List returns the entries of the set, in seq order.
func (g *GiveUps) List() []pipeline.GiveUp {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.list()
}

func (g *GiveUps) list() []pipeline.GiveUp {
	if len(g.m) == 0 {
		return nil
	}
	return slices.SortedFunc(maps.Values(g.m), func(a, b pipeline.GiveUp) int { return cmp.Compare(a.Seq, b.Seq) })
}

// keep hands the set to Keep; g.mu is held.
func (g *GiveUps) keep() error {
	if g.Keep == nil {
		return nil
	}
	return g.Keep(g.list())
}

// Len returns how many entries are given up on and not yet settled.
func (g *GiveUps) Len() int {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.m)
}

// reason returns the reason seq was given up for, and whether it was.
func (g *GiveUps) reason(seq uint64) (string, bool) {
	if g == nil {
		return "", false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	e, ok := g.m[seq]
	return e.Reason, ok
}

// settled removes the entries that s settled for good, once s is recorded.
// When Keep fails it says so in the log: the entries are out of the set,
// but what Keep wrote still names them until its next call.
func (d *Dispatcher) settled(s []pipeline.Settlement) {
	g := d.o.GiveUps
	if g.Len() == 0 {
		return
	}
	var done []uint64
	for _, x := range s {
		if x.Outcome == pipeline.Ack || x.Outcome == pipeline.Dead {
			done = append(done, x.Seq)
		}
	}
	if err := g.Remove(done); err != nil {
		d.o.Logger.Error("the events given up on are settled, but the list that keeps give-ups across restarts still names them; it is written again at its next change",
			"sink", d.o.Sink, "err", err)
	}
}

// givenUpErr is the dead letter's error of an entry given up on.
func givenUpErr(reason, lastErr string) string { return pipeline.GiveUpError(reason, lastErr) }

// giveUpOn settles the entries of batch that an operator gave up on as
// Dead, without a call, and returns the others. ctx ends only when Stop
// gives up on the batch.
func (d *Dispatcher) giveUpOn(ctx context.Context, batch []pipeline.Delivery) []pipeline.Delivery {
	if d.o.GiveUps.Len() == 0 {
		return batch
	}
	var dead []pipeline.Settlement
	rest := batch[:0:0]
	for _, e := range batch {
		reason, ok := d.o.GiveUps.reason(e.Seq)
		if !ok {
			rest = append(rest, e)
			continue
		}
		s := pipeline.Settlement{Seq: e.Seq, Outcome: pipeline.Dead, Err: givenUpErr(reason, e.LastError), NotAttempted: true}
		dead = append(dead, s)
		delete(d.firstFail, e.Seq)
		d.deadLetter(d.o.Logger, "event given up by an operator, moved to the dead-letter queue",
			"sink", d.o.Sink, "event_id", e.Event.ID, "reason", reason)
	}
	if len(dead) == 0 {
		return batch
	}
	recorded := false
	if d.ord != nil {
		recorded = d.settleOrdered(ctx, dead) // the batch's holds go with them
	} else {
		recorded = d.settle(ctx, dead)
	}
	if !recorded {
		return nil // the log is closed or Stop gave up: the rest's outcomes could not be recorded either
	}
	d.settled(dead)
	return rest
}
