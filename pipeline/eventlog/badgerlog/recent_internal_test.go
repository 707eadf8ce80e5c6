package badgerlog

import (
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// TestRecentIsBounded checks the recent-events cache's bounds (P9): never
// more than recentEvents events nor recentBytes bytes, the newest kept.
func TestRecentIsBounded(t *testing.T) {
	for _, tc := range []struct {
		name     string
		body     int
		n        int
		wantMax  int
		wantLast bool
	}{
		{"many small events", 100, 3 * recentEvents, recentEvents, true},
		{"large events", recentBytes / 8, 40, 8, true},
		{"an event too big to keep", recentBytes, 3, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r recent
			body := make([]byte, tc.body)
			for i := range tc.n {
				r.add(uint64(i), pipeline.Event{ID: "e", Body: body, ReceivedAt: time.Now()}, "", routing{})
				if len(r.bySeq) > tc.wantMax || r.bytes > recentBytes || len(r.order) != len(r.bySeq) {
					t.Fatalf("after %d adds: %d events, %d bytes, %d in order; want at most %d events and %d bytes",
						i+1, len(r.bySeq), r.bytes, len(r.order), tc.wantMax, recentBytes)
				}
			}
			if _, _, ok := r.get(uint64(tc.n - 1)); ok != tc.wantLast {
				t.Fatalf("get(newest) found = %v, want %v", ok, tc.wantLast)
			}
			if _, _, ok := r.get(0); ok {
				t.Fatal("get(oldest) found it: nothing was evicted")
			}
		})
	}
}
