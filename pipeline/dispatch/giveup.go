package dispatch

import (
	"context"
	"sync"

	"github.com/pipelined/pipelined/pipeline"
)

// GiveUps are the entries of one sink's queue that an operator gave up on
// (pipelined dlq add): each goes to the dead-letter queue at its next turn
// instead of to the plugin. An entry fetched after it was given up is
// settled Dead at once, with no call; one in flight when it was given up is
// settled Dead if that attempt fails, and delivered if it succeeds. The
// set lives in memory: a restart forgets it. Safe for concurrent use; the
// zero value is empty and ready.
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
	mu sync.Mutex
	m  map[uint64]string // seq → the operator's reason
}

// Add gives up on the entries seqs, for reason.
func (g *GiveUps) Add(seqs []uint64, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[uint64]string{}
	}
	for _, s := range seqs {
		g.m[s] = reason
	}
}

// Remove takes the entries seqs out of the set.
func (g *GiveUps) Remove(seqs []uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range seqs {
		delete(g.m, s)
	}
	if len(g.m) == 0 {
		g.m = nil // a map keeps its size
	}
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
	r, ok := g.m[seq]
	return r, ok
}

// settled removes the entries that s settled for good, once s is recorded.
func (g *GiveUps) settled(s []pipeline.Settlement) {
	if g.Len() == 0 {
		return
	}
	var done []uint64
	for _, x := range s {
		if x.Outcome == pipeline.Ack || x.Outcome == pipeline.Dead {
			done = append(done, x.Seq)
		}
	}
	g.Remove(done)
}

// givenUpErr is the dead letter's error of an entry given up on.
func givenUpErr(reason, lastErr string) string {
	msg := "given up by an operator"
	if reason != "" {
		msg += ": " + reason
	}
	if lastErr != "" {
		msg += " (last error: " + lastErr + ")"
	}
	return msg
}

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
		d.o.Logger.Warn("event given up by an operator, moved to the dead-letter queue",
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
	d.o.GiveUps.settled(dead)
	return rest
}
