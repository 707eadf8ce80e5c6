package jetstreamlog

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pipelined/pipelined/pipeline"
)

var _ pipeline.RetryHastener = (*queue)(nil)

// hastenWalk is the State of a jetstreamlog [pipeline.RetryWalk]: the
// retry state records (P.st.<sink>.<seq>) are walked in stream order from
// stream seq from, up to bound, the stream's last seq when the walk
// began. A hastened entry's record is written again, past bound, so the
// walk never meets it twice, nor the record of an entry that failed
// again since the walk began (each failure writes it again): only the
// entries that waited as it began.
type hastenWalk struct {
	from, bound uint64
}

// hastenMargin: an entry due within it is not hastened; its nak delay may
// be ending on the server, which then redelivers it (to any daemon of the
// stream) while it is written again.
const hastenMargin = time.Second

// hastenReads bounds the retry state records one HastenRetries call
// reads, hastened or passed by (each a request to the server).
var hastenReads = 1000 // a var: a test may lower it

// HastenRetries implements [pipeline.RetryHastener]. The server holds a
// retry as a nak with a delay, which no API ends early; so each entry
// waiting for a retry due later is written again: its queue message (the
// same record, on the same subject, which the stream's one message per
// subject makes replace the one the server holds, and with it the
// consumer's pending delivery) with its retry state (its failures and
// error kept, due now) and its delivery record (next attempt now), in one
// atomic batch, as a retried dead letter is. A page reads one message per
// retry state record it walks (one due is passed by then), two more per
// entry it hastens, and writes one batch per entry it hastens: its memory
// holds one entry at a time. A call ends once it has hastened max
// entries or read [hastenReads] records, so that with many retries due
// and none due later (a second retry-now while the breaker waits to
// probe) a page is bounded in time all the same, and the walk goes on at
// the next call. Entries leased by this process are skipped, as are
// entries whose retry is due within a second (the server may be handing
// them out). Daemons that share the stream share the queue: a retry
// another daemon hastens is found here no more.
func (q *queue) HastenRetries(ctx context.Context, w *pipeline.RetryWalk, max int) (n int, err error) {
	if w.Done || max < 1 {
		return 0, nil
	}
	if err := q.ensure(ctx); err != nil {
		return 0, err
	}
	q.hastenMu.Lock()
	defer q.hastenMu.Unlock()
	hw, _ := w.State.(*hastenWalk)
	if hw == nil {
		began := time.Now()
		rctx, cancel := q.l.reqCtx(ctx)
		info, err := q.l.stream.Info(rctx)
		cancel()
		if err != nil {
			return 0, q.l.wrapErr("stream info", err)
		}
		hw = &hastenWalk{from: 1, bound: info.State.LastSeq}
		w.Began, w.State = began, hw
	}
	filter := q.l.subj("st", q.tok, ">")
	for reads := 0; n < max && reads < hastenReads && hw.from <= hw.bound; reads++ {
		m, err := q.next(ctx, hw.from, filter)
		if err != nil {
			return n, err
		}
		if m == nil || m.Sequence > hw.bound {
			hw.from = hw.bound + 1 // none left before bound
			break
		}
		hw.from = m.Sequence + 1
		var st stRecord
		if err := json.Unmarshal(m.Data, &st); err != nil {
			return n, fmt.Errorf("jetstream: retry state %s: %w", m.Subject, err)
		}
		if st.Seq == 0 { // records name their seq; the subject does too
			if st.Seq, err = strconv.ParseUint(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:], 10, 64); err != nil {
				continue
			}
		}
		ok, err := q.hastenOne(ctx, st)
		if err != nil {
			return n, fmt.Errorf("jetstream: hasten retries of %s: %w", q.sink, err)
		}
		if ok {
			n++
		}
	}
	w.Done = hw.from > hw.bound
	return n, nil
}

// hastenOne writes the entry of st again, due now, if it waits for a
// retry due later, and reports whether it did.
func (q *queue) hastenOne(ctx context.Context, st stRecord) (bool, error) {
	q.mu.Lock()
	_, leased := q.leased[st.Seq]
	q.mu.Unlock()
	if leased {
		return false, nil
	}
	now := time.Now()
	if !st.NotBefore.IsZero() && !st.NotBefore.After(now.Add(hastenMargin)) {
		return false, nil // due: skipped without a read
	}
	dr, err := q.getDR(ctx, st.Seq)
	if err != nil {
		return false, err
	}
	notBefore := st.NotBefore
	if notBefore.IsZero() && dr != nil && dr.State == pipeline.StateRetrying {
		notBefore = dr.Next // a record written before not_before was
	}
	if !notBefore.After(now.Add(hastenMargin)) {
		return false, nil
	}
	id := st.ID
	if id == "" {
		ev, err := q.l.getEvent(ctx, st.Seq)
		if err != nil {
			return false, nil // the event is gone: its entry cannot be found by id
		}
		id = ev.ID
	}
	old, err := q.last(ctx, q.qSubject(id))
	if err != nil || old == nil {
		return false, err // no queue message: not waiting (acked meanwhile)
	}
	m := nats.NewMsg(q.qSubject(id))
	for k, v := range old.Header {
		if !strings.HasPrefix(k, "Nats-") && k != hdrOff {
			m.Header[k] = v
		}
	}
	m.Header.Set(hdrSeq, strconv.FormatUint(st.Seq, 10))
	m.Header.Set(hdrState, "1")
	m.Data = old.Data
	st.ID, st.NotBefore = id, now.UTC() // due: a later walk skips it without a read
	sm := nats.NewMsg(q.stSubject(st.Seq))
	sm.Data = mustJSON(st)
	msgs := []*nats.Msg{sm}
	if dr != nil && (dr.State == pipeline.StateRetrying || !dr.Next.IsZero()) { // also of one not attempted
		r := *dr
		r.Next = now.UTC()
		msgs = append(msgs, q.drMsg(st.Seq, r))
	}
	if err := q.l.publishBatch(ctx, append(msgs, m)); err != nil {
		return false, err
	}
	return true, nil
}
