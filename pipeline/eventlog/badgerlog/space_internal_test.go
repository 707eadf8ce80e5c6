package badgerlog

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// fakeDisk is a filesystem whose free space a test sets, counting how
// often space reads it, with a clock the test moves.
type fakeDisk struct {
	free  int64
	reads int
	now   time.Time
}

// space returns a space over d whose maps' holes are holes.
func (d *fakeDisk) space(holes int64) *space {
	return &space{
		dir:     "/fake",
		statfs:  func(string) (int64, error) { d.reads++; return d.free, nil },
		holesOf: func(string) int64 { return holes },
	}
}

func (d *fakeDisk) clock() time.Time { return d.now }

// TestSpaceReadingCache holds the free-space cache of space.check: within
// spaceRoomy of the reserve (the holes plus spaceMargin) every check reads
// the disk again; with more room, a reading at most freeRecheck old is
// used and an older one is read again. Each case makes a first check at
// t0 on a disk with last free (which reads it), changes the disk to now
// free, and checks again age later.
func TestSpaceReadingCache(t *testing.T) {
	const holes = 64 << 20
	const reserve = holes + spaceMargin
	const roomy = reserve + spaceRoomy // from here up a reading is cached
	tests := []struct {
		name      string
		last, now int64 // free space at the first check, and at the second
		age       time.Duration
		reread    bool // the second check reads the disk
		refused   bool // the second check says ErrFull
	}{
		{name: "roomy, same moment", last: 10 << 30, now: 10 << 30, age: 0},
		{name: "roomy, half freeRecheck old", last: 10 << 30, now: 10 << 30, age: freeRecheck / 2},
		{name: "roomy, freeRecheck old", last: 10 << 30, now: 10 << 30, age: freeRecheck},
		{name: "roomy, just older than freeRecheck", last: 10 << 30, now: 10 << 30, age: freeRecheck + time.Nanosecond, reread: true},
		{name: "roomy, much older", last: 10 << 30, now: 10 << 30, age: time.Hour, reread: true},
		{name: "at the roomy line", last: roomy, now: roomy, age: time.Millisecond},
		{name: "a byte within spaceRoomy", last: roomy - 1, now: roomy - 1, age: 0, reread: true},
		{name: "within spaceRoomy, 1ms later", last: reserve + 100<<20, now: reserve + 100<<20, age: time.Millisecond, reread: true},
		{name: "within spaceRoomy, disk fills", last: reserve + 100<<20, now: reserve - 1, age: time.Millisecond, reread: true, refused: true},
		{name: "refused, then space freed", last: reserve - 1, now: 10 << 30, age: 0, reread: true},
		{name: "refused, still full", last: reserve - 1, now: reserve - 1, age: time.Millisecond, reread: true, refused: true},
		// A disk that was roomy and fills up is refused late, by at most
		// freeRecheck (the timeline test below holds that over time).
		{name: "roomy disk fills, reading fresh", last: 10 << 30, now: 0, age: freeRecheck},
		{name: "roomy disk fills, reading stale", last: 10 << 30, now: 0, age: freeRecheck + time.Nanosecond, reread: true, refused: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			d := &fakeDisk{free: tt.last, now: t0}
			s := d.space(holes)
			first := s.checkAt(d.clock)
			if d.reads != 1 || (first != nil) != (tt.last < reserve) {
				t.Fatalf("premise: the first check read the disk %d times and said %v with %d MiB free; want 1 read, refused %v",
					d.reads, first, tt.last>>20, tt.last < reserve)
			}
			d.free, d.now = tt.now, t0.Add(tt.age)
			err := s.checkAt(d.clock)
			if reread := d.reads == 2; reread != tt.reread || d.reads > 2 {
				t.Errorf("check %v after a reading of %d MiB free (reserve %d MiB, roomy from %d MiB) read the disk again: %v, want %v",
					tt.age, tt.last>>20, reserve>>20, roomy>>20, reread, tt.reread)
			}
			if refused := errors.Is(err, pipeline.ErrFull); refused != tt.refused || (err != nil && !refused) {
				t.Errorf("check with %d MiB free on disk, %v after a reading of %d MiB = %v, want refused %v",
					tt.now>>20, tt.age, tt.last>>20, err, tt.refused)
			}
		})
	}
}

// TestSpaceRefusesAFullDiskInTime: a roomy disk that fills up at once (a
// big file copied beside the log) is refused by every check more than
// freeRecheck after it filled, whatever the pace of the checks, and no
// check before it filled is refused.
func TestSpaceRefusesAFullDiskInTime(t *testing.T) {
	const holes = 64 << 20
	for _, every := range []time.Duration{10 * time.Microsecond, time.Millisecond, 7 * time.Millisecond, freeRecheck / 2, freeRecheck, 3 * freeRecheck} {
		for _, fillAt := range []time.Duration{0, 3 * time.Millisecond, freeRecheck - time.Nanosecond, 5*freeRecheck + 37*time.Millisecond} {
			t.Run(fmt.Sprintf("check every %v, full at %v", every, fillAt), func(t *testing.T) {
				t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
				d := &fakeDisk{free: 10 << 30, now: t0}
				s := d.space(holes)
				full := t0.Add(fillAt)
				end := full.Add(2*freeRecheck + 2*every)
				var firstRefused time.Time
				for at := t0; !at.After(end); at = at.Add(every) {
					d.now = at
					if !at.Before(full) {
						d.free = 0
					}
					err := s.checkAt(d.clock)
					switch {
					case err != nil && !errors.Is(err, pipeline.ErrFull):
						t.Fatalf("check at %v = %v, want nil or ErrFull", at.Sub(t0), err)
					case err != nil && at.Before(full):
						t.Fatalf("check at %v = %v before the disk filled at %v", at.Sub(t0), err, fillAt)
					case err != nil && firstRefused.IsZero():
						firstRefused = at
					case err == nil && at.Sub(full) > freeRecheck:
						t.Fatalf("check at %v passed, %v after the disk filled (at %v): want refused after at most freeRecheck (%v)",
							at.Sub(t0), at.Sub(full), fillAt, freeRecheck)
					case err == nil && !firstRefused.IsZero():
						t.Fatalf("check at %v passed after one at %v was refused, the disk still full", at.Sub(t0), firstRefused.Sub(t0))
					}
				}
				if firstRefused.IsZero() {
					t.Fatalf("premise: no check was refused by %v after the disk filled", end.Sub(full))
				}
			})
		}
	}
}

// BenchmarkSpaceCheck is the check every append and settlement makes, on
// the test's temporary directory (with room: the reading is cached).
func BenchmarkSpaceCheck(b *testing.B) {
	s := &space{dir: b.TempDir()}
	if err := s.check(); err != nil {
		b.Skipf("the temporary directory's disk has no room: %v", err)
	}
	for b.Loop() {
		_ = s.check()
	}
}
