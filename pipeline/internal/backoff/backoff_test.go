package backoff

import (
	"testing"
	"time"
)

func TestDelayBounds(t *testing.T) {
	min, max := time.Second, 10*time.Minute
	tests := []struct {
		attempt int
		ceiling time.Duration
	}{
		{1, 2 * time.Second},
		{2, 4 * time.Second},
		{5, 32 * time.Second},
		{9, 512 * time.Second},
		{10, max},
		{100, max},
	}
	for _, tt := range tests {
		lo := delay(tt.attempt, min, max, func(int64) int64 { return 0 })
		hi := delay(tt.attempt, min, max, func(n int64) int64 { return n - 1 })
		if lo != min {
			t.Errorf("delay(%d) lowest = %v, want %v", tt.attempt, lo, min)
		}
		if hi != tt.ceiling {
			t.Errorf("delay(%d) highest = %v, want %v", tt.attempt, hi, tt.ceiling)
		}
		for range 100 {
			if d := Delay(tt.attempt, min, max); d < min || d > tt.ceiling {
				t.Fatalf("Delay(%d) = %v, want within [%v, %v]", tt.attempt, d, min, tt.ceiling)
			}
		}
	}
}

func TestDelaySpreads(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[Delay(4, 100*time.Millisecond, time.Minute)] = true
	}
	if len(seen) < 10 {
		t.Errorf("50 delays took only %d distinct values; want jitter", len(seen))
	}
}
