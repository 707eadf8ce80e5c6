package admin

import (
	"context"
	"encoding/json"
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
	if !s.checkSink(w, r, req.Sink) {
		return
	}
	now := time.Now()
	if req.Since == "" {
		writeError(w, http.StatusBadRequest, "since is required (RFC 3339 or a duration ago such as 1h)")
		return
	}
	f := pipeline.EventFilter{Source: req.Source, Limit: replayPage}
	if !req.AllEvents {
		f.Sink = req.Sink
	}
	var err error
	if f.Since, err = ParseTime(req.Since, now); err != nil {
		writeError(w, http.StatusBadRequest, "since: "+err.Error())
		return
	}
	if f.Until, err = ParseTime(req.Until, now); err != nil {
		writeError(w, http.StatusBadRequest, "until: "+err.Error())
		return
	}
	if !f.Until.IsZero() && !f.Until.After(f.Since) {
		writeError(w, http.StatusBadRequest, "until must be after since")
		return
	}
	when, err := compileWhen(req.When)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p := ReplayProgress{Since: f.Since, Until: f.Until}
	if p.Until.IsZero() {
		p.Until = now
	}
	s.log.Info("replay started", "sink", req.Sink, "since", f.Since, "until", f.Until, "when", req.When, "remote", r.RemoteAddr)

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
		s.log.Info("replay finished", "sink", req.Sink, "scanned", p.Scanned, "matched", p.Matched, "enqueued", p.Enqueued, "already_queued", p.AlreadyQueued)
	}
	send()
}

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
			ok, err := matchWhen(ctx, when, &e.Event)
			if err != nil {
				return fmt.Errorf("when on event %s: %w", e.ID, err)
			}
			if !ok {
				continue
			}
			rq := pipeline.Requeue{Seq: e.Seq, Route: "replay"}
			if s.o.Retarget != nil {
				if rq.Route, rq.Payload, err = s.o.Retarget(e.Event, sink); err != nil {
					return fmt.Errorf("event %s: %w", e.ID, err)
				}
			}
			rs = append(rs, rq)
		}
		p.Matched += len(rs)
		if len(rs) > 0 {
			n, err := q.Requeue(ctx, rs)
			if err != nil {
				return err
			}
			p.Enqueued += n
			p.AlreadyQueued += len(rs) - n
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
