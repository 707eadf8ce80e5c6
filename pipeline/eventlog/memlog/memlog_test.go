package memlog

import (
	"cmp"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/logtest"
)

func TestLog(t *testing.T) {
	logtest.Run(t, func(t *testing.T) pipeline.Log { return New() })
}

// TestRunDurable checks logtest.RunDurable itself, which memlog cannot pass
// for real: a closed log's state is carried to the next open of the same
// dir the way a durable log keeps it, with leases dropped.
func TestRunDurable(t *testing.T) {
	var mu sync.Mutex
	dirs := make(map[string]*Log)
	logtest.RunDurable(t, func(t *testing.T, dir string) pipeline.Log {
		mu.Lock()
		defer mu.Unlock()
		l := New()
		if old, ok := dirs[dir]; ok {
			l = restart(old)
		}
		dirs[dir] = l
		return l
	})
}

// restart returns a new log holding what a durable log would keep of l:
// everything but the leases, whose entries are ready again.
func restart(l *Log) *Log {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := New()
	n.seq = l.seq
	n.events = l.events
	n.order = l.order
	n.dedup = l.dedup
	for sink, q := range l.queues {
		nq := n.queueLocked(sink)
		nq.ready = append(slices.Clone(q.ready), slices.Collect(maps.Values(q.leased))...)
		slices.SortFunc(nq.ready, func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
		for _, e := range nq.ready {
			// A lease that was not settled did not count as an attempt.
			if _, leased := q.leased[e.seq]; leased {
				e.attempts--
			}
		}
		nq.retry = q.retry
		nq.dead = q.dead
	}
	return n
}
