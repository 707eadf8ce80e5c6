package daemon

import (
	"context"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/pluginhost"
)

// adoptOrphans lists as removed sinks the queues of the log that hold
// entries for sinks the configuration does not name: removed or renamed
// while the daemon was stopped. `pipelined sinks`, the metrics and the
// dead-letter commands then see them, as they see a sink that a reload
// removed, and the log says so once. It waits for the queues to be
// rebuilt after the start; Run calls it in the background.
func (s *sinks) adoptOrphans(ctx context.Context) {
	ql, ok := s.db.(pipeline.QueueLister)
	if !ok {
		return
	}
	names, err := ql.QueueNames(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("cannot list the queues of sinks that are not configured", "err", err)
		}
		return
	}
	for _, name := range names {
		s.mu.Lock()
		_, known := s.by[name]
		s.mu.Unlock()
		if known {
			continue
		}
		sr := s.sinkRun(pluginhost.Spec{Sink: name}, nil, config.Delivery{}, nil)
		s.mu.Lock()
		if _, known = s.by[name]; !known { // a reload may have added it meanwhile
			s.by[name] = sr
			s.order = append(s.order, name)
		}
		s.mu.Unlock()
		if known {
			continue
		}
		st, err := sr.q.Stats(ctx)
		if err != nil {
			continue
		}
		s.log.Warn("a sink that is not in the configuration has events in its queue: add it back as a [[sink]] to deliver them, or give up on them with pipelined dlq add SINK --all (they go to its dead-letter queue, which pipelined dlq drop SINK --all empties)",
			"sink", name, "ready", st.Ready, "retrying", st.Retrying, "dead", st.Dead)
	}
}
