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
)

var _ pipeline.RejectionLog = (*Log)(nil)

// Rejections are kept on P.rj.<source>.<n>, one message each, with
// Nats-TTL = what is left of their Keep. Listing reads them all: the
// audit is for a look at recent mistakes, not for millions of requests.

// rejectionID is "<source>/<unix nanoseconds, 16 hex><random, 16 hex>":
// ids sort by source, then time, as in the other backends.
func rejectionID(source string, at time.Time) string {
	return fmt.Sprintf("%s/%016x%016x", source, uint64(at.UnixNano()), rand.Uint64())
}

func validRejectionID(id string) bool {
	i := strings.LastIndexByte(id, '/')
	if i < 0 || len(id)-i-1 != 32 {
		return false
	}
	for _, c := range id[i+1:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Reject implements [pipeline.RejectionLog.Reject].
func (l *Log) Reject(ctx context.Context, r pipeline.Rejection) error {
	if l.isClosed() {
		return fmt.Errorf("reject: %w", pipeline.ErrClosed)
	}
	left := time.Until(r.ReceivedAt.Add(r.Keep))
	if left <= 0 {
		return nil // kept no longer already
	}
	r.ID = rejectionID(r.Source, r.ReceivedAt)
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
	if f.After != "" && !validRejectionID(f.After) {
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
