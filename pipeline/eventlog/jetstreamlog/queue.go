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
	// hastenMu is held by a HastenRetries call throughout: two walks of
	// this process (two retry-now calls) take turns by page, so an
	// entry's record that one reads is not written again by the other
	// before it is done with it. Lock order: hastenMu before mu.
	hastenMu sync.Mutex
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
		if s.NotAttempted {
			// No attempt: the retry state keeps its count of failures and
			// last error (none, when it had none), so the next delivery
			// has the same attempt; it is written all the same, due at
			// RetryAt, since HastenRetries finds a waiting retry by its
			// retry state (a 429's Retry-After of an hour is what
			// pipelined sinks retry-now is for).
			m := nats.NewMsg(q.stSubject(ls.seq))
			m.Data = mustJSON(stRecord{Seq: ls.seq, Fails: ls.attempt - 1, Err: ls.lastErr(), ReceivedAt: ls.rec.Event.ReceivedAt, ID: ls.id, NotBefore: s.RetryAt.UTC()})
			if err := q.l.publishBatch(ctx, []*nats.Msg{m, dr}); err != nil {
				return err
			}
			return q.reply(ctx, ls.msg, nakDelay(s.RetryAt))
		}
		m := nats.NewMsg(q.stSubject(ls.seq))
		m.Data = mustJSON(stRecord{Seq: ls.seq, Fails: ls.attempt, Err: s.Err, ReceivedAt: ls.rec.Event.ReceivedAt, ID: ls.id, NotBefore: s.RetryAt.UTC()})
		if err := q.l.publishBatch(ctx, []*nats.Msg{m, dr}); err != nil {
			return err
		}
		return q.reply(ctx, ls.msg, nakDelay(s.RetryAt))
	case pipeline.Dead:
		m := nats.NewMsg(q.deadSubject(ls.seq))
		m.Header.Set(hdrSeq, strconv.FormatUint(ls.seq, 10))
		attempts := ls.attempt
		if s.NotAttempted {
			attempts-- // the one Fetch counted
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

// nakDelay is the reply that makes a leased entry ready again at at.
func nakDelay(at time.Time) string {
	if d := time.Until(at); d > 0 {
		return fmt.Sprintf(`-NAK {"delay":%d}`, int64(d))
	}
	return "-NAK"
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

// A sink's dead letters are stored on two kinds of subjects:
//
//	P.dlq.<sink>.<id>       written by Append (a failed transform), before the event has a seq
//	P.dlq.<sink>.seq.<seq>  written by Settle, which knows the event's seq
//
// The stream keeps them in the order they died, not in log order, and a
// get reads a whole message, body included: there is no header-only read
// of a work-queue stream. So a page in log order is found without reading
// what it does not return:
//
//   - the seqs of the dead letters Settle wrote are in their subjects: one
//     stream info call lists them, without a message;
//   - the dead letters Append wrote are stored in log order (the batch of
//     an event is stored contiguously and before the next event's), and a
//     dead letter is always stored after its event, so a walk of them in
//     stream order from stream seq after+1 meets them in log order and
//     stops at the first one the page has no room for.
//
// The two sorted lists are merged, and only the entries on the page are
// read from the first list.

// requeueHold bounds the bytes of event bodies one Requeue call holds
// between looking at its events and queueing them, when it was given no
// ids and so read the events to learn them; an event past it is read
// again when its turn comes. A page of 64 CallKaro events (1.3 KB each)
// is held whole; a page of 1 MiB events holds 4 of them, not 64 (P9).
var requeueHold = 4 << 20

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

// next returns the first message on filter stored at stream seq from or
// later, or nil when there is none.
func (q *queue) next(ctx context.Context, from uint64, filter string) (*jetstream.RawStreamMsg, error) {
	rctx, cancel := q.l.reqCtx(ctx)
	defer cancel()
	m, err := q.l.stream.GetMsg(rctx, from, jetstream.WithGetMsgSubject(filter))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, q.l.wrapErr("read dead letter", err)
	}
	return m, nil
}

// last returns the message on subject, or nil when there is none.
func (q *queue) last(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	rctx, cancel := q.l.reqCtx(ctx)
	defer cancel()
	m, err := q.l.stream.GetLastMsgForSubject(rctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, q.l.wrapErr("read dead letter", err)
	}
	return m, nil
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
	st.Data = mustJSON(stRecord{Seq: seq, Err: lastErr, ReceivedAt: rec.Event.ReceivedAt, ID: rec.Event.ID, NotBefore: time.Now().UTC()})
	m := nats.NewMsg(q.qSubject(rec.Event.ID))
	m.Header.Set(hdrSeq, strconv.FormatUint(seq, 10))
	m.Header.Set(hdrState, "1")
	m.Data = mustJSON(rec)
	return q.l.publishBatch(ctx, []*nats.Msg{st, q.drMsg(seq, dr), m})
}
