package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/pipeline/rules"
)

// orderKeyTimeout bounds one evaluation of a sink's order key.
const orderKeyTimeout = 100 * time.Millisecond

// orderKeyFunc returns the sink's delivery.order_key as a function of the
// event, nil when the sink has none. The expression, compiled once when
// the configuration was loaded (config.Plan.OrderKeys), sees what a route
// sees: body (decoded again from the stored body), headers, source, id,
// received_at.
func (sr *sinkRun) orderKeyFunc() func(pipeline.Event) (string, error) {
	prog := sr.orderKey
	if prog == nil {
		return nil
	}
	return func(ev pipeline.Event) (string, error) {
		body, err := ingest.Decode(ev.Body) // as a route saw it
		if err != nil {
			return "", fmt.Errorf("decode body: %w", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), orderKeyTimeout)
		defer cancel()
		return prog.StringContext(ctx, &rules.Env{Body: body, Source: ev.Source, Headers: ev.Headers, ID: ev.ID, ReceivedAt: ev.ReceivedAt})
	}
}

// orderStatus fills the per-key order fields of ss from disp.
func orderStatus(ss *admin.SinkStatus, disp *dispatch.Dispatcher) {
	st := disp.Order()
	ss.HeldKeys, ss.Held = st.HeldKeys, st.Held
	if !st.OldestHeld.IsZero() {
		ss.OldestHeldAgeSeconds = max(time.Since(st.OldestHeld).Seconds(), 0.001)
	}
}

// orderSample fills in s the sink's per-key order state, for the held
// gauges read at scrape time.
func (sr *sinkRun) orderSample(s *metrics.QueueSample) {
	if disp := sr.disp.Load(); disp != nil {
		if st := disp.Order(); st.Enabled {
			s.Ordered, s.HeldKeys, s.Held = true, st.HeldKeys, st.Held
		}
	}
}

// droppedDead tells the dispatcher of sink that an operator dropped the
// dead letters seqs, for admin.Options.OnDropDead.
func (s *sinks) droppedDead(sink string, seqs []uint64) {
	s.mu.Lock()
	sr := s.by[sink]
	s.mu.Unlock()
	if sr == nil {
		return
	}
	if disp := sr.disp.Load(); disp != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := disp.DroppedDead(ctx, seqs); err != nil {
			sr.log.Warn("release the keys held behind dropped dead letters failed; a restart releases them",
				"sink", sink, "err", err)
		}
	}
}
