package lograte

import (
	"testing"
	"time"
)

// TestEvery: the first line goes through, the next ones within the period
// do not, and the first one after it says how many were left out.
func TestEvery(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC).UnixNano()
	e := Every{Period: 10 * time.Second}
	steps := []struct {
		after          time.Duration
		ok             bool
		wantSuppressed int64
	}{
		{0, true, 0},
		{time.Second, false, 0},
		{9 * time.Second, false, 0},
		{10 * time.Second, true, 2},
		{11 * time.Second, false, 0},
		{time.Minute, true, 1},
		{time.Minute + 10*time.Second, true, 0},
	}
	for _, s := range steps {
		if ok, n := e.allowAt(t0 + int64(s.after)); ok != s.ok || n != s.wantSuppressed {
			t.Errorf("at +%v: Allow = %v, %d; want %v, %d", s.after, ok, n, s.ok, s.wantSuppressed)
		}
	}
	var zero Every
	for range 3 {
		if ok, _ := zero.Allow(); !ok {
			t.Error("Allow with no period = false, want every line through")
		}
	}
}

// TestBurst: n lines go through at once, then one per period; the first
// one after a gap says how many were left out.
func TestBurst(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	b := NewBurst(3, time.Second)
	steps := []struct {
		after          time.Duration
		ok             bool
		wantSuppressed int
	}{
		{0, true, 0},
		{0, true, 0},
		{0, true, 0},
		{0, false, 0},
		{500 * time.Millisecond, false, 0},
		{time.Second, true, 2},
		{time.Second, false, 0},
		{10 * time.Second, true, 1},
		{10 * time.Second, true, 0},
	}
	for _, s := range steps {
		if ok, n := b.AllowAt(t0.Add(s.after)); ok != s.ok || n != s.wantSuppressed {
			t.Errorf("at +%v: AllowAt = %v, %d; want %v, %d", s.after, ok, n, s.ok, s.wantSuppressed)
		}
	}
	b = NewBurst(2, time.Second)
	for i := range 2 {
		if spent := b.Spent(t0); spent {
			t.Errorf("Spent before line %d of a burst of 2 = true, want false", i+1)
		}
		b.AllowAt(t0)
	}
	if !b.Spent(t0) {
		t.Error("Spent after the last line of a burst = false, want true")
	}
	if b.Spent(t0.Add(time.Second)) {
		t.Error("Spent a period after the last line = true, want false")
	}
}
