package jetstreamlog

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog"
)

var _ pipeline.RejectionLog = (*Log)(nil)

// Rejections are kept on P.rj.<source>.<n>, one message each, with
// Nats-TTL = what is left of their Keep. Listing reads them all: the
// audit is for a look at recent mistakes, not for millions of requests.

// A rejection's id is [eventlog.RejectionID] with a random n: daemons
// sharing the stream have no common counter.

// keep_rejected_max is kept with a ledger of each source's rejections
// (stream sequence, size, expiry), oldest first, read from the stream the
// first time the source rejects a request and kept up to date from then
// on by this daemon. Daemons sharing the stream each keep their own: one
// does not see what another adds until it restarts, so together they may
// hold up to their number times keep_rejected_max.
type rejectLedger struct {
	mu      sync.Mutex
	sources map[string][]ledgerEntry
}

type ledgerEntry struct {
	seq     uint64
	size    int64
	expires time.Time
}

// sourceLedger reads source's rejections from the stream. lg.mu is held.
func (l *Log) sourceLedger(ctx context.Context, lg *rejectLedger, source string) ([]ledgerEntry, error) {
	if es, ok := lg.sources[source]; ok {
		return es, nil
	}
	if lg.sources == nil {
		lg.sources = map[string][]ledgerEntry{}
	}
	var es []ledgerEntry
	filter := l.subj("rj", token(source), ">")
	for seq := uint64(1); ; {
		rctx, cancel := l.reqCtx(ctx)
		m, err := l.stream.GetMsg(rctx, seq, jetstream.WithGetMsgSubject(filter))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, l.wrapErr("rejections", err)
		}
		seq = m.Sequence + 1
		var r pipeline.Rejection
		if err := json.Unmarshal(m.Data, &r); err != nil {
			continue
		}
		es = append(es, ledgerEntry{seq: m.Sequence, size: r.Size(), expires: r.ReceivedAt.Add(r.Keep)})
	}
	slices.SortFunc(es, func(a, b ledgerEntry) int { return cmp.Compare(a.seq, b.seq) })
	lg.sources[source] = es
	return es, nil
}

// Reject implements [pipeline.RejectionLog.Reject].
func (l *Log) Reject(ctx context.Context, r pipeline.Rejection) (int, error) {
	if l.isClosed() {
		return 0, fmt.Errorf("reject: %w", pipeline.ErrClosed)
	}
	left := time.Until(r.ReceivedAt.Add(r.Keep))
	if left <= 0 {
		return 0, nil // kept no longer already
	}
	if r.KeepMax > 0 && r.Size() > r.KeepMax {
		return 1, nil // would push out every other and still not fit
	}
	r.ID = eventlog.RejectionID(r.Source, r.ReceivedAt, rand.Uint64())
	m := nats.NewMsg(l.subj("rj", token(r.Source), r.ID[strings.LastIndexByte(r.ID, '/')+1:]))
	m.Header.Set(hdrTTL, ttl(left))
	m.Data = mustJSON(r)
	if r.KeepMax <= 0 {
		rctx, cancel := l.reqCtx(ctx)
		defer cancel()
		if _, err := l.js.PublishMsg(rctx, m); err != nil {
			return 0, l.wrapErr("reject", err)
		}
		return 0, nil
	}
	lg := &l.rejects
	lg.mu.Lock()
	defer lg.mu.Unlock()
	es, err := l.sourceLedger(ctx, lg, r.Source)
	if err != nil {
		return 0, err
	}
	rctx, cancel := l.reqCtx(ctx)
	ack, err := l.js.PublishMsg(rctx, m)
	cancel()
	if err != nil {
		return 0, l.wrapErr("reject", err)
	}
	now := time.Now()
	keep := es[:0:0]
	total := r.Size()
	for _, e := range es {
		if now.Before(e.expires) {
			keep = append(keep, e)
			total += e.size
		}
	}
	drop := 0
	for ; drop < len(keep) && total > r.KeepMax; drop++ {
		rctx, cancel := l.reqCtx(ctx)
		err := l.stream.DeleteMsg(rctx, keep[drop].seq)
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			lg.sources[r.Source] = append(keep[drop:], ledgerEntry{seq: ack.Sequence, size: r.Size(), expires: r.ReceivedAt.Add(r.Keep)})
			return drop, l.wrapErr("drop an old rejection", err)
		}
		total -= keep[drop].size
	}
	lg.sources[r.Source] = append(keep[drop:], ledgerEntry{seq: ack.Sequence, size: r.Size(), expires: r.ReceivedAt.Add(r.Keep)})
	return drop, nil
}

// Rejections implements [pipeline.RejectionLog.Rejections].
func (l *Log) Rejections(ctx context.Context, f pipeline.RejectionFilter) ([]pipeline.Rejection, string, error) {
	if l.isClosed() {
		return nil, "", fmt.Errorf("rejections: %w", pipeline.ErrClosed)
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	if _, _, ok := eventlog.ParseRejectionID(f.After); f.After != "" && !ok {
		return nil, "", fmt.Errorf("rejections: cursor %q: %w", f.After, pipeline.ErrBadCursor)
	}
	filter := l.subj("rj", ">")
	if f.Source != "" {
		filter = l.subj("rj", token(f.Source), ">")
	}
	now := time.Now()
	var all []pipeline.Rejection
	for seq := uint64(1); ; {
		rctx, cancel := l.reqCtx(ctx)
		m, err := l.stream.GetMsg(rctx, seq, jetstream.WithGetMsgSubject(filter))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, "", l.wrapErr("rejections", err)
		}
		seq = m.Sequence + 1
		var r pipeline.Rejection
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return nil, "", fmt.Errorf("jetstream: rejection at %d: %w", m.Sequence, err)
		}
		if r.ID <= f.After || !now.Before(r.ReceivedAt.Add(r.Keep)) ||
			(f.Source != "" && r.Source != f.Source) || (!f.Since.IsZero() && r.ReceivedAt.Before(f.Since)) {
			continue
		}
		all = append(all, r)
	}
	slices.SortFunc(all, func(a, b pipeline.Rejection) int { return cmp.Compare(a.ID, b.ID) })
	if len(all) > f.Limit {
		return all[:f.Limit], all[f.Limit-1].ID, nil
	}
	return all, "", nil
}
