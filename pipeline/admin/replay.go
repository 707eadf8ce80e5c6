package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/rules"
)

func (s *server) replay(w http.ResponseWriter, r *http.Request) {
	if !s.haveLog(w) {
		return
	}
	var req ReplayRequest
	if !readBody(w, r, &req) {
		return
	}
	st, ok := s.findSink(w, r, req.Sink)
	if !ok {
		return
	}
	if st.Plugin == PluginRemoved {
		// As a retry of its dead letters is: the events would wait in a
		// queue that nothing delivers, until given up on.
		writeError(w, http.StatusConflict, fmt.Sprintf("sink %q was removed from the configuration: nothing would deliver the events replayed to it; add the sink back (its [[sink]], then reload) to replay to it", req.Sink))
		return
	}
	f, when, p, err := prepareReplay(req, time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	attrs := []any{"sink", req.Sink, "since", f.Since}
	if !f.Until.IsZero() {
		attrs = append(attrs, "until", f.Until)
	}
	if req.When != "" {
		attrs = append(attrs, "when", req.When)
	}
	s.log.Info("replay started", append(attrs, "remote", r.RemoteAddr)...)

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	send := func() {
		// A replay streams for as long as it runs: the server's write
		// timeout bounds other answers; here each line must be taken
		// within replayWriteTimeout (an error: a test's recorder).
		_ = rc.SetWriteDeadline(time.Now().Add(replayWriteTimeout))
		enc.Encode(p)
		rc.Flush()
	}
	err = s.runReplay(r.Context(), req.Sink, f, when, &p, send)
	p.Done = err == nil
	if err != nil {
		p.Error = err.Error()
		s.log.Error("replay failed", "sink", req.Sink, "err", err, "scanned", p.Scanned, "enqueued", p.Enqueued)
	} else {
		s.log.Info("replay finished", "sink", req.Sink, "scanned", p.Scanned, "matched", p.Matched, "enqueued", p.Enqueued, "already_queued", p.AlreadyQueued, "in_dead_letter_queue", p.InDeadLetterQueue)
	}
	send()
}

// prepareReplay checks req and returns the filter that pages through the
// log, the compiled when, and the progress to start from.
func prepareReplay(req ReplayRequest, now time.Time) (pipeline.EventFilter, *rules.Program, ReplayProgress, error) {
	var p ReplayProgress
	if req.Since == "" {
		return pipeline.EventFilter{}, nil, p, errors.New("since is required (RFC 3339 or a duration ago such as 1h)")
	}
	f := pipeline.EventFilter{Source: req.Source, Limit: replayPage}
	if !req.AllEvents {
		f.Sink = req.Sink
	}
	var err error
	if f.Since, err = ParseTime(req.Since, now); err != nil {
		return f, nil, p, fmt.Errorf("since: %w", err)
	}
	if f.Until, err = ParseTime(req.Until, now); err != nil {
		return f, nil, p, fmt.Errorf("until: %w", err)
	}
	if !f.Until.IsZero() && !f.Until.After(f.Since) {
		return f, nil, p, errors.New("until must be after since")
	}
	when, err := CompileWhen(req.When)
	if err != nil {
		return f, nil, p, err
	}
	p = ReplayProgress{Since: f.Since, Until: f.Until}
	if p.Until.IsZero() {
		p.Until = now
	}
	return f, when, p, nil
}

// Replay runs the replay of req (as POST /v1/replay does) over o.Log,
// o.Retarget and o.ProgressInterval, calling progress with each progress
// report while it runs; it returns the final progress. A request that is
// not valid returns an error wrapping [ErrBadReplay] before anything is
// queued. The caller checks that req.Sink is configured. The UI uses it.
func Replay(ctx context.Context, o Options, req ReplayRequest, progress func(ReplayProgress)) (ReplayProgress, error) {
	if o.Log == nil {
		return ReplayProgress{}, fmt.Errorf("replay: %w", pipeline.ErrClosed)
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = 500 * time.Millisecond
	}
	f, when, p, err := prepareReplay(req, time.Now())
	if err != nil {
		return p, fmt.Errorf("%w: %w", ErrBadReplay, err)
	}
	s := &server{o: o}
	err = s.runReplay(ctx, req.Sink, f, when, &p, func() { progress(p) })
	p.Done = err == nil
	if err != nil {
		p.Error = err.Error()
	}
	return p, err
}

// CheckReplay returns the error, wrapping [ErrBadReplay], that [Replay]
// would return for req before it started; nil if req is valid.
func CheckReplay(req ReplayRequest) error {
	if _, _, _, err := prepareReplay(req, time.Now()); err != nil {
		return fmt.Errorf("%w: %w", ErrBadReplay, err)
	}
	return nil
}

// ErrBadReplay is wrapped by the error of [Replay] for a request that is
// not valid (a missing since, a bad time, a when that does not compile):
// fix the request.
var ErrBadReplay = errors.New("bad replay request")

// replayWriteTimeout bounds the write of one replay progress line, so a
// client that stops reading does not hold the replay.
const replayWriteTimeout = time.Minute

// runReplay pages through the log and requeues what matches, calling
// progress every ProgressInterval.
func (s *server) runReplay(ctx context.Context, sink string, f pipeline.EventFilter, when *rules.Program, p *ReplayProgress, progress func()) error {
	q := s.o.Log.Queue(sink)
	last := time.Now()
	for {
		page, next, err := s.o.Log.Events(ctx, f)
		if err != nil {
			return err
		}
		rs := make([]pipeline.Requeue, 0, len(page))
		for _, e := range page {
			p.Scanned++
			p.At = e.ReceivedAt
			ok, err := MatchWhen(ctx, when, &e.Event)
			if err != nil {
				return fmt.Errorf("when on event %s: %w", e.ID, err)
			}
			if !ok {
				continue
			}
			// The id spares a backend that names entries by id (JetStream)
			// reading the events it leaves alone (P9).
			rq := pipeline.Requeue{Seq: e.Seq, ID: e.ID, Route: "replay"}
			if s.o.Retarget != nil {
				if rq.Route, rq.Payload, err = s.o.Retarget(e.Event, sink); err != nil {
					return fmt.Errorf("event %s: %w", e.ID, err)
				}
			}
			rs = append(rs, rq)
		}
		p.Matched += len(rs)
		if len(rs) > 0 {
			n, err := requeue(ctx, q, rs)
			if err != nil {
				return err
			}
			p.Enqueued += n
			p.AlreadyQueued += len(rs) - n // every one left alone, dead or not
			for _, r := range rs {
				if r.Dead { // Requeue's answer: no dead letter is read (P9)
					p.InDeadLetterQueue++
				}
			}
		}
		if next == "" {
			return nil
		}
		f.After = next
		if time.Since(last) >= s.o.ProgressInterval {
			last = time.Now()
			progress()
		}
	}
}

// requeue requeues rs in q, in halves when the log answers that they do
// not fit in one atomic write ([pipeline.ErrTooBig]: Badger takes 2.4 MiB
// in a transaction by default, so three transform outputs of 900 KiB of
// a replay's page of 64 did not fit, and the replay failed at that page
// every time). A Requeue that fails writes nothing, and one of an entry
// already queued skips it, so the halves requeue each entry once.
func requeue(ctx context.Context, q pipeline.Queue, rs []pipeline.Requeue) (int, error) {
	n, err := q.Requeue(ctx, rs)
	if !errors.Is(err, pipeline.ErrTooBig) || len(rs) < 2 {
		return n, err
	}
	h := len(rs) / 2
	a, err := requeue(ctx, q, rs[:h])
	if err != nil {
		return a, err
	}
	b, err := requeue(ctx, q, rs[h:])
	return a + b, err
}
