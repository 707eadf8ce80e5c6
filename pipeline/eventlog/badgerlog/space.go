package badgerlog

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pipelined/pipelined/pipeline"
)

// Badger writes its value log, its memtable WALs and its discard stats
// through memory maps of files it creates sparse (ftruncate, then mmap; a
// memtable WAL or value-log file is twice what Badger fills of it). A write
// into a page that has no block makes the kernel find one; when the
// filesystem has none left, it answers with SIGBUS and the process dies:
// no error, no 503 (P7). A check before the write cannot prevent that:
// another process (dd, a runaway journal) can take the last blocks between
// the check and the write, and a loaded machine can stall the daemon there.
//
// So the log gives those files their blocks before Badger writes into them
// (allocator), with fallocate(2), which keeps a file's size and contents:
//
//   - Open allocates the holes of every such file once Badger is open,
//     before anything writes to it.
//   - Badger makes a memtable WAL file at each memtable rotation and writes
//     into it at once. So the allocator makes the next one ahead: empty
//     (Badger takes an empty file for a new one; Open removes one left by a
//     crash, see removeEmptyMemtables), its blocks allocated past its end
//     (FALLOC_FL_KEEP_SIZE), which Badger's ftruncate then covers. It is
//     made and allocated under another name (nextMemtable) and then linked
//     to Badger's, so that the name is never the allocator's while the
//     allocation can fail: removing a file by Badger's name could unlink a
//     memtable WAL that Badger had just made and written into.
//   - After each Badger commit (the committer's, replay's, the value-log
//     GC's) and before its answer, it looks (fstat) whether Badger took
//     that file, and then allocates any file Badger made since and makes
//     the next one; and whether the value-log file it watches changed size
//     (a rotation), and allocates the new one. A commit is at most 15% of
//     a memtable, so one writer cannot make Badger rotate twice between
//     two looks; two (the committer and the GC) can, and the second
//     rotation's file is allocated at the next look.
//
// With the default options that is 32 MiB per memtable WAL file and 128 MiB
// for the value-log file, which the check held in reserve as holes
// already; the next memtable WAL file (2 × MemTableSize) and the discard
// stats (1 MiB) are new: a fresh log on a 256 MiB filesystem leaves others
// 47 MiB before it refuses writes, against 80. (Allocating only what
// Badger fills of a memtable WAL file, ~1.2 × MemTableSize, would save
// most of that, trusting Badger's batch limits to stay as they are.) On
// ext4 the allocations take microseconds; on tmpfs they are pages of
// memory, ~7 ms per 32 MiB.
//
// What is left (docs/reliability.md): Badger writes its tables (memtable
// flushes, compactions, the flush in Close) through maps of new sparse
// files too, made with O_EXCL, so that nothing can be made for them ahead;
// a new value-log file gets its first page before the allocator sees it,
// and a value-log GC may write on into it; Badger's Open writes the first
// page of its new memtable WAL and value-log files before the allocator
// starts (a disk full at start is a crash at start). A filesystem that
// refuses fallocate (ext2/3 files without extents, NFSv3, some FUSE) gets
// a warning and the check alone, as before; a copy-on-write filesystem
// (btrfs, ZFS) may need new blocks to overwrite all the same.
//
// The check refuses writes with ErrFull while the free space is below what
// the maps may still claim (their holes: none once allocated, but for the
// cases above; and the next memtable WAL file while it could not be made)
// plus a margin: the daemon answers 503 and carries on once space is
// freed.

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

	alloc allocator // gives the maps their blocks
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
		s.holes += s.alloc.missing.Load()
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

// mapped says whether name is one of the files Badger writes through a
// memory map and creates sparse: value log, memtable WAL, discard stats.
// (Tables are written through maps too, but each whole at once.)
func mapped(name string) bool {
	return strings.HasSuffix(name, ".vlog") || strings.HasSuffix(name, ".mem") || name == "DISCARD"
}

// holesIn sums the unallocated parts of the memory-mapped files in dir.
func holesIn(dir string) int64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var holes int64
	for _, e := range entries {
		if !mapped(e.Name()) {
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

var (
	_ pipeline.WriteChecker = (*DB)(nil)
	_ pipeline.Halter       = (*DB)(nil)
)

// CheckWrite implements [pipeline.WriteChecker]: ErrClosed after Close,
// ErrHalted after a halt (commit.go), ErrFull while the free space is
// below what the log keeps in reserve.
func (l *DB) CheckWrite() error {
	if err := l.checkOpen(); err != nil {
		return err
	}
	if err := l.HaltErr(); err != nil {
		return err
	}
	return l.space.check()
}

// allocator gives the blocks of Badger's memory-mapped files before Badger
// writes into them; see the comment at the top of this file. Its methods
// may be called from any goroutine; a.mu is a leaf: nothing else is locked
// under it.
type allocator struct {
	dir     string
	memSize int64 // a memtable WAL file's size: 2 × MemTableSize
	log     *slog.Logger

	mu       sync.Mutex
	off      bool      // the filesystem refuses fallocate: the check alone, as before
	next     *os.File  // the next memtable WAL file, empty and allocated; nil when none
	vlog     *os.File  // the newest value-log file, watched for a rotation
	vlogSize int64     // its size when last seen
	left     bool      // the last scan left holes (no space): scan again
	retryAt  time.Time // after a failed allocation, the next try

	// missing is what the next memtable rotation would leave unallocated:
	// memSize while next is nil (and not off), for the check.
	missing atomic.Int64
}

// removeEmptyMemtables removes the empty memtable WAL files in dir: made
// ahead by an allocator that did not close (a crash), or left by Badger
// between its create and its ftruncate. Badger refuses to open a directory
// with one; none holds a write. It also removes the file an allocator
// was making the next one in (nextMemtable). Call it before opening Badger.
func removeEmptyMemtables(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() == nextMemtable {
			os.Remove(filepath.Join(dir, e.Name()))
			continue
		}
		if !strings.HasSuffix(e.Name(), ".mem") {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.Size() == 0 {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// start allocates the maps Badger has made and makes the next memtable
// WAL file. Call it once Badger is open, before anything writes to it.
func (a *allocator) start(dir string, memSize int64, log *slog.Logger) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.dir, a.memSize, a.log = dir, memSize, log
	a.scan()
	a.prepare()
}

// written is called after each write to Badger (before it is answered):
// it makes the next memtable WAL file if Badger took the last one, and
// allocates a new value-log file. Two fstats when neither happened.
func (a *allocator) written() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.off || a.dir == "" {
		return
	}
	if a.next != nil {
		if size, err := sizeOf(a.next); err != nil || size != 0 {
			// Badger took it: a memtable rotation. Another writer's
			// commit (the value-log GC's) may have rotated again since,
			// into a file Badger made sparse: the scan allocates it.
			a.next.Close()
			a.next = nil
			a.scan()
		}
	}
	if a.vlog != nil {
		if size, err := sizeOf(a.vlog); err != nil || size != a.vlogSize {
			a.scan() // a value-log rotation, or a close
		}
	}
	if a.left && !time.Now().Before(a.retryAt) {
		a.scan()
	}
	if a.next == nil {
		a.prepare()
	}
}

// close removes the memtable WAL file made ahead. Call it once Badger is
// closed.
func (a *allocator) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next != nil {
		if size, err := sizeOf(a.next); err == nil && size == 0 {
			os.Remove(a.next.Name())
		}
		a.next.Close()
		a.next = nil
	}
	if a.vlog != nil {
		a.vlog.Close()
		a.vlog = nil
	}
	a.off = true
	a.missing.Store(0)
}

// scan allocates the holes of every map file in dir and watches the
// newest value-log file. a.mu is held.
func (a *allocator) scan() {
	entries, err := os.ReadDir(a.dir)
	if err != nil {
		return
	}
	var newest string
	a.left = false
	for _, e := range entries {
		n := e.Name()
		if !mapped(n) {
			continue
		}
		if strings.HasSuffix(n, ".vlog") && n > newest { // names of one length: NNNNNN.vlog
			newest = n
		}
		if err := a.allocate(filepath.Join(a.dir, n)); err != nil {
			a.failed(err)
			if a.off {
				return
			}
			a.left = true
		}
	}
	if a.vlog != nil {
		a.vlog.Close()
		a.vlog = nil
	}
	if newest == "" {
		return
	}
	f, err := os.Open(filepath.Join(a.dir, newest))
	if err != nil {
		return
	}
	if a.vlogSize, err = sizeOf(f); err != nil {
		f.Close()
		return
	}
	a.vlog = f
}

// allocate gives the file at path blocks for all of it, if it has holes.
func (a *allocator) allocate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a memtable flushed, a value-log file collected
	}
	if err != nil {
		return err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	if st.Size <= st.Blocks*512 {
		return nil
	}
	return fallocate(f, st.Size)
}

// prepare makes the next memtable WAL file: empty, with memSize bytes
// allocated past its end. Badger names it after the newest one. a.mu is
// held.
func (a *allocator) prepare() {
	if a.off || a.next != nil {
		return
	}
	a.missing.Store(a.memSize)
	if time.Now().Before(a.retryAt) {
		return
	}
	for range 2 {
		fid := newestMemtable(a.dir) + 1
		path := filepath.Join(a.dir, fmt.Sprintf("%05d.mem", fid))
		// Made under another name and linked to path once allocated:
		// a failure leaves path alone (Badger may have made it since,
		// and removing it by name would unlink its live memtable WAL).
		tmp := filepath.Join(a.dir, nextMemtable)
		os.Remove(tmp) // a try that failed
		f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
		if err != nil {
			a.failed(err)
			return
		}
		if err = fallocate(f, a.memSize); err == nil {
			err = os.Link(tmp, path)
		}
		os.Remove(tmp)
		f.Close()
		if errors.Is(err, os.ErrExist) {
			// Badger made it first: it rotated twice since the last
			// look. Allocate it, and make the one after.
			a.scan()
			continue
		}
		if err == nil { // watched under its own name (Badger may take it already)
			f, err = os.Open(path)
		}
		if err != nil {
			a.failed(err)
			return
		}
		a.next = f
		a.missing.Store(0)
		return
	}
}

// nextMemtable is the name the next memtable WAL file is made and
// allocated under before it is linked to its own: Badger reads only
// *.mem files, and a link fails where Badger made the file first.
const nextMemtable = "pipelined-next-mem.tmp"

// failed records an allocation that failed: when the filesystem cannot
// allocate, the allocator stops (the check's holes measure what is left
// sparse); otherwise (no space) it tries again after spaceRecheck. a.mu
// is held.
func (a *allocator) failed(err error) {
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
		a.off = true
		a.missing.Store(0)
		a.log.Warn("event log: the filesystem cannot allocate Badger's memory-mapped files ahead (fallocate); "+
			"a disk that fills in the moment between the space check and a write can crash the daemon (SIGBUS)",
			"dir", a.dir, "err", err)
		return
	}
	a.retryAt = time.Now().Add(spaceRecheck)
}

// newestMemtable is the number of the newest memtable WAL file in dir,
// NNNNN.mem, or 0 with none.
func newestMemtable(dir string) int {
	entries, _ := os.ReadDir(dir)
	newest := 0
	for _, e := range entries {
		if s, ok := strings.CutSuffix(e.Name(), ".mem"); ok {
			if fid, err := strconv.Atoi(s); err == nil && fid > newest {
				newest = fid
			}
		}
	}
	return newest
}

// fallocate allocates the first size bytes of f, keeping its size and
// contents, again when a signal interrupts it. A variable for tests: a
// filesystem that refuses, one that has no room.
var fallocate = func(f *os.File, size int64) error {
	for {
		err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, size)
		if err != unix.EINTR {
			return err
		}
	}
}

func sizeOf(f *os.File) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	return st.Size, nil
}
