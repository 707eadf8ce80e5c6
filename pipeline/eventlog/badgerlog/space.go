package badgerlog

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// Badger writes its value log and memtable WAL through memory maps of files
// it creates sparse (twice their size). When the filesystem has no block
// left for a page of such a file, the kernel answers the write with SIGBUS
// and the process dies. So the log refuses writes with ErrFull while the
// free space is below what those files may still claim, plus a margin: the
// daemon answers 503 and carries on once space is freed.

// spaceMargin is kept free on top of the maps' holes, for table files.
const spaceMargin = 16 << 20

// space caches how much the maps may still claim; re-read at most every
// spaceRecheck. The free space is read on every check while it is within
// spaceRoomy of the reserve; with more room than that, at most every
// freeRecheck (a statfs per append and per settlement was 1% of the
// daemon's CPU under load): to use up spaceRoomy in freeRecheck the log
// would have to write 2.5 GB/s.
type space struct {
	dir string

	mu       sync.Mutex
	holes    int64
	readAt   time.Time
	free     int64                      // as last read
	freeAt   time.Time                  // when
	override func() (free, holes int64) // tests: the readings, cache and all

	// Tests only, nil in production: what statfs and holesIn would read,
	// through the cache (space_internal_test.go).
	statfs  func(dir string) (free int64, err error)
	holesOf func(dir string) int64
}

const (
	spaceRecheck = 200 * time.Millisecond
	freeRecheck  = 100 * time.Millisecond
	spaceRoomy   = 256 << 20
)

// check returns an error wrapping pipeline.ErrFull when a write could find
// the disk full.
func (s *space) check() error { return s.checkAt(time.Now) }

// checkAt is check with the time told by clock.
func (s *space) checkAt(clock func() time.Time) error {
	free, holes, err := s.measure(clock)
	if err != nil {
		return nil // cannot tell: let the write try and report its own error
	}
	if free < holes+spaceMargin {
		return fmt.Errorf("%w: %s has %d MiB free, the log needs %d MiB in reserve", pipeline.ErrFull,
			s.dir, free>>20, (holes+spaceMargin)>>20)
	}
	return nil
}

// measure returns the free space and the maps' holes, read again or as
// cached. The time is read under s.mu, so that a caller that waited for
// it does not take a reading for younger than it is.
func (s *space) measure(clock func() time.Time) (free, holes int64, err error) {
	if s.override != nil {
		free, holes = s.override()
		return free, holes, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := clock()
	if now.Sub(s.readAt) > spaceRecheck {
		if s.holesOf != nil {
			s.holes = s.holesOf(s.dir)
		} else {
			s.holes = holesIn(s.dir)
		}
		s.readAt = now
	}
	if s.free < s.holes+spaceMargin+spaceRoomy || now.Sub(s.freeAt) > freeRecheck {
		free, err := freeIn(s.dir, s.statfs)
		if err != nil {
			return 0, 0, err
		}
		s.free, s.freeAt = free, now
	}
	return s.free, s.holes, nil
}

// freeIn is the space of dir's filesystem that is free to us, as statfs
// reads it, or as fake says when not nil.
func freeIn(dir string, fake func(string) (int64, error)) (int64, error) {
	if fake != nil {
		return fake(dir)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// holesIn sums the unallocated parts of the memory-mapped files in dir.
func holesIn(dir string) int64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var holes int64
	for _, e := range entries {
		if n := e.Name(); !strings.HasSuffix(n, ".vlog") && !strings.HasSuffix(n, ".mem") {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			continue
		}
		if h := fi.Size() - st.Blocks*512; h > 0 {
			holes += h
		}
	}
	return holes
}

var _ pipeline.WriteChecker = (*DB)(nil)

// CheckWrite implements [pipeline.WriteChecker]: ErrClosed after Close,
// ErrFull while the free space is below what the log keeps in reserve.
func (l *DB) CheckWrite() error {
	if err := l.checkOpen(); err != nil {
		return err
	}
	return l.space.check()
}
