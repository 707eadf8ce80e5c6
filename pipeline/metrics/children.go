package metrics

import (
	"maps"
	"sync"
	"sync/atomic"
)

// children caches the children of a metric vector by their label values.
// WithLabelValues validates and hashes the values and takes the vector's
// lock on every call, ~150 ns each; ingest counts four or five per request
// (BenchmarkIngestHotPath), so its counters are looked up here instead, in
// a map read without a lock. No series of the vectors cached is ever
// deleted, so a cached child stays the one the vector exports.
type children[K comparable, M any] struct {
	m  atomic.Pointer[map[K]M] // never written once stored: copied to add
	mu sync.Mutex              // serializes additions
}

// maxChildren bounds a cache: label values come from the configuration and
// from small fixed sets, so it is only reached after many reloads that
// renamed sources or routes, and then the cache starts again.
const maxChildren = 4096

// get returns the child of k, made by child (WithLabelValues) the first
// time.
func (c *children[K, M]) get(k K, child func() M) M {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
	}
	n := map[K]M{}
	if old != nil && len(*old) < maxChildren {
		n = maps.Clone(*old)
	}
	v := child()
	n[k] = v
	c.m.Store(&n)
	return v
}
