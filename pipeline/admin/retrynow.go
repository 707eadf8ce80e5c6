package admin

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"

	"github.com/pipelined/pipelined/pipeline"
)

// hastenPage is how many waiting retries one call of the log makes due
// now, in one transaction: each entry is written again with its target,
// so about what a page of dlq add --all moves.
const hastenPage = 1000

// Errors of [RetryNowSink].
var (
	// ErrCannotHasten: the log cannot make a sink's retries due now.
	ErrCannotHasten = errors.New("this daemon's event log cannot make retries due now")
	// ErrRetryNowRemoved: the sink was removed from the configuration.
	ErrRetryNowRemoved = errors.New("nothing delivers its queue, so nothing would retry now; add the sink back (its [[sink]], then reload), or give up on its events (pipelined dlq add SINK --all)")
)

// HastenAll makes every entry of q that waits for a retry due now, a page
// of [hastenPage] at a time (P9: a million waiting retries are a thousand
// transactions, not one), calling beforePage (if not nil) before each,
// and returns how many it moved, also with an error: the pages before it
// are done. It looks at ctx before each page, so a client that hangs up
// stops it between pages, whatever the log does with ctx inside one.
//
// It is one walk of the queue ([pipeline.RetryWalk]): the entries that
// waited for a later retry as it began, each once. One that it made due
// and that failed again meanwhile waits for its retry again, and is not
// made due again (nor counted again): a walk that made it due each time a
// page came to it would never end while the sink keeps failing, would
// spend its attempts at the pace of the pages, and would leave entries
// that waited from the start for the next call. As a guard, it moves at
// most waiting of them and a page more.
func HastenAll(ctx context.Context, q pipeline.Queue, waiting int, beforePage func()) (int, error) {
	h, ok := q.(pipeline.RetryHastener)
	if !ok {
		return 0, ErrCannotHasten
	}
	var w pipeline.RetryWalk
	total := 0
	for !w.Done && total < waiting+hastenPage {
		if err := ctx.Err(); err != nil { // the client hung up: the pages done stay done
			return total, err
		}
		if beforePage != nil {
			beforePage()
		}
		n, err := h.HastenRetries(ctx, &w, min(hastenPage, waiting+hastenPage-total))
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// RetryNowSink is POST /v1/sinks/{sink}/retry-now for the sink st (as
// [Options.Sinks] reported it), which the web UI's "Retry now" calls too:
// every entry of its queue that waits for a retry due now ([HastenAll]),
// then, when its breaker is open, a probe at once ([Options.ProbeNow]). A
// paused sink stays paused: its retries wait for the resume, and the
// answer says Paused. A removed sink is refused with [ErrRetryNowRemoved],
// as a replay to it is; a log that cannot hasten with [ErrCannotHasten].
// With an error from the log, the result counts what was made due before
// it.
func RetryNowSink(ctx context.Context, o Options, st SinkStatus, beforePage func()) (RetryNow, error) {
	res := RetryNow{Sink: st.Name, Paused: st.Paused}
	if st.Plugin == PluginRemoved {
		return res, fmt.Errorf("sink %q was removed from the configuration: %w", st.Name, ErrRetryNowRemoved)
	}
	waiting := st.Ready + st.Retrying // what waited as the call began
	if o.Sinks == nil || st.Rebuilding || st.QueueError != "" {
		waiting = math.MaxInt - hastenPage // not counted: bounded by the queue alone
	}
	n, err := HastenAll(ctx, o.Log.Queue(st.Name), waiting, beforePage)
	res.Hastened = n
	if err != nil {
		return res, err
	}
	if o.ProbeNow != nil {
		res.Probing = o.ProbeNow(st.Name)
	}
	return res, nil
}

// RetryNowStatus is the HTTP status of an error of [RetryNowSink].
func RetryNowStatus(err error) int {
	switch {
	case errors.Is(err, ErrRetryNowRemoved):
		return http.StatusConflict
	case errors.Is(err, ErrCannotHasten):
		return http.StatusNotImplemented
	}
	return logStatus(err)
}

// retryNow serves POST /v1/sinks/{sink}/retry-now (see [RetryNowSink]).
func (s *server) retryNow(w http.ResponseWriter, r *http.Request) {
	sink := r.PathValue("sink")
	if !s.haveLog(w) {
		return
	}
	st, ok := s.findSink(w, r, sink)
	if !ok {
		return
	}
	st.Name = sink // (the zero SinkStatus when Options.Sinks is nil)
	res, err := RetryNowSink(r.Context(), s.o, st, PageDeadline(w))
	if err != nil {
		if res.Hastened > 0 {
			s.log.Warn("sink retries made due now in part: call again for the rest",
				"sink", sink, "hastened", res.Hastened, "err", err, "remote", r.RemoteAddr)
		}
		writeError(w, RetryNowStatus(err), err.Error())
		return
	}
	s.log.Info("sink retry-now: waiting retries due now",
		"sink", sink, "hastened", res.Hastened, "probing", res.Probing, "paused", res.Paused, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, res)
}
