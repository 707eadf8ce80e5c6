// Package wal is a write-ahead log of numbered segment files: records are
// appended in groups, each group with one write and one fdatasync, and read
// back by position.
//
// A segment is an ordinary file, NNNNNNNNNNNNNNNNNNNN.wal, appended to with
// pwrite: no memory map, so a full disk is an error and never a SIGBUS. A
// record is
//
//	length  uint32 LE   payload length
//	crc     uint32 LE   CRC-32C of the segment number (uint64 LE) and the payload
//	payload
//
// Reading a segment stops at the first record that is short, has length 0
// or a wrong CRC: the torn tail of a write that never completed. The
// segment number inside the CRC keeps a record copied from one segment into
// another from ever reading as valid.
//
// The log keeps a checkpoint, the number of the first segment that
// [Log.Replay] reads: its owner moves it on once everything the segments
// below it say is durable elsewhere.
package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// HeaderSize is the size of a record's header.
const HeaderSize = 8

// MaxRecord is the largest payload a record can have.
const MaxRecord = 1 << 30

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrBroken is wrapped by Write's error when the log can no longer say what
// its segment holds, and by every Write and Rotate after it: a failed
// fdatasync (the kernel may have dropped the pages it could not write, or
// kept them in its cache marked clean), or a failed write that could not
// be cut back. Only a new Open, which reads what is there, writes again.
var ErrBroken = errors.New("what the disk holds of the segment is unknown")

// SyncFault, when set (by tests only), is called before each fdatasync of
// a segment by Write; an error it returns is that sync's.
var SyncFault func() error

// Pos is where a record's payload starts.
type Pos struct {
	Seg uint64 // segment number
	Off int64  // byte offset of the payload in the segment file
}

// Log is a directory of segments. Write, Rotate and Replay are called by
// one goroutine at a time; AppendAt, Remove, Segments and the checkpoint
// methods may be called from any goroutine.
type Log struct {
	dir     string
	segSize int64

	mu    sync.RWMutex
	files map[uint64]*os.File // every segment, open for reading; cur also for writing

	cur    *os.File
	curSeg uint64
	off    int64
	// zeroed is how far cur holds written zeros: segSize when it was a
	// spare, 0 otherwise. Write pads a group with zeros up to a page's end
	// within it (see Write).
	zeroed int64
	buf    []byte
	err    error // sticky: once a write or sync failed, what the disk holds is unknown

	ckMu sync.Mutex // serializes SetCheckpoint, whose temporary file has one name

	// A spare is a file of segment size whose blocks are already written
	// (zeros): an fdatasync after overwriting written blocks flushes data
	// only, while one after appending must also commit the filesystem's
	// journal, and costs about twice as much (measured on ext4). Rotate
	// renames the spare into the new segment; one is prepared in the
	// background once the current segment is half full.
	spareMu   sync.Mutex
	preparing bool
	prepWG    sync.WaitGroup
	stop      chan struct{}
}

const spareName = "spare"

// Open opens the log in dir, creating dir if needed. Writes go to a new
// segment once one exists: call [Log.Replay] (if wanted) and then
// [Log.Rotate] before the first [Log.Write]. A segment grows past segSize
// only by a single group bigger than it.
func Open(dir string, segSize int64) (*Log, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("write-ahead log: %w", err)
	}
	l := &Log{dir: dir, segSize: segSize, files: map[uint64]*os.File{}, stop: make(chan struct{})}
	os.Remove(filepath.Join(dir, spareName+".new")) // a preparation cut short
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("write-ahead log: %w", err)
	}
	for _, e := range entries {
		seg, ok := segNumber(e.Name())
		if !ok {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("write-ahead log: %w", err)
		}
		l.files[seg] = f
	}
	return l, nil
}

func segName(seg uint64) string { return fmt.Sprintf("%020d.wal", seg) }

func segNumber(name string) (uint64, bool) {
	s, ok := strings.CutSuffix(name, ".wal")
	if !ok || len(s) != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// Segments returns the numbers of the segments on disk, in order.
func (l *Log) Segments() []uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	segs := make([]uint64, 0, len(l.files))
	for s := range l.files {
		segs = append(segs, s)
	}
	slices.Sort(segs)
	return segs
}

// Replay calls fn, in order, with the position and payload of every record
// of the segments numbered from on. The payload is valid only during the
// call. Each segment is read up to its first invalid record.
func (l *Log) Replay(from uint64, fn func(Pos, []byte) error) error {
	for _, seg := range l.Segments() {
		if seg < from {
			continue
		}
		if err := l.replaySegment(seg, fn); err != nil {
			return err
		}
	}
	return nil
}

func (l *Log) replaySegment(seg uint64, fn func(Pos, []byte) error) error {
	l.mu.RLock()
	f := l.files[seg]
	l.mu.RUnlock()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("write-ahead log: %w", err)
	}
	size := fi.Size()
	var hdr [HeaderSize]byte
	var payload []byte
	for off := int64(0); off+HeaderSize <= size; {
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			return fmt.Errorf("write-ahead log: read segment %d: %w", seg, err)
		}
		n := int64(binary.LittleEndian.Uint32(hdr[:4]))
		if n == 0 || n > MaxRecord || off+HeaderSize+n > size {
			return nil
		}
		payload = slices.Grow(payload[:0], int(n))[:n]
		if _, err := f.ReadAt(payload, off+HeaderSize); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("write-ahead log: read segment %d: %w", seg, err)
		}
		if checksum(seg, payload) != binary.LittleEndian.Uint32(hdr[4:]) {
			return nil
		}
		if err := fn(Pos{Seg: seg, Off: off + HeaderSize}, payload); err != nil {
			return err
		}
		off += HeaderSize + n
	}
	return nil
}

func checksum(seg uint64, payload []byte) uint32 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seg)
	return crc32.Update(crc32.Checksum(b[:], crcTable), crcTable, payload)
}

// Rotate starts a new segment, numbered one above every segment on disk,
// and returns its number: every record written before is in a segment
// below it. The new file is durable in the directory before Rotate returns.
func (l *Log) Rotate() (uint64, error) {
	if l.err != nil {
		return 0, l.err
	}
	segs := l.Segments()
	next := uint64(1)
	if len(segs) > 0 {
		next = segs[len(segs)-1] + 1
	}
	name := filepath.Join(l.dir, segName(next))
	if _, err := os.Stat(name); err == nil {
		return 0, fmt.Errorf("write-ahead log: new segment: %s exists", name)
	}
	l.spareMu.Lock()
	err := os.Rename(filepath.Join(l.dir, spareName), name)
	l.spareMu.Unlock()
	zeroed := l.segSize
	if errors.Is(err, os.ErrNotExist) {
		zeroed, err = 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("write-ahead log: new segment: %w", err)
	}
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return 0, fmt.Errorf("write-ahead log: new segment: %w", err)
	}
	if err := syncDir(l.dir); err != nil {
		f.Close()
		return 0, fmt.Errorf("write-ahead log: new segment: %w", err)
	}
	l.mu.Lock()
	l.files[next] = f
	l.cur, l.curSeg, l.off, l.zeroed = f, next, 0, zeroed
	l.mu.Unlock()
	return next, nil
}

// Write appends recs to the current segment (rotating first when the group
// would take it past its size) with one write and one fdatasync, and
// returns where each payload starts. A group whose write or fdatasync
// failed is cut off the segment (truncated back to where it starts), so
// that no Open finds its records, from the disk or from the page cache:
// its writers were told it failed. After a failed fdatasync, or a failed
// write that could not be cut off, every later Write fails with an error
// wrapping [ErrBroken].
func (l *Log) Write(recs [][]byte) ([]Pos, error) {
	if l.err != nil {
		return nil, l.err
	}
	if l.cur == nil {
		return nil, errors.New("write-ahead log: no segment to write to: call Rotate first")
	}
	total := int64(0)
	for _, r := range recs {
		if len(r) == 0 || len(r) > MaxRecord {
			return nil, fmt.Errorf("write-ahead log: record of %d bytes", len(r))
		}
		total += HeaderSize + int64(len(r))
	}
	if l.off > 0 && l.off+total > l.segSize {
		if _, err := l.Rotate(); err != nil {
			return nil, err
		}
	}
	pos := make([]Pos, len(recs))
	buf := l.buf[:0]
	for i, r := range recs {
		pos[i] = Pos{Seg: l.curSeg, Off: l.off + int64(len(buf)) + HeaderSize}
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(r)))
		buf = binary.LittleEndian.AppendUint32(buf, checksum(l.curSeg, r))
		buf = append(buf, r...)
	}
	n := int64(len(buf))
	// In a spare, the group's last page is written whole, the rest of it
	// with the zeros that are there already: the spare was written past
	// the page cache (writeSpare), and a page written in part that is not
	// in the cache is read from the disk first, in the commit's path.
	if end := l.off + n; end%pageSize != 0 && end < l.zeroed {
		buf = append(buf, zeroPage[:min(pageSize-end%pageSize, l.zeroed-end)]...)
	}
	if cap(buf) <= 8<<20 {
		l.buf = buf
	}
	if _, err := l.cur.WriteAt(buf, l.off); err != nil {
		// Not sticky: the next group is written at the same offset (a disk
		// that was full may have room again). Whole records of this group
		// that reached the file are cut off: left there, one behind a next
		// group of the same size would be replayed after it, out of order.
		// Until the next group's fdatasync makes the cut durable, a crash
		// may leave them on the disk: an error here is "maybe written", as
		// a timeout is, and no later record is applied before that sync.
		err = fmt.Errorf("write-ahead log: write segment %d: %w", l.curSeg, err)
		if cerr := l.cutBack(); cerr != nil {
			l.err = fmt.Errorf("%w; cutting the group off failed: %w (%w)", err, cerr, ErrBroken)
			return nil, l.err
		}
		return nil, err
	}
	if err := l.syncCur(); err != nil {
		l.err = fmt.Errorf("write-ahead log: sync segment %d: %w (%w)", l.curSeg, err, ErrBroken)
		// The group's pages may stay in the page cache, marked clean: a
		// restart on this boot would replay them, from memory, and a later
		// read (after a reboot) find whatever the disk has.
		cerr := l.cutBack()
		if cerr == nil {
			cerr = fdatasync(l.cur)
		}
		if cerr != nil {
			l.err = fmt.Errorf("%w; cutting the group off failed too (%w): the next start may apply its records from memory", l.err, cerr)
		}
		return nil, l.err
	}
	l.off += n
	if l.off > l.segSize/2 {
		l.prepareSpare()
	}
	return pos, nil
}

// cutBack truncates the current segment to the end of its last group
// written and synced, which drops from the page cache what a failed write
// left after it. A spare's zeros past that end go with it.
func (l *Log) cutBack() error {
	if err := l.cur.Truncate(l.off); err != nil {
		return err
	}
	l.zeroed = min(l.zeroed, l.off)
	return nil
}

// prepareSpare starts writing a spare in the background unless one is
// there or on its way.
func (l *Log) prepareSpare() {
	l.spareMu.Lock()
	defer l.spareMu.Unlock()
	if l.preparing {
		return
	}
	if _, err := os.Stat(filepath.Join(l.dir, spareName)); err == nil {
		return
	}
	l.preparing = true
	l.prepWG.Add(1)
	go func() {
		defer l.prepWG.Done()
		err := l.writeSpare()
		l.spareMu.Lock()
		l.preparing = false
		l.spareMu.Unlock()
		if err != nil {
			os.Remove(filepath.Join(l.dir, spareName+".new"))
		}
	}()
}

// writeSpare writes segSize zeros to a new file and renames it to the
// spare. It syncs each chunk as it goes: a device flush waits for every
// write queued before it, so one fdatasync of the whole segment at the end
// would hold the log's own fdatasync (every group commit's) behind 64 MiB
// of zeros, ~70–90 ms on the machines of docs/performance.md; a chunk at a
// time it waits behind at most one chunk.
//
// The zeros go past the page cache (O_DIRECT) where the file system takes
// it: copied into the cache they cost ~110 ms of CPU per 64 MiB segment,
// 6–7% of the daemon under load, for pages nothing reads; direct, ~13 ms
// (docs/performance.md, "Twentieth round"). Write pads its groups to
// whole pages, so that the pages the cache lacks are never read.
func (l *Log) writeSpare() error {
	tmp := filepath.Join(l.dir, spareName+".new")
	if err := l.writeZeros(tmp, unix.O_DIRECT); err != nil {
		// No direct I/O on this file system (tmpfs), or not at this
		// size (a segment that is no whole number of blocks).
		if err := l.writeZeros(tmp, 0); err != nil {
			return err
		}
	}
	l.spareMu.Lock()
	defer l.spareMu.Unlock()
	return os.Rename(tmp, filepath.Join(l.dir, spareName))
}

// pageSize is the page cache's unit, zeroPage a page of zeros.
var (
	pageSize = int64(os.Getpagesize())
	zeroPage = make([]byte, pageSize)
)

// writeZeros writes segSize zeros to a new file at path, opened with the
// extra flags given, a chunk at a time, each chunk synced.
func (l *Log) writeZeros(path string, flags int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|flags, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	// Direct I/O wants the memory aligned to the device's block, at most
	// a page: a slice of a larger allocation is.
	const chunk = 1 << 20
	b := make([]byte, chunk+pageSize)
	skip := int64(-uintptr(unsafe.Pointer(unsafe.SliceData(b)))) & (pageSize - 1)
	zeros := b[skip : skip+chunk]
	for off := int64(0); off < l.segSize; off += int64(len(zeros)) {
		select {
		case <-l.stop:
			return errors.New("closed")
		default:
		}
		if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), l.segSize-off)], off); err != nil {
			return err
		}
		if err := fdatasync(f); err != nil {
			return err
		}
	}
	return nil
}

// AppendAt appends the n bytes at p, a position [Log.Write] or
// [Log.Replay] gave, to dst and returns the result, so that a caller can
// reuse a buffer.
func (l *Log) AppendAt(dst []byte, p Pos, n int) ([]byte, error) {
	if n < 0 {
		return dst, fmt.Errorf("write-ahead log: read segment %d at %d: negative length %d", p.Seg, p.Off, n)
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	f, ok := l.files[p.Seg]
	if !ok {
		return dst, fmt.Errorf("write-ahead log: segment %d is gone", p.Seg)
	}
	start := len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	if _, err := f.ReadAt(dst[start:], p.Off); err != nil {
		return dst[:start], fmt.Errorf("write-ahead log: read segment %d at %d: %w", p.Seg, p.Off, err)
	}
	return dst, nil
}

// Remove deletes the segments numbered below below, never the newest one
// (the current one once [Log.Rotate] was called), and returns how many it
// deleted. Keeping the newest keeps Rotate numbering new segments above
// every segment removed, so that no position or checkpoint ever names a
// number used again.
func (l *Log) Remove(below uint64) (int, error) {
	var doomed []uint64
	segs := l.Segments()
	for i, s := range segs {
		if s < below && i < len(segs)-1 {
			doomed = append(doomed, s)
		}
	}
	for i, s := range doomed {
		l.mu.Lock()
		f := l.files[s]
		delete(l.files, s)
		l.mu.Unlock()
		f.Close()
		if err := os.Remove(filepath.Join(l.dir, segName(s))); err != nil {
			return i, fmt.Errorf("write-ahead log: %w", err)
		}
	}
	return len(doomed), nil
}

// Current returns the number of the segment written to; 0 before the
// first Rotate.
func (l *Log) Current() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.cur == nil {
		return 0
	}
	return l.curSeg
}

const checkpointFile = "checkpoint"

// Checkpoint returns the first segment Replay reads: 0 (every segment)
// when none was set.
func (l *Log) Checkpoint() (uint64, error) {
	b, err := os.ReadFile(filepath.Join(l.dir, checkpointFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("write-ahead log: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("write-ahead log: corrupt %s: %q", filepath.Join(l.dir, checkpointFile), b)
	}
	return n, nil
}

// SetCheckpoint durably records that Replay starts at segment seg.
func (l *Log) SetCheckpoint(seg uint64) error {
	l.ckMu.Lock()
	defer l.ckMu.Unlock()
	tmp := filepath.Join(l.dir, checkpointFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write-ahead log: checkpoint: %w", err)
	}
	_, err = f.WriteString(strconv.FormatUint(seg, 10) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(l.dir, checkpointFile))
	}
	if err == nil {
		err = syncDir(l.dir)
	}
	if err != nil {
		return fmt.Errorf("write-ahead log: checkpoint: %w", err)
	}
	return nil
}

// Close closes every segment file.
func (l *Log) Close() error {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.prepWG.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	var first error
	for s, f := range l.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
		delete(l.files, s)
	}
	l.cur = nil
	if l.err == nil {
		l.err = errors.New("write-ahead log: closed")
	}
	return first
}

// syncCur syncs the current segment's data, or fails as SyncFault says.
func (l *Log) syncCur() error {
	if SyncFault != nil {
		if err := SyncFault(); err != nil {
			return err
		}
	}
	return fdatasync(l.cur)
}

func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

// syncDir makes the directory's entries (files created, renamed, removed)
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// SyncFiles fsyncs every regular file in dir (not below it) and then dir
// itself. A file removed meanwhile is skipped. Each file's dirty pages are
// written back a chunk at a time first (see writeBack).
func SyncFiles(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		err = writeBack(f)
		if err == nil {
			err = f.Sync()
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("sync %s: %w", filepath.Join(dir, e.Name()), err)
		}
	}
	return syncDir(dir)
}

// writeBackChunk is how much of a file writeBack hands the disk at a time.
const writeBackChunk = 1 << 20

// writeBack writes f's dirty pages back writeBackChunk bytes at a time,
// waiting for each chunk, so that the fsync that follows finds little to
// write. A checkpoint fsyncs Badger's files, whose memory-mapped memtables
// can hold tens of MiB of dirty pages: written back in one go they queue
// ahead of the log's own fdatasync and stall every group commit behind
// them (a 117–140 ms fsync, seen with perf trace).
//
// An I/O error it meets is returned: the kernel reports a write-back error
// once per open file, to whichever call waits on it first, so the fsync
// after this would not see it. A file system without sync_file_range
// leaves the whole job to the fsync.
func writeBack(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	fd := int(f.Fd())
	for off := int64(0); off < st.Size(); off += writeBackChunk {
		err := unix.SyncFileRange(fd, off, writeBackChunk, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
		switch {
		case err == nil:
		case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ESPIPE), errors.Is(err, unix.EOPNOTSUPP):
			return nil
		default:
			return err
		}
	}
	return nil
}
