package memlog

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog"
)

// now is the clock of rejection expiry; tests of other packages use the
// real one.
var now = time.Now

// Reject implements [pipeline.RejectionLog.Reject].
func (l *Log) Reject(ctx context.Context, r pipeline.Rejection) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, fmt.Errorf("reject: %w", pipeline.ErrClosed)
	}
	if r.KeepMax > 0 && r.Size() > r.KeepMax {
		return 1, nil // would push out every other and still not fit
	}
	l.rejSeq++
	r.ID = eventlog.RejectionID(r.Source, r.ReceivedAt, l.rejSeq)
	r.Headers = cloneMap(r.Headers)
	r.Body = slices.Clone(r.Body)
	r.Violations = slices.Clone(r.Violations)
	t := now()
	l.rejects = slices.DeleteFunc(l.rejects, func(o pipeline.Rejection) bool { return expired(o, t) })
	i, _ := slices.BinarySearchFunc(l.rejects, r.ID, func(o pipeline.Rejection, id string) int { return strings.Compare(o.ID, id) })
	l.rejects = slices.Insert(l.rejects, i, r)
	return l.trimRejects(r.Source, r.KeepMax), nil
}

// trimRejects drops the oldest rejections of source until their sizes add
// up to at most max, and returns how many it dropped. l.rejects sorts by
// source, then time: the first of source is its oldest.
func (l *Log) trimRejects(source string, max int64) int {
	if max <= 0 {
		return 0
	}
	first, total := -1, int64(0)
	for i := range l.rejects {
		if l.rejects[i].Source == source {
			if first < 0 {
				first = i
			}
			total += l.rejects[i].Size()
		}
	}
	dropped := 0
	for i := first; total > max && i >= 0 && i < len(l.rejects) && l.rejects[i].Source == source; i++ {
		total -= l.rejects[i].Size()
		dropped++
	}
	if dropped > 0 {
		l.rejects = slices.Delete(l.rejects, first, first+dropped)
	}
	return dropped
}

// Rejections implements [pipeline.RejectionLog.Rejections].
func (l *Log) Rejections(ctx context.Context, f pipeline.RejectionFilter) ([]pipeline.Rejection, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	if _, _, ok := eventlog.ParseRejectionID(f.After); f.After != "" && !ok {
		return nil, "", fmt.Errorf("rejections: cursor %q: %w", f.After, pipeline.ErrBadCursor)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, "", fmt.Errorf("rejections: %w", pipeline.ErrClosed)
	}
	t := now()
	var out []pipeline.Rejection
	for _, r := range l.rejects {
		if r.ID <= f.After || expired(r, t) ||
			(f.Source != "" && r.Source != f.Source) || (!f.Since.IsZero() && r.ReceivedAt.Before(f.Since)) {
			continue
		}
		if len(out) == f.Limit {
			return out, out[len(out)-1].ID, nil
		}
		r.Headers = cloneMap(r.Headers)
		r.Body = slices.Clone(r.Body)
		r.Violations = slices.Clone(r.Violations)
		out = append(out, r)
	}
	return out, "", nil
}

func expired(r pipeline.Rejection, t time.Time) bool {
	return !t.Before(r.ReceivedAt.Add(r.Keep))
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
