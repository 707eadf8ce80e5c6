package ingest

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/metrics"
)

// MaxRejectedBody is how much of a rejected request's body is kept.
const MaxRejectedBody = 8 << 10

// MaxRejectedHeaders is how much of a rejected request's headers is kept,
// names and values together: the headers that do not fit whole are left
// out, the largest first.
const MaxRejectedHeaders = 8 << 10

// AuditOptions configures [NewAudit]. The zero value (or nil) means the
// defaults.
type AuditOptions struct {
	// Queue bounds the rejections waiting to be written; more are dropped
	// and counted. Zero means 1024.
	Queue int
	// Logger receives write errors.
	Logger *slog.Logger
	// Metrics counts dropped rejections.
	Metrics *metrics.Metrics
}

// Audit keeps rejected requests in a [pipeline.RejectionLog], off the
// request path: [Audit.Keep] never blocks, and a flood of bad requests
// fills a bounded queue and is dropped (and counted) instead of slowing
// good ones. It never touches the writer's group commit or sink queues.
// A nil *Audit keeps nothing.
type Audit struct {
	log  pipeline.RejectionLog
	opts AuditOptions

	mu     sync.RWMutex // guards closed against sends on a closed ch
	closed bool
	ch     chan pipeline.Rejection
	done   chan struct{}
}

// NewAudit starts an audit that writes to l; stop it with [Audit.Close].
func NewAudit(l pipeline.RejectionLog, o *AuditOptions) *Audit {
	var opts AuditOptions
	if o != nil {
		opts = *o
	}
	if opts.Queue <= 0 {
		opts.Queue = 1024
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Audit{log: l, opts: opts, ch: make(chan pipeline.Rejection, opts.Queue), done: make(chan struct{})}
	go a.run()
	return a
}

// Keep queues r to be written; it drops r (counted) when the queue is full
// or the audit is closed.
func (a *Audit) Keep(r pipeline.Rejection) {
	if a == nil {
		return
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	if !a.closed {
		select {
		case a.ch <- r:
			return
		default:
		}
	}
	a.opts.Metrics.RejectionDropped(r.Source)
}

func (a *Audit) run() {
	defer close(a.done)
	for r := range a.ch {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		n, err := a.log.Reject(ctx, r)
		cancel()
		a.opts.Metrics.RejectionsEvicted(r.Source, n)
		if err != nil {
			a.opts.Metrics.RejectionDropped(r.Source)
			a.opts.Logger.Warn("rejected request not kept", "source", r.Source, "err", err)
		}
	}
}

// Close stops taking rejections and waits until the queued ones are
// written, or ctx is done.
func (a *Audit) Close(ctx context.Context) error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		close(a.ch)
	}
	a.mu.Unlock()
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
