package ingest

import (
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/pipelined/pipelined/pipeline/internal/race"
)

// TestNewID: event ids are UUIDv7 as uuid.NewV7 makes them (version 7,
// RFC 9562 variant, the time of their making), each greater than the one
// before, distinct across goroutines, for one allocation.
func TestNewID(t *testing.T) {
	prev := ""
	for range 20000 {
		before := uuid.Must(uuid.NewV7()) // the library's, for the time
		s := newID()
		id, err := uuid.Parse(s)
		if err != nil {
			t.Fatalf("newID() = %q: %v", s, err)
		}
		if id.Version() != 7 || id.Variant() != uuid.RFC4122 || id.String() != s {
			t.Fatalf("newID() = %q: version %d, variant %v", s, id.Version(), id.Variant())
		}
		if s <= prev {
			t.Fatalf("newID() = %q after %q: ids must grow", s, prev)
		}
		if got, lo := id.Time(), before.Time(); got < lo || got > lo+10*1e7 { // 100 ns units; within a second
			t.Fatalf("newID() = %q has time %v, made at %v", s, got, lo)
		}
		prev = s
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			ids := make([]string, 5000)
			for i := range ids {
				ids[i] = newID()
			}
			mu.Lock()
			defer mu.Unlock()
			for _, s := range ids {
				if seen[s] {
					t.Errorf("newID() gave %q twice", s)
				}
				seen[s] = true
			}
		})
	}
	wg.Wait()
	if race.Enabled {
		return // the race detector allocates
	}
	if n := testing.AllocsPerRun(100, func() { newID() }); n != 1 {
		t.Errorf("newID() costs %v allocations, want 1 (its string)", n)
	}
}
