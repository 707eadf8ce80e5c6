package badgerlog

import (
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
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

// TestRecentForgetsEvictedPayloads: an evicted event gives back every byte
// it was counted for, its payloads too; else the count only grows
// and the cache ends up keeping one event at a time.
func TestRecentForgetsEvictedPayloads(t *testing.T) {
	var r recent
	payload := make([]byte, 1024)
	for i := range 4 * recentEvents {
		r.add(uint64(i), pipeline.Event{ID: "e", Body: make([]byte, 100), ReceivedAt: time.Now()}, "",
			routing{payloads: []*logpb.Payload{{Sink: "s", Payload: payload}}})
	}
	want := 0
	for _, e := range r.bySeq {
		want += eventSize(&e.ev)
		for _, p := range e.routing.payloads {
			want += len(p.GetPayload())
		}
	}
	if len(r.bySeq) != recentEvents || r.bytes != want {
		t.Fatalf("after %d adds of 1.2 KB: %d events kept, %d bytes counted; want %d events (%d bytes)",
			4*recentEvents, len(r.bySeq), r.bytes, recentEvents, want)
	}
}

// TestRecentRefusesABigPayload: an event is kept only when it and its
// payloads together fit the bound for one event (P9).
func TestRecentRefusesABigPayload(t *testing.T) {
	var r recent
	r.add(1, pipeline.Event{ID: "e", ReceivedAt: time.Now()}, "", routing{payloads: []*logpb.Payload{{Sink: "s", Payload: make([]byte, recentBytes)}}})
	if _, _, ok := r.get(1); ok || r.bytes > recentBytes {
		t.Fatalf("an event with a %d B payload: kept = %v, %d bytes counted; want it not kept", recentBytes, ok, r.bytes)
	}
}
