package logtest

import (
	"slices"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// testQueueNames: QueueNames names the sinks whose queues hold entries in
// any state (ready, retrying, held, dead), and not those whose entries are
// all delivered or dropped.
func testQueueNames(t *testing.T, l pipeline.Log) {
	ql, ok := unwrap(l).(pipeline.QueueLister)
	if !ok {
		t.Skip("the log is not a pipeline.QueueLister")
	}
	names := func(when string, want ...string) {
		t.Helper()
		got, err := ql.QueueNames(ctxFor(t, waitLong))
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("QueueNames %s = %q, %v; want %q", when, got, err, want)
		}
	}
	names("of an empty log")
	appendIDs(t, l, []string{"qn-ready"}, "ready")
	appendIDs(t, l, []string{"qn-retry"}, "retrying")
	appendIDs(t, l, []string{"qn-held"}, "held")
	appendIDs(t, l, []string{"qn-dead"}, "dead")
	appendIDs(t, l, []string{"qn-dropped"}, "dropped")
	appendIDs(t, l, []string{"qn-acked"}, "acked")
	settle := func(sink string, s func(seq uint64) pipeline.Settlement) {
		t.Helper()
		q := l.Queue(sink)
		mustSettle(t, q, s(mustFetch(t, q, 1)[0].Seq))
	}
	settle("retrying", func(seq uint64) pipeline.Settlement {
		return pipeline.Settlement{Seq: seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(hour), Err: "503"}
	})
	settle("dead", func(seq uint64) pipeline.Settlement {
		return pipeline.Settlement{Seq: seq, Outcome: pipeline.Dead, Err: "400"}
	})
	settle("dropped", func(seq uint64) pipeline.Settlement {
		return pipeline.Settlement{Seq: seq, Outcome: pipeline.Dead, Err: "400"}
	})
	settle("acked", func(seq uint64) pipeline.Settlement { return pipeline.Settlement{Seq: seq, Outcome: pipeline.Ack} })
	settle("held", func(seq uint64) pipeline.Settlement { return pipeline.Settlement{Seq: seq, Outcome: pipeline.Hold} })
	if _, err := l.Queue("dropped").DropDead(ctxFor(t, waitLong), nil); err != nil {
		t.Fatalf("DropDead(all) = %v", err)
	}
	names("with entries in every state", "dead", "held", "ready", "retrying")
}
