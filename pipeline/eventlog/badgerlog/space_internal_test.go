package badgerlog

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

// TestMapsAllocatedAhead: through memtable rotations, after every Append
// Badger's memory-mapped files have no hole and the next memtable WAL file
// is made, empty and allocated; Close removes it, and Open removes one that
// a crash left.
func TestMapsAllocatedAhead(t *testing.T) {
	dir := t.TempDir()
	const memtable = 1 << 20
	l := mustOpen(t, dir, &Options{MemTableSize: memtable})
	if l.space.alloc.off {
		l.Close()
		t.Skipf("the filesystem of %s cannot fallocate", dir)
	}
	rotations := 0
	active := memtableFiles(t, dir)
	for i := 0; rotations < 3; i++ {
		if i == 1000 {
			t.Fatalf("premise: %d memtable rotations after %d appends, want 3", rotations, i)
		}
		appendN(t, l, fmt.Sprintf("a%d", i), 50, 50)
		if h := holesIn(dir); h != 0 {
			t.Fatalf("after append %d (%d rotations), the maps have %d bytes of holes, want 0", i, rotations, h)
		}
		next := filepath.Join(dir, fmt.Sprintf("%05d.mem", newestMemtable(dir)))
		if size, got := fileSize(t, next), allocated(t, next); size != 0 || got != 2*memtable {
			t.Fatalf("after append %d, the newest memtable WAL file %s has size %d and %d bytes allocated, want 0 and %d (made ahead)",
				i, next, size, got, 2*memtable)
		}
		if now := memtableFiles(t, dir); now[len(now)-1] != active[len(active)-1] {
			rotations++
			active = now
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n := emptyMemtables(t, dir); n != 0 {
		t.Fatalf("after Close, %d empty memtable WAL files, want 0", n)
	}
	// A crash leaves the file made ahead: Badger would refuse it.
	crashed := filepath.Join(dir, fmt.Sprintf("%05d.mem", newestMemtable(dir)+1))
	if err := os.WriteFile(crashed, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, dir, &Options{MemTableSize: memtable})
	defer l.Close()
	appendN(t, l, "reopened", 10, 10)
}

// emptyMemtables counts the empty memtable WAL files in dir.
func emptyMemtables(t *testing.T, dir string) int {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range es {
		if fi, err := e.Info(); err == nil && strings.HasSuffix(e.Name(), ".mem") && fi.Size() == 0 {
			n++
		}
	}
	return n
}

// TestMapsNotAllocated: where fallocate fails, the log works as before the
// allocator, and the check counts what is left sparse: a filesystem that
// cannot allocate (EOPNOTSUPP) gets a warning and the maps' holes; one
// without room for the next memtable WAL file gets that file's size in
// reserve too, until a later try makes it.
func TestMapsNotAllocated(t *testing.T) {
	real := fallocate
	defer func() { fallocate = real }()
	const memtable = 1 << 20
	for _, tt := range []struct {
		name    string
		err     error
		off     bool  // the allocator gives up
		missing int64 // what the check counts for the next memtable WAL file
	}{
		{"unsupported", syscall.EOPNOTSUPP, true, 0},
		{"no space", syscall.ENOSPC, false, 2 * memtable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fail := true
			fallocate = func(f *os.File, size int64) error {
				if fail {
					return tt.err
				}
				return real(f, size)
			}
			dir := t.TempDir()
			var logged strings.Builder
			l := mustOpen(t, dir, &Options{MemTableSize: memtable, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
			defer l.Close()
			appendN(t, l, "a", 100, 10)
			if got := l.space.alloc.off; got != tt.off {
				t.Errorf("allocator off = %v, want %v", got, tt.off)
			}
			if warned := strings.Contains(logged.String(), "cannot allocate"); warned != tt.off {
				t.Errorf("warned = %v, want %v; log:\n%s", warned, tt.off, logged.String())
			}
			if got := l.space.alloc.missing.Load(); got != tt.missing {
				t.Errorf("missing = %d, want %d", got, tt.missing)
			}
			if n := emptyMemtables(t, dir); n != 0 {
				t.Errorf("%d empty memtable WAL files after failed allocations, want 0", n)
			}
			free, holes, err := l.space.measure(func() time.Time { return time.Now().Add(time.Hour) })
			if err != nil || holes < holesIn(dir)+tt.missing || holes == 0 {
				t.Errorf("check reads %d free, %d bytes of holes (%v); want the maps' holes (%d) + %d", free, holes, err, holesIn(dir), tt.missing)
			}
			if tt.off {
				return
			}
			// Room again: the next try, after spaceRecheck, makes the file.
			fail = false
			l.space.alloc.written()
			if n := emptyMemtables(t, dir); n != 0 {
				t.Fatalf("a try within spaceRecheck of the failure made the next file")
			}
			l.space.alloc.mu.Lock()
			l.space.alloc.retryAt = time.Time{}
			l.space.alloc.mu.Unlock()
			l.space.alloc.written()
			if n := emptyMemtables(t, dir); n != 1 || l.space.alloc.missing.Load() != 0 || holesIn(dir) != 0 {
				t.Errorf("after a try with room, %d empty memtable WAL files, %d missing and %d bytes of holes, want 1, 0 and 0",
					n, l.space.alloc.missing.Load(), holesIn(dir))
			}
		})
	}
}

// TestAllocatorAfterTwoRotations: two writers (the committer and the
// value-log GC) can make Badger rotate its memtable twice between two
// looks: it takes the file made ahead, then makes the next one itself,
// sparse. The next look allocates that one too, and makes the one after.
func TestAllocatorAfterTwoRotations(t *testing.T) {
	dir := t.TempDir()
	const memSize = 1 << 20
	if err := os.WriteFile(filepath.Join(dir, "00001.mem"), make([]byte, memSize), 0o644); err != nil {
		t.Fatal(err)
	}
	var a allocator
	a.start(dir, memSize, slog.New(slog.DiscardHandler))
	defer a.close()
	if a.off {
		t.Skipf("the filesystem of %s cannot fallocate", dir)
	}
	if a.next == nil || filepath.Base(a.next.Name()) != "00002.mem" {
		t.Fatalf("premise: the file made ahead is %v, want 00002.mem", a.next)
	}
	// Badger's two rotations: it takes 00002.mem (ftruncate), then makes
	// 00003.mem, sparse.
	if err := os.Truncate(filepath.Join(dir, "00002.mem"), memSize); err != nil {
		t.Fatal(err)
	}
	third := filepath.Join(dir, "00003.mem")
	if err := os.WriteFile(third, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(third, memSize); err != nil {
		t.Fatal(err)
	}
	a.written()
	if h := holesIn(dir); h != 0 {
		t.Errorf("after the look, the maps have %d bytes of holes, want 0 (00003.mem allocated)", h)
	}
	if a.next == nil || filepath.Base(a.next.Name()) != "00004.mem" {
		t.Errorf("after the look, the file made ahead is %v, want 00004.mem", a.next)
	}
}

// TestNextMemtableNamedOnceAllocated: the allocator makes the next
// memtable WAL file under another name and gives it Badger's name only once
// allocated, with a link that fails where Badger made that file first. So
// the name is never the allocator's while its allocation can fail, and a
// failure never removes a file by Badger's name: before, the allocator
// made NNNNN.mem itself, and on a failed fallocate removed it by name
// after checking it was still empty; a rotation by the value-log GC in
// between would have had its live memtable WAL unlinked (P1). Here Badger
// "makes" the file, with a record in it, while the allocation fails.
func TestNextMemtableNamedOnceAllocated(t *testing.T) {
	real := fallocate
	defer func() { fallocate = real }()
	dir := t.TempDir()
	const memtable = 1 << 20
	l := mustOpen(t, dir, &Options{MemTableSize: memtable})
	defer l.Close()
	if l.space.alloc.off {
		t.Skipf("the filesystem of %s cannot fallocate", dir)
	}
	a := &l.space.alloc
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next == nil {
		t.Fatal("premise: no memtable WAL file made ahead after Open")
	}
	a.next.Close()
	os.Remove(a.next.Name())
	a.next = nil

	next := filepath.Join(dir, fmt.Sprintf("%05d.mem", newestMemtable(dir)+1))
	var named bool
	fallocate = func(f *os.File, size int64) error {
		if _, err := os.Stat(next); err == nil {
			named = true
		}
		// Badger rotates now, and writes into its new file.
		if err := os.WriteFile(next, []byte("a record"), 0o644); err != nil {
			t.Error(err)
		}
		return syscall.ENOSPC
	}
	a.prepare()
	fallocate = real
	if named {
		t.Errorf("%s existed while the allocator allocated it: a failure would remove it by Badger's name", next)
	}
	if b, err := os.ReadFile(next); err != nil || string(b) != "a record" {
		t.Errorf("Badger's %s after a failed allocation: %q, %v; want it untouched", next, b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, nextMemtable)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left after a failed allocation (%v)", nextMemtable, err)
	}
	if a.next != nil || a.missing.Load() != 2*memtable {
		t.Errorf("after a failed allocation: next %v, missing %d; want none and %d", a.next, a.missing.Load(), 2*memtable)
	}
	// Room again: the next try sees Badger's file and makes the one after.
	a.retryAt = time.Time{}
	a.prepare()
	want := filepath.Join(dir, fmt.Sprintf("%05d.mem", newestMemtable(dir)))
	if a.next == nil || a.next.Name() == next || filepath.Base(want) == filepath.Base(next) {
		t.Fatalf("after a try with room: next %v; want the file after %s", a.next, next)
	}
	if size, got := fileSize(t, want), allocated(t, want); size != 0 || got != 2*memtable {
		t.Errorf("%s: size %d, %d bytes allocated; want 0 and %d", want, size, got, 2*memtable)
	}
}
