package ingest

import (
	"testing"
	"time"
)

// TestRefusalLogSuppressedCount: past the burst, refusals are counted, and
// the next line logged says how many were left out.
func TestRefusalLogSuppressedCount(t *testing.T) {
	var r refusalLog
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		at              time.Duration
		source, outcome string
		ok              bool
		suppressed      int
	}
	var steps []step
	for range refusalBurst {
		steps = append(steps, step{0, "callkaro", "invalid_json", true, 0})
	}
	for range 7 {
		steps = append(steps, step{0, "callkaro", "invalid_json", false, 0})
	}
	steps = append(steps,
		step{0, "callkaro", "unauthorized", true, 0}, // another reason: its own budget
		step{0, "stripe", "invalid_json", true, 0},   // another source: its own budget
		step{refusalEvery, "callkaro", "invalid_json", true, 7},
		step{refusalEvery, "callkaro", "invalid_json", false, 0},
		step{3 * refusalEvery, "callkaro", "invalid_json", true, 1},
	)
	for i, s := range steps {
		ok, n := r.take(s.source, s.outcome, t0.Add(s.at))
		if ok != s.ok || n != s.suppressed {
			t.Errorf("step %d: take(%s, %s, +%v) = %v, %d; want %v, %d", i, s.source, s.outcome, s.at, ok, n, s.ok, s.suppressed)
		}
	}
}
