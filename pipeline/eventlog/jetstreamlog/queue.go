package jetstreamlog

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipelined/pipelined/pipeline"
)

var _ pipeline.Queue = (*queue)(nil)

// Queue returns the queue of the named sink: a durable pull consumer,
// named after the sink and shared by every daemon on the stream, that
// filters P.q.<sink>.>.
func (l *Log) Queue(sink string) pipeline.Queue {
	l.mu.Lock()
	defer l.mu.Unlock()
	if q, ok := l.queues[sink]; ok {
		return q
	}
	tok := token(sink)
	q := &queue{
		l:      l,
		sink:   sink,
		tok:    tok,
		name:   "sink_" + strings.ReplaceAll(tok, "~", "_"),
		leased: make(map[uint64]*lease),
	}
	l.queues[sink] = q
	return q
}

type queue struct {
	l    *Log
	sink string
	tok  string
	name string // the durable consumer's name

	mu     sync.Mutex
	ready  bool // the consumer exists
	leased map[uint64]*lease
}

// lease is a fetched entry not settled yet.
type lease struct {
	msg     *nats.Msg
	seq     uint64 // the event's
	id      string
	rec     qRecord
	state   bool // a st record exists
	attempt int
	dr      *drRecord // the delivery record, when one exists
}

func (q *queue) stSubject(seq uint64) string {
	return q.l.subj("st", q.tok, strconv.FormatUint(seq, 10))
}

func (q *queue) dlqSubject(id string) string { return q.l.subj("dlq", q.tok, token(id)) }
func (q *queue) qSubject(id string) string   { return q.l.subj("q", q.tok, token(id)) }

// ensure creates the durable consumer once.
func (q *queue) ensure(ctx context.Context) error {
	if q.l.isClosed() {
		return pipeline.ErrClosed
	}
	q.mu.Lock()
	ready := q.ready
	q.mu.Unlock()
	if ready {
		return nil
	}
	rctx, cancel := q.l.reqCtx(ctx)
	defer cancel()
	_, err := q.l.js.CreateOrUpdateConsumer(rctx, q.l.prefix, jetstream.ConsumerConfig{
		Durable:       q.name,
		Description:   "pipelined sink " + q.sink,
		FilterSubject: q.l.subj("q", q.tok, ">"),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       q.l.opts.AckWait,
		// The dispatcher counts attempts and settles Dead itself: a
		// server-side MaxDeliver would only stop redelivering, leaving
		// the entry in no queue and in no DLQ (against P2).
		MaxDeliver:    -1,
		MaxAckPending: -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return q.l.wrapErr("create consumer "+q.name, err)
	}
	q.mu.Lock()
	if !q.ready {
		q.ready = true
		q.l.spawn(q.renew)
	}
	q.mu.Unlock()
	return nil
}

// renew keeps this process's leases from running out while it holds them.
func (q *queue) renew() {
	t := time.NewTicker(max(q.l.opts.AckWait/3, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-q.l.closed:
			return
		case <-t.C:
		}
		q.mu.Lock()
		for _, ls := range q.leased {
			_ = q.l.nc.Publish(ls.msg.Reply, []byte("+WPI"))
		}
		q.mu.Unlock()
	}
}

// releaseAll naks every lease so that the entries are ready again at once.
func (q *queue) releaseAll() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for seq, ls := range q.leased {
		_ = q.l.nc.Publish(ls.msg.Reply, []byte("-NAK"))
		delete(q.leased, seq)
	}
}

// pullWait is how long one pull request waits on the server.
const pullWait = 2 * time.Second

// Fetch pulls up to max entries. The pull request asks for no_wait with an
// expiry: the server answers as soon as it has any entry, or at the expiry.
// Redeliveries (due retries, entries released by a stopped daemon) come
// first, as JetStream delivers them before new messages; each answer is put
// in Seq order.
func (q *queue) Fetch(ctx context.Context, max int) ([]pipeline.Delivery, error) {
	if err := q.ensure(ctx); err != nil {
		return nil, err
	}
	if max <= 0 {
		max = 1
	}
	for {
		if q.l.isClosed() {
			return nil, pipeline.ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		msgs, err := q.pull(ctx, max)
		if len(msgs) > 0 {
			return q.deliveries(ctx, msgs)
		}
		switch {
		case q.l.isClosed():
			return nil, pipeline.ErrClosed
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			// A leader election, a lost connection: try again shortly.
			q.l.opts.Logger.Debug("pull from consumer", "sink", q.sink, "err", err)
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
			case <-q.l.closed:
			}
		}
	}
}

// pull sends one pull request and collects its messages.
func (q *queue) pull(ctx context.Context, max int) ([]*nats.Msg, error) {
	wait := pullWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl))
	}
	if wait < time.Millisecond {
		wait = time.Millisecond
	}
	inbox := q.l.nc.NewInbox()
	sub, err := q.l.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, q.l.wrapErr("subscribe", err)
	}
	req, _ := json.Marshal(struct {
		Batch   int   `json:"batch"`
		Expires int64 `json:"expires"`
		NoWait  bool  `json:"no_wait"`
	}{max, int64(wait), true})
	api := "$JS.API.CONSUMER.MSG.NEXT." + q.l.prefix + "." + q.name
	if err := q.l.nc.PublishRequest(api, inbox, req); err != nil {
		_ = sub.Unsubscribe()
		return nil, q.l.wrapErr("pull", err)
	}
	end := time.Now().Add(wait + time.Second)
	wctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	stop := context.AfterFunc(q.l.closeCtx, cancel)
	defer stop()
	var msgs []*nats.Msg
	for len(msgs) < max {
		m, err := sub.NextMsgWithContext(wctx)
		if err != nil {
			if ctx.Err() != nil || q.l.isClosed() {
				// Messages the server sends after we stopped reading
				// would stay leased to nobody until AckWait: nak them.
				q.drain(sub, end)
			} else {
				_ = sub.Unsubscribe()
			}
			if len(msgs) > 0 {
				return msgs, nil
			}
			return nil, err
		}
		if len(m.Data) == 0 && m.Header.Get("Status") != "" {
			switch m.Header.Get("Status") {
			case "100": // heartbeat
				continue
			case "404", "408":
				_ = sub.Unsubscribe()
				if len(msgs) == 0 && m.Header.Get("Status") == "408" && m.Header.Get("Description") == "Requests Pending" {
					return nil, errors.New("requests pending")
				}
				return msgs, nil
			default:
				_ = sub.Unsubscribe()
				return msgs, fmt.Errorf("pull: %s %s", m.Header.Get("Status"), m.Header.Get("Description"))
			}
		}
		msgs = append(msgs, m)
	}
	_ = sub.Unsubscribe()
	return msgs, nil
}

// drain naks what a pull request still delivers until it ends.
func (q *queue) drain(sub *nats.Subscription, end time.Time) {
	ok := q.l.spawn(func() {
		defer sub.Unsubscribe()
		for time.Now().Before(end) {
			m, err := sub.NextMsg(min(time.Until(end), 50*time.Millisecond))
			if errors.Is(err, nats.ErrTimeout) {
				if q.l.isClosed() {
					return // Close naks nothing more: AckWait returns the rest
				}
				continue
			}
			if err != nil {
				return
			}
			if m.Header.Get("Status") != "" && len(m.Data) == 0 {
				if s := m.Header.Get("Status"); s != "100" {
					return
				}
				continue
			}
			_ = q.l.nc.Publish(m.Reply, []byte("-NAK"))
		}
	})
	if !ok {
		_ = sub.Unsubscribe()
	}
}

// deliveries turns messages into leased deliveries.
func (q *queue) deliveries(ctx context.Context, msgs []*nats.Msg) ([]pipeline.Delivery, error) {
	out := make([]pipeline.Delivery, 0, len(msgs))
	leases := make([]*lease, 0, len(msgs))
	for _, m := range msgs {
		ls, err := q.leaseOf(ctx, m)
		if err != nil {
			// Give everything back: the caller gets nothing.
			for _, m := range msgs {
				_ = q.l.nc.Publish(m.Reply, []byte("-NAK"))
			}
			return nil, err
		}
		leases = append(leases, ls)
	}
	q.mu.Lock()
	for _, ls := range leases {
		q.leased[ls.seq] = ls
	}
	q.mu.Unlock()
	for _, ls := range leases {
		d := pipeline.Delivery{
			Seq:     ls.seq,
			Event:   ls.rec.Event.event(),
			Route:   ls.rec.Route,
			Payload: ls.rec.Payload,
			Attempt: ls.attempt,
		}
		out = append(out, d)
	}
	// Restore LastError (kept apart from the lease to keep leases small).
	for i, ls := range leases {
		out[i].LastError = ls.lastErr()
	}
	slices.SortStableFunc(out, func(a, b pipeline.Delivery) int { return cmp.Compare(a.Seq, b.Seq) })
	return out, nil
}

func (ls *lease) lastErr() string { return ls.rec.lastErr }

func (q *queue) leaseOf(ctx context.Context, m *nats.Msg) (*lease, error) {
	meta, err := m.Metadata()
	if err != nil {
		return nil, fmt.Errorf("jetstream: queue %s: %w", q.sink, err)
	}
	var rec qRecord
	if err := json.Unmarshal(m.Data, &rec); err != nil {
		return nil, fmt.Errorf("jetstream: queue %s entry at %d: %w", q.sink, meta.Sequence.Stream, err)
	}
	seq, err := eventSeq(m.Header, meta.Sequence.Stream)
	if err != nil {
		return nil, fmt.Errorf("jetstream: queue %s entry at %d: %w", q.sink, meta.Sequence.Stream, err)
	}
	ls := &lease{msg: m, seq: seq, id: rec.Event.ID, rec: rec, attempt: 1}
	if m.Header.Get(hdrState) == "1" || meta.NumDelivered > 1 {
		st, ok, err := q.state(ctx, seq)
		if err != nil {
			return nil, err
		}
		if ok {
			ls.state = true
			ls.attempt = st.Fails + 1
			ls.rec.lastErr = st.Err
		}
		// Only an entry delivered before, retried or replayed can have a
		// delivery record: a first delivery skips the lookup.
		if ls.dr, err = q.getDR(ctx, seq); err != nil {
			return nil, err
		}
	}
	return ls, nil
}

// eventSeq reads the event's seq from a queue or dead-letter message.
func eventSeq(h nats.Header, own uint64) (uint64, error) {
	if s := h.Get(hdrSeq); s != "" {
		return strconv.ParseUint(s, 10, 64)
	}
	off, err := strconv.ParseUint(h.Get(hdrOff), 10, 64)
	if err != nil || off >= own {
		return 0, fmt.Errorf("bad %s header %q", hdrOff, h.Get(hdrOff))
	}
	return own - off, nil
}

// state reads the retry state of the entry for seq.
func (q *queue) state(ctx context.Context, seq uint64) (stRecord, bool, error) {
	rctx, cancel := q.l.reqCtx(ctx)
	defer cancel()
	m, err := q.l.stream.GetLastMsgForSubject(rctx, q.stSubject(seq))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return stRecord{}, false, nil
	}
	if err != nil {
		return stRecord{}, false, q.l.wrapErr("get retry state", err)
	}
	var st stRecord
	if err := json.Unmarshal(m.Data, &st); err != nil {
		return stRecord{}, false, fmt.Errorf("jetstream: retry state of %d: %w", seq, err)
	}
	return st, true, nil
}

// purge removes every message of one subject.
func (q *queue) purge(ctx context.Context, subject string) error {
	rctx, cancel := q.l.reqCtx(ctx)
	defer cancel()
	if err := q.l.stream.Purge(rctx, jetstream.WithPurgeSubject(subject)); err != nil {
		return q.l.wrapErr("purge "+subject, err)
	}
	return nil
}

// reply sends an ack-type reply to a delivered message and waits for the
// server's confirmation.
func (q *queue) reply(ctx context.Context, m *nats.Msg, body string) error {
	rctx, cancel := q.l.reqCtx(ctx)
	defer cancel()
	if _, err := q.l.nc.RequestWithContext(rctx, m.Reply, []byte(body)); err != nil {
		return q.l.wrapErr("ack", err)
	}
	return nil
}

// Settle settles each entry: Ack acks it; Retry stores its retry state
// and naks it with the delay; Dead writes its dead letter and terminates
// it. Settlements run concurrently and each is done in an order that
// never loses an entry (state before nak, dead letter before term); the
// call as a whole is not atomic (see the package doc).
func (q *queue) Settle(ctx context.Context, ss []pipeline.Settlement) error {
	if q.l.isClosed() {
		return pipeline.ErrClosed
	}
	// The delivery records of the acked entries go first, published
	// asynchronously: about one round trip for all of them.
	if err := q.recordAcked(ctx, ss); err != nil {
		return err
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		errs  []error
		limit = make(chan struct{}, 64)
	)
	for _, s := range ss {
		q.mu.Lock()
		ls := q.leased[s.Seq]
		q.mu.Unlock()
		if ls == nil {
			continue
		}
		wg.Go(func() {
			limit <- struct{}{}
			defer func() { <-limit }()
			if err := q.settle(ctx, ls, s); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			q.mu.Lock()
			if q.leased[s.Seq] == ls {
				delete(q.leased, s.Seq)
			}
			q.mu.Unlock()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// recordAcked stores the delivery records of the entries of ss settled as
// Ack and returns once the server confirmed every one.
func (q *queue) recordAcked(ctx context.Context, ss []pipeline.Settlement) error {
	now := time.Now().UTC()
	var futures []jetstream.PubAckFuture
	for _, s := range ss {
		q.mu.Lock()
		ls := q.leased[s.Seq]
		q.mu.Unlock()
		if ls == nil || s.Outcome != pipeline.Ack {
			continue
		}
		f, err := q.l.js.PublishMsgAsync(q.drMsg(ls.seq, settledDR(ls, s, now)))
		if err != nil {
			return q.l.wrapErr("publish delivery record", err)
		}
		futures = append(futures, f)
	}
	rctx, cancel := q.l.reqCtx(ctx)
	defer cancel()
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return q.l.wrapErr("publish delivery record", err)
		case <-rctx.Done():
			return q.l.wrapErr("publish delivery record", context.Cause(rctx))
		}
	}
	return nil
}

func (q *queue) settle(ctx context.Context, ls *lease, s pipeline.Settlement) error {
	dr := q.drMsg(ls.seq, settledDR(ls, s, time.Now().UTC()))
	switch s.Outcome {
	case pipeline.Ack:
		// Its record is stored already (Settle): a crash before the ack
		// delivers the entry again, and its record then counts one attempt
		// more.
		if ls.state {
			if err := q.purge(ctx, q.stSubject(ls.seq)); err != nil {
				return err
			}
		}
		return q.reply(ctx, ls.msg, "+ACK")
	case pipeline.Retry:
		m := nats.NewMsg(q.stSubject(ls.seq))
		m.Data = mustJSON(stRecord{Seq: ls.seq, Fails: ls.attempt, Err: s.Err, ReceivedAt: ls.rec.Event.ReceivedAt})
		if err := q.l.publishBatch(ctx, []*nats.Msg{m, dr}); err != nil {
			return err
		}
		body := "-NAK"
		if d := time.Until(s.RetryAt); d > 0 {
			body = fmt.Sprintf(`-NAK {"delay":%d}`, int64(d))
		}
		return q.reply(ctx, ls.msg, body)
	case pipeline.Dead:
		m := nats.NewMsg(q.dlqSubject(ls.id))
		m.Header.Set(hdrSeq, strconv.FormatUint(ls.seq, 10))
		attempts := ls.attempt
		if s.NotAttempted {
			attempts-- // the one Fetch counted (Dead only)
		}
		m.Data = mustJSON(dlqRecord{qRecord: ls.rec, Seq: ls.seq, Attempts: attempts, Err: s.Err, FailedAt: time.Now().UTC()})
		if err := q.l.publishBatch(ctx, []*nats.Msg{m, dr}); err != nil {
			return err
		}
		if ls.state {
			if err := q.purge(ctx, q.stSubject(ls.seq)); err != nil {
				return err
			}
		}
		return q.reply(ctx, ls.msg, "+TERM")
	}
	return fmt.Errorf("jetstream: settle seq %d: unknown outcome %d", s.Seq, s.Outcome)
}

// count returns the number of subjects that match filter.
func (q *queue) count(ctx context.Context, filter string) (int, error) {
	rctx, cancel := q.l.reqCtx(ctx)
	defer cancel()
	info, err := q.l.stream.Info(rctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0, q.l.wrapErr("stream info", err)
	}
	return len(info.State.Subjects), nil
}

// Stats counts entries: the consumer's pending and ack-pending messages are
// the queue (ready, leased and retrying); retry state records count the
// retrying ones; dead letters are counted by subject.
func (q *queue) Stats(ctx context.Context) (pipeline.QueueStats, error) {
	if err := q.ensure(ctx); err != nil {
		return pipeline.QueueStats{}, err
	}
	retrying, err := q.count(ctx, q.l.subj("st", q.tok, ">"))
	if err != nil {
		return pipeline.QueueStats{}, err
	}
	dead, err := q.count(ctx, q.l.subj("dlq", q.tok, ">"))
	if err != nil {
		return pipeline.QueueStats{}, err
	}
	// In a cluster the consumer's leader can count a message the stream
	// has just stored a moment later than the stream does: a retry marker
	// then has no pending message yet. Ask again, briefly, before
	// clamping.
	var total int
	for try := 0; ; try++ {
		rctx, cancel := q.l.reqCtx(ctx)
		c, err := q.l.js.Consumer(rctx, q.l.prefix, q.name)
		cancel()
		if err != nil {
			return pipeline.QueueStats{}, q.l.wrapErr("consumer", err)
		}
		info := c.CachedInfo()
		total = int(info.NumPending) + info.NumAckPending
		if total >= retrying || try == 10 {
			break
		}
		select {
		case <-ctx.Done():
			return pipeline.QueueStats{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	retrying = min(retrying, total)
	return pipeline.QueueStats{Ready: total - retrying, Retrying: retrying, Dead: dead}, nil
}

// deadLetters reads every dead letter of the sink, in log order.
func (q *queue) deadLetters(ctx context.Context) ([]pipeline.DeadLetter, []uint64, error) {
	filter := q.l.subj("dlq", q.tok, ">")
	var (
		out    []pipeline.DeadLetter
		stored []uint64
	)
	for seq := uint64(1); ; {
		rctx, cancel := q.l.reqCtx(ctx)
		m, err := q.l.stream.GetMsg(rctx, seq, jetstream.WithGetMsgSubject(filter))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, nil, q.l.wrapErr("list dead letters", err)
		}
		var r dlqRecord
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return nil, nil, fmt.Errorf("jetstream: dead letter at %d: %w", m.Sequence, err)
		}
		es, err := eventSeq(m.Header, m.Sequence)
		if err != nil {
			return nil, nil, fmt.Errorf("jetstream: dead letter at %d: %w", m.Sequence, err)
		}
		out = append(out, pipeline.DeadLetter{
			Seq: es, Event: r.Event.event(), Route: r.Route, Payload: r.Payload,
			Attempts: r.Attempts, Err: r.Err, FailedAt: r.FailedAt,
		})
		stored = append(stored, m.Sequence)
		seq = m.Sequence + 1
	}
	idx := make([]int, len(out))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(out[a].Seq, out[b].Seq) })
	sorted := make([]pipeline.DeadLetter, len(out))
	sseqs := make([]uint64, len(out))
	for i, j := range idx {
		sorted[i], sseqs[i] = out[j], stored[j]
	}
	return sorted, sseqs, nil
}

// DeadLetters reads the sink's whole DLQ (dead letters are stored in the
// order they died) and returns a page of it in log order.
func (q *queue) DeadLetters(ctx context.Context, after uint64, limit int) ([]pipeline.DeadLetter, error) {
	if q.l.isClosed() {
		return nil, pipeline.ErrClosed
	}
	if limit < 1 {
		return nil, nil
	}
	all, _, err := q.deadLetters(ctx)
	if err != nil {
		return nil, err
	}
	var out []pipeline.DeadLetter
	for _, d := range all {
		if d.Seq > after && len(out) < limit {
			out = append(out, d)
		}
	}
	return out, nil
}

func selected(seqs []uint64) func(uint64) bool {
	if seqs == nil {
		return func(uint64) bool { return true }
	}
	set := make(map[uint64]bool, len(seqs))
	for _, s := range seqs {
		set[s] = true
	}
	return func(s uint64) bool { return set[s] }
}

// RetryDead writes, for each chosen dead letter, a queue entry and its
// retry state (attempts 0, the dead letter's error) in one atomic batch,
// then deletes the dead letter.
func (q *queue) RetryDead(ctx context.Context, seqs []uint64) (int, error) {
	if err := q.ensure(ctx); err != nil {
		return 0, err
	}
	all, stored, err := q.deadLetters(ctx)
	if err != nil {
		return 0, err
	}
	want := selected(seqs)
	n := 0
	for i, d := range all {
		if !want(d.Seq) {
			continue
		}
		rec := qRecord{Event: toRecord(d.Event), Route: d.Route, Payload: d.Payload}
		if err := q.enqueue(ctx, d.Seq, rec, d.Err, pipeline.StateRetrying); err != nil {
			return n, err
		}
		if err := q.deleteDead(ctx, stored[i]); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// enqueue writes a queue entry for the event at seq with its retry state
// and its delivery record (now in state), atomically.
func (q *queue) enqueue(ctx context.Context, seq uint64, rec qRecord, lastErr, state string) error {
	prev, err := q.getDR(ctx, seq)
	if err != nil {
		return err
	}
	dr := drRecord{}
	if prev != nil {
		dr = *prev
	}
	dr.Route, dr.State, dr.Next = rec.Route, state, time.Time{}
	if state == pipeline.StateRetrying { // a dead letter retried: due now
		dr.Next = time.Now().UTC()
	}
	if lastErr != "" {
		dr.Err = lastErr
	}
	st := nats.NewMsg(q.stSubject(seq))
	st.Data = mustJSON(stRecord{Seq: seq, Err: lastErr, ReceivedAt: rec.Event.ReceivedAt})
	m := nats.NewMsg(q.qSubject(rec.Event.ID))
	m.Header.Set(hdrSeq, strconv.FormatUint(seq, 10))
	m.Header.Set(hdrState, "1")
	m.Data = mustJSON(rec)
	return q.l.publishBatch(ctx, []*nats.Msg{st, q.drMsg(seq, dr), m})
}

// deleteDead deletes the dead letter stored at stream sequence seq; one
// already gone is no error.
func (q *queue) deleteDead(ctx context.Context, seq uint64) error {
	rctx, cancel := q.l.reqCtx(ctx)
	defer cancel()
	if err := q.l.stream.DeleteMsg(rctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return q.l.wrapErr("delete dead letter", err)
	}
	return nil
}

// DropDead deletes the chosen dead letters.
func (q *queue) DropDead(ctx context.Context, seqs []uint64) (int, error) {
	if q.l.isClosed() {
		return 0, pipeline.ErrClosed
	}
	all, stored, err := q.deadLetters(ctx)
	if err != nil {
		return 0, err
	}
	want := selected(seqs)
	n := 0
	for i, d := range all {
		if !want(d.Seq) {
			continue
		}
		if err := q.deleteDead(ctx, stored[i]); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// exists reports whether subject holds a message.
func (q *queue) exists(ctx context.Context, subject string) (bool, error) {
	rctx, cancel := q.l.reqCtx(ctx)
	defer cancel()
	_, err := q.l.stream.GetLastMsgForSubject(rctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, q.l.wrapErr("look up entry", err)
	}
	return true, nil
}

// Requeue reads each event, skips those with a queue entry or a dead
// letter in this queue, and enqueues the others as retries due now. A
// replayed entry joins the end of the queue (JetStream has no way to put
// it before entries already stored); within one Fetch answer entries are
// in Seq order.
func (q *queue) Requeue(ctx context.Context, rs []pipeline.Requeue) (int, error) {
	if err := q.ensure(ctx); err != nil {
		return 0, err
	}
	type todo struct {
		seq uint64
		rec qRecord
	}
	var list []todo
	seen := make(map[uint64]bool)
	for _, r := range rs {
		if seen[r.Seq] {
			continue
		}
		seen[r.Seq] = true
		ev, err := q.l.getEvent(ctx, r.Seq)
		if err != nil {
			return 0, fmt.Errorf("requeue to %s: %w", q.sink, err)
		}
		list = append(list, todo{r.Seq, qRecord{Event: ev, Route: r.Route, Payload: r.Payload}})
	}
	n := 0
	for _, t := range list {
		if ok, err := q.queued(ctx, t.seq, t.rec.Event.ID); err != nil || ok {
			if err != nil {
				return n, err
			}
			continue
		}
		if ok, err := q.exists(ctx, q.dlqSubject(t.rec.Event.ID)); err != nil || ok {
			if err != nil {
				return n, err
			}
			continue
		}
		if err := q.enqueue(ctx, t.seq, t.rec, "", pipeline.StateQueued); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// queued reports whether the event (seq, id) has an entry in this queue.
// An entry that was just acked can still be there for a moment (on a
// replicated stream the work queue removes it after the ack is answered):
// while its delivery record says it was settled, ask again for up to about
// a second before taking it as queued.
func (q *queue) queued(ctx context.Context, seq uint64, id string) (bool, error) {
	for wait := 10 * time.Millisecond; ; wait *= 2 {
		ok, err := q.exists(ctx, q.qSubject(id))
		if err != nil || !ok {
			return ok, err
		}
		dr, err := q.getDR(ctx, seq)
		if err != nil {
			return false, err
		}
		if dr == nil || (dr.State != pipeline.StateDelivered && dr.State != pipeline.StateDead) || wait > 640*time.Millisecond {
			return true, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// Oldest returns the ReceivedAt of the lowest-Seq entry waiting in the
// queue: the first queue message in stream order, or an entry with retry
// state (a retry, a replayed or retried dead entry) when that is older.
func (q *queue) Oldest(ctx context.Context) (time.Time, error) {
	if q.l.isClosed() {
		return time.Time{}, pipeline.ErrClosed
	}
	var (
		best   uint64
		bestAt time.Time
	)
	rctx, cancel := q.l.reqCtx(ctx)
	m, err := q.l.stream.GetMsg(rctx, 1, jetstream.WithGetMsgSubject(q.l.subj("q", q.tok, ">")))
	cancel()
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return time.Time{}, q.l.wrapErr("oldest", err)
	default:
		var rec qRecord
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			return time.Time{}, err
		}
		if best, err = eventSeq(m.Header, m.Sequence); err != nil {
			return time.Time{}, err
		}
		bestAt = rec.Event.ReceivedAt
	}
	rctx, cancel = q.l.reqCtx(ctx)
	info, err := q.l.stream.Info(rctx, jetstream.WithSubjectFilter(q.l.subj("st", q.tok, ">")))
	cancel()
	if err != nil {
		return time.Time{}, q.l.wrapErr("oldest", err)
	}
	var low uint64
	for subj := range info.State.Subjects {
		s, err := strconv.ParseUint(subj[strings.LastIndexByte(subj, '.')+1:], 10, 64)
		if err == nil && (low == 0 || s < low) {
			low = s
		}
	}
	if low != 0 && (best == 0 || low < best) {
		st, ok, err := q.state(ctx, low)
		if err != nil {
			return time.Time{}, err
		}
		if ok {
			bestAt = st.ReceivedAt
		}
	}
	return bestAt, nil
}
