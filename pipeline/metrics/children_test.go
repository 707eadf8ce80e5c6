package metrics

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// BenchmarkIngestHotPath is what ingest counts for one accepted request
// of BenchmarkHandler's config: the request and its duration, two routes
// matched, one rule error.
func BenchmarkIngestHotPath(b *testing.B) {
	m := New(nil)
	b.ReportAllocs()
	for b.Loop() {
		m.IngestRequest("callkaro", OutcomeAccepted, time.Millisecond)
		m.RouteMatched("everything")
		m.RouteMatched("leads")
		m.RuleError("broken", "when")
	}
}

// TestCachedChildrenCountConcurrently: the children ingest counts through
// (cached per label values, added to from many goroutines at once) count
// every call, each under its own labels, as WithLabelValues would.
func TestCachedChildrenCountConcurrently(t *testing.T) {
	m := New(nil)
	const goroutines, each = 8, 500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				source := fmt.Sprintf("s%d", i%5)
				m.IngestRequest(source, OutcomeAccepted, time.Millisecond)
				m.RouteMatched(fmt.Sprintf("r%d", (i+g)%3))
				m.RuleError("broken", "when")
			}
		})
	}
	wg.Wait()
	for i := range 5 {
		if got := testutil.ToFloat64(m.ingestRequests.WithLabelValues(fmt.Sprintf("s%d", i), OutcomeAccepted)); got != goroutines*each/5 {
			t.Errorf("requests of s%d = %v, want %v", i, got, goroutines*each/5)
		}
	}
	var matches float64
	for i := range 3 {
		matches += testutil.ToFloat64(m.routeMatches.WithLabelValues(fmt.Sprintf("r%d", i)))
	}
	if matches != goroutines*each {
		t.Errorf("route matches = %v, want %v", matches, goroutines*each)
	}
	if got := testutil.ToFloat64(m.ruleErrors.WithLabelValues("broken", "when")); got != goroutines*each {
		t.Errorf("rule errors = %v, want %v", got, goroutines*each)
	}
	if n := testutil.CollectAndCount(m.ingestDuration); n != 5 {
		t.Errorf("duration series = %d, want 5", n)
	}
}
