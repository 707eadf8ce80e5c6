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

// Reject implements [pipeline.RejectionLog.Reject].
func (l *Log) Reject(ctx context.Context, r pipeline.Rejection) error {
	if l.isClosed() {
		return fmt.Errorf("reject: %w", pipeline.ErrClosed)
	}
	left := time.Until(r.ReceivedAt.Add(r.Keep))
	if left <= 0 {
		return nil // kept no longer already
	}
	r.ID = eventlog.RejectionID(r.Source, r.ReceivedAt, rand.Uint64())
	m := nats.NewMsg(l.subj("rj", token(r.Source), r.ID[strings.LastIndexByte(r.ID, '/')+1:]))
	m.Header.Set(hdrTTL, ttl(left))
	m.Data = mustJSON(r)
	rctx, cancel := l.reqCtx(ctx)
	defer cancel()
	if _, err := l.js.PublishMsg(rctx, m); err != nil {
		return l.wrapErr("reject", err)
	}
	return nil
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
