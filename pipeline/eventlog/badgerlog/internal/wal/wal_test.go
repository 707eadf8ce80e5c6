package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rec is a record as Replay yields it, with the payload copied.
type rec struct {
	Pos  Pos
	Data string
}

// openLog opens the log in dir and closes it when the test ends.
func openLog(t testing.TB, dir string, segSize int64) *Log {
	t.Helper()
	l, err := Open(dir, segSize)
	if err != nil {
		t.Fatalf("Open(%q, %d) = %v", dir, segSize, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// newLog opens a log in a fresh directory and rotates to its first
// segment, so that it is ready for Write.
func newLog(t testing.TB, segSize int64) (*Log, string) {
	t.Helper()
	dir := t.TempDir()
	l := openLog(t, dir, segSize)
	if got := l.Current(); got != 0 {
		t.Fatalf("Current() before Rotate = %d, want 0", got)
	}
	if seg, err := l.Rotate(); err != nil || seg != 1 || l.Current() != 1 {
		t.Fatalf("Rotate() = %d, %v, Current() = %d, want 1, nil, 1", seg, err, l.Current())
	}
	return l, dir
}

// write writes each group with one Write and returns its records, with
// the positions Write gave, as Replay should yield them.
func write(t testing.TB, l *Log, groups ...[]string) []rec {
	t.Helper()
	var out []rec
	for _, g := range groups {
		recs := make([][]byte, len(g))
		for i, s := range g {
			recs[i] = []byte(s)
		}
		pos, err := l.Write(recs)
		if err != nil {
			t.Fatalf("Write(%d records) = %v", len(g), err)
		}
		if len(pos) != len(g) {
			t.Fatalf("Write(%d records) returned %d positions", len(g), len(pos))
		}
		for i, s := range g {
			out = append(out, rec{pos[i], s})
		}
	}
	return out
}

// replay returns every record Replay(from) yields and fails the test if
// Replay returns an error.
func replay(t testing.TB, l *Log, from uint64) []rec {
	t.Helper()
	var got []rec
	err := l.Replay(from, func(p Pos, b []byte) error {
		got = append(got, rec{p, string(b)})
		return nil
	})
	if err != nil {
		t.Fatalf("Replay(%d) = %v", from, err)
	}
	return got
}

// checkRecords checks recs against file, the content of segment seg: the
// records tile the file from its start, and each has a nonzero length, its
// header's length and a correct checksum, and lies wholly in the file.
func checkRecords(t testing.TB, seg uint64, file []byte, recs []rec) {
	t.Helper()
	off := int64(HeaderSize)
	for i, r := range recs {
		n := int64(len(r.Data))
		switch {
		case r.Pos != Pos{Seg: seg, Off: off}:
			t.Fatalf("record %d at %v, want %v", i, r.Pos, Pos{Seg: seg, Off: off})
		case n == 0:
			t.Fatalf("record %d at %v is empty", i, r.Pos)
		case off+n > int64(len(file)):
			t.Fatalf("record %d at %v: %d bytes past the end of a %d-byte file", i, r.Pos, n, len(file))
		case int64(binary.LittleEndian.Uint32(file[off-8:])) != n:
			t.Fatalf("record %d at %v: %d bytes, header says %d", i, r.Pos, n, binary.LittleEndian.Uint32(file[off-8:]))
		case binary.LittleEndian.Uint32(file[off-4:]) != checksum(seg, []byte(r.Data)):
			t.Fatalf("record %d at %v: checksum(%d, payload) = %#x, header has %#x", i, r.Pos, seg, checksum(seg, []byte(r.Data)), binary.LittleEndian.Uint32(file[off-4:]))
		case string(file[off:off+n]) != r.Data:
			t.Fatalf("record %d at %v: payload differs from the file", i, r.Pos)
		}
		off += n + HeaderSize
	}
}

func segPath(dir string, seg uint64) string { return filepath.Join(dir, segName(seg)) }

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		groups [][]string
	}{
		{"one record", [][]string{{"a"}}},
		{"one group", [][]string{{"alpha", "beta", "gamma"}}},
		{"several groups", [][]string{{"alpha"}, {"beta", "gamma"}, {"delta", "epsilon", "zeta"}}},
		{"binary payloads", [][]string{{"\x00", "\x00\x00\x00\x00\x00\x00\x00\x00"}, {"\xff\xfe\x00\x01"}}},
		{"large record", [][]string{{strings.Repeat("x", 100_000)}, {"y"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, dir := newLog(t, 1<<20)
			want := write(t, l, tt.groups...)
			checkRecords(t, 1, readFile(t, segPath(dir, 1)), want)
			for _, r := range want {
				b, err := l.AppendAt(nil, r.Pos, len(r.Data))
				if err != nil || string(b) != r.Data {
					t.Errorf("AppendAt(nil, %v, %d) = %.20q, %v, want %.20q, nil", r.Pos, len(r.Data), b, err, r.Data)
				}
			}
			if got := replay(t, l, 0); !slices.Equal(got, want) {
				t.Errorf("Replay(0) = %.200v, want %.200v", got, want)
			}

			if err := l.Close(); err != nil {
				t.Fatalf("Close() = %v", err)
			}
			l = openLog(t, dir, 1<<20)
			if got := replay(t, l, 0); !slices.Equal(got, want) {
				t.Errorf("after reopen, Replay(0) = %.200v, want %.200v", got, want)
			}
		})
	}
}

func TestTornTail(t *testing.T) {
	// Segment 1 stays whole; the damage is to the tail of segment 2.
	seg1 := []string{"one", "two"}
	seg2 := [][]string{{"alpha", "beta-beta"}, {"gamma", "delta-delta-delta"}}
	garbage := make([]byte, 4096)
	rand.NewChaCha8([32]byte{1}).Read(garbage)

	tests := []struct {
		name string
		lost int // records lost at the end
		// damage damages the file at p, where the first lost record's
		// payload starts (the last record's when none is lost).
		damage func(file []byte, p Pos) []byte
	}{
		{"truncated in payload", 1, func(b []byte, p Pos) []byte { return b[:p.Off+5] }},
		{"truncated after header", 1, func(b []byte, p Pos) []byte { return b[:p.Off] }},
		{"truncated in header", 1, func(b []byte, p Pos) []byte { return b[:p.Off-HeaderSize+3] }},
		{"truncated in length", 1, func(b []byte, p Pos) []byte { return b[:p.Off-HeaderSize+1] }},
		{"payload byte flipped", 1, func(b []byte, p Pos) []byte { b[p.Off+7] ^= 0x01; return b }},
		{"checksum byte flipped", 1, func(b []byte, p Pos) []byte { b[p.Off-1] ^= 0x80; return b }},
		{"length one too long", 1, func(b []byte, p Pos) []byte { b[p.Off-HeaderSize]++; return b }},
		{"length one too short", 1, func(b []byte, p Pos) []byte { b[p.Off-HeaderSize]--; return b }},
		{"earlier record flipped", 2, func(b []byte, p Pos) []byte { b[p.Off+2] ^= 0x01; return b }},
		{"earlier record zeroed", 3, func(b []byte, p Pos) []byte {
			clear(b[p.Off-HeaderSize : p.Off+5])
			return b
		}},
		{"zeros appended", 0, func(b []byte, _ Pos) []byte { return append(b, make([]byte, 4096)...) }},
		{"garbage appended", 0, func(b []byte, _ Pos) []byte { return append(b, garbage...) }},
		{"record with a wrong checksum appended", 0, func(b []byte, _ Pos) []byte {
			return append(b, 5, 0, 0, 0, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o')
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, dir := newLog(t, 1<<20)
			want := write(t, l, seg1)
			if _, err := l.Rotate(); err != nil {
				t.Fatalf("Rotate() = %v", err)
			}
			want = append(want, write(t, l, seg2...)...)
			l.Close()
			name := segPath(dir, 2)
			writeFile(t, name, tt.damage(readFile(t, name), want[len(want)-max(tt.lost, 1)].Pos))
			want = want[:len(want)-tt.lost]

			l = openLog(t, dir, 1<<20)
			if got := replay(t, l, 0); !slices.Equal(got, want) {
				t.Fatalf("Replay(0) = %v, want %v", got, want)
			}
			// The log goes on in a new segment after the torn one.
			if seg, err := l.Rotate(); err != nil || seg != 3 {
				t.Fatalf("Rotate() = %d, %v, want 3, nil", seg, err)
			}
			want = append(want, write(t, l, []string{"epsilon"})...)
			if got := replay(t, l, 0); !slices.Equal(got, want) {
				t.Errorf("after a new write, Replay(0) = %v, want %v", got, want)
			}
		})
	}
}

func TestRecordCopiedToAnotherSegment(t *testing.T) {
	l, dir := newLog(t, 1<<20)
	want := write(t, l, []string{"payload"})
	if _, err := l.Rotate(); err != nil {
		t.Fatalf("Rotate() = %v", err)
	}
	l.Close()
	b := readFile(t, segPath(dir, 1))
	writeFile(t, segPath(dir, 2), b)

	l = openLog(t, dir, 1<<20)
	if got := replay(t, l, 0); !slices.Equal(got, want) {
		t.Errorf("with segment 1 copied into segment 2, Replay(0) = %v, want %v", got, want)
	}

	// The same bytes with segment 2's checksum are valid there: what made
	// the copy invalid is the segment number.
	l.Close()
	binary.LittleEndian.PutUint32(b[4:], checksum(2, []byte("payload")))
	writeFile(t, segPath(dir, 2), b)
	l = openLog(t, dir, 1<<20)
	want = append(want, rec{Pos{Seg: 2, Off: HeaderSize}, "payload"})
	if got := replay(t, l, 0); !slices.Equal(got, want) {
		t.Errorf("with the checksum made for segment 2, Replay(0) = %v, want %v", got, want)
	}
}

func TestRotateBySize(t *testing.T) {
	const segSize = 256
	tests := []struct {
		name   string
		groups [][]int  // payload sizes of each group's records
		segs   []uint64 // the segment each group goes to
	}{
		{"fits in one segment", [][]int{{10}, {10}, {10, 10}}, []uint64{1, 1, 1}},
		{"rotates when full", [][]int{{100}, {100}, {100}, {100}, {100}}, []uint64{1, 1, 2, 2, 3}},
		{"fills a segment exactly", [][]int{{120}, {120}, {1}}, []uint64{1, 1, 2}},
		{"big group after others", [][]int{{10}, {300}, {10}}, []uint64{1, 2, 3}},
		{"big group first", [][]int{{300}, {10}}, []uint64{1, 2}},
		{"big group of small records", [][]int{{10}, {50, 50, 50, 50, 50}, {10}}, []uint64{1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, dir := newLog(t, segSize)
			var want []rec
			wantSize := map[uint64]int64{}
			c := 'a'
			for i, sizes := range tt.groups {
				g := make([]string, len(sizes))
				for j, n := range sizes {
					g[j] = strings.Repeat(string(c), n)
					c++
					wantSize[tt.segs[i]] += HeaderSize + int64(n)
				}
				recs := write(t, l, g)
				for _, r := range recs {
					if r.Pos.Seg != tt.segs[i] {
						t.Errorf("group %d: Write gave %v, want segment %d", i, r.Pos, tt.segs[i])
					}
					b, err := l.AppendAt(nil, r.Pos, len(r.Data))
					if err != nil || string(b) != r.Data {
						t.Errorf("AppendAt(nil, %v, %d) = %.20q, %v, want %.20q, nil", r.Pos, len(r.Data), b, err, r.Data)
					}
				}
				want = append(want, recs...)
			}

			last := tt.segs[len(tt.segs)-1]
			var wantSegs []uint64
			for s := uint64(1); s <= last; s++ {
				wantSegs = append(wantSegs, s)
				// A segment made from a spare is longer, its tail zeros.
				b, err := os.ReadFile(segPath(dir, s))
				if err != nil || int64(len(b)) < wantSize[s] || bytes.ContainsFunc(b[wantSize[s]:], func(r rune) bool { return r != 0 }) {
					t.Errorf("segment %d: size %d, %v, want %d written bytes and zeros after them", s, len(b), err, wantSize[s])
				}
			}
			if got := l.Segments(); !slices.Equal(got, wantSegs) {
				t.Errorf("Segments() = %v, want %v", got, wantSegs)
			}
			if got := l.Current(); got != last {
				t.Errorf("Current() = %d, want %d", got, last)
			}
			if got := replay(t, l, 0); !slices.Equal(got, want) {
				t.Errorf("Replay(0) = %.300v, want %.300v", got, want)
			}
		})
	}
}

// threeSegments returns a log with two records in each of segments 1, 2
// and 3, writing to segment 3, and the records.
func threeSegments(t testing.TB) (*Log, string, []rec) {
	t.Helper()
	l, dir := newLog(t, 1<<20)
	var all []rec
	for s := range 3 {
		if s > 0 {
			if _, err := l.Rotate(); err != nil {
				t.Fatalf("Rotate() = %v", err)
			}
		}
		all = append(all, write(t, l, []string{fmt.Sprint("first of ", s+1), fmt.Sprint("second of ", s+1)})...)
	}
	return l, dir, all
}

// inSegments returns the records of recs in segments from segs.
func inSegments(recs []rec, segs ...uint64) []rec {
	var out []rec
	for _, r := range recs {
		if slices.Contains(segs, r.Pos.Seg) {
			out = append(out, r)
		}
	}
	return out
}

func TestReplayFrom(t *testing.T) {
	tests := []struct {
		from uint64
		segs []uint64
	}{
		{0, []uint64{1, 2, 3}},
		{1, []uint64{1, 2, 3}},
		{2, []uint64{2, 3}},
		{3, []uint64{3}},
		{4, nil},
	}
	l, _, all := threeSegments(t)
	for _, tt := range tests {
		t.Run(fmt.Sprint("from ", tt.from), func(t *testing.T) {
			if got, want := replay(t, l, tt.from), inSegments(all, tt.segs...); !slices.Equal(got, want) {
				t.Errorf("Replay(%d) = %v, want %v", tt.from, got, want)
			}
		})
	}
}

func TestReplayStopsAtError(t *testing.T) {
	l, _, _ := threeSegments(t)
	calls := 0
	errStop := errors.New("stop")
	err := l.Replay(0, func(Pos, []byte) error {
		calls++
		if calls == 3 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) || calls != 3 {
		t.Errorf("Replay(0, fn failing on call 3) = %v after %d calls, want %v after 3", err, calls, errStop)
	}
}

func TestRemove(t *testing.T) {
	tests := []struct {
		below uint64
		n     int
		kept  []uint64
	}{
		{0, 0, []uint64{1, 2, 3}},
		{1, 0, []uint64{1, 2, 3}},
		{2, 1, []uint64{2, 3}},
		{3, 2, []uint64{3}},
		{100, 2, []uint64{3}}, // never the current segment
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint("below ", tt.below), func(t *testing.T) {
			l, dir, all := threeSegments(t)
			n, err := l.Remove(tt.below)
			if err != nil || n != tt.n {
				t.Fatalf("Remove(%d) = %d, %v, want %d, nil", tt.below, n, err, tt.n)
			}
			if got := l.Segments(); !slices.Equal(got, tt.kept) {
				t.Errorf("Segments() = %v, want %v", got, tt.kept)
			}
			for _, r := range all {
				b, err := l.AppendAt(nil, r.Pos, len(r.Data))
				_, statErr := os.Stat(segPath(dir, r.Pos.Seg))
				switch {
				case slices.Contains(tt.kept, r.Pos.Seg):
					if err != nil || string(b) != r.Data {
						t.Errorf("AppendAt(nil, %v, %d) = %q, %v, want %q, nil", r.Pos, len(r.Data), b, err, r.Data)
					}
					if statErr != nil {
						t.Errorf("kept segment %d: %v", r.Pos.Seg, statErr)
					}
				default:
					if want := fmt.Sprint("segment ", r.Pos.Seg); err == nil || !strings.Contains(err.Error(), want) {
						t.Errorf("AppendAt(nil, %v, %d) = %q, %v, want an error containing %q", r.Pos, len(r.Data), b, err, want)
					}
					if !os.IsNotExist(statErr) {
						t.Errorf("removed segment %d: Stat() = %v, want not exist", r.Pos.Seg, statErr)
					}
				}
			}
			if got, want := replay(t, l, 0), inSegments(all, tt.kept...); !slices.Equal(got, want) {
				t.Errorf("Replay(0) = %v, want %v", got, want)
			}
		})
	}
}

// After a restart, a Remove before the first Rotate must not let Rotate
// reuse the numbers of the removed segments: the checkpoint points past
// them, and what is written next must be replayed from it.
func TestRemoveBeforeRotate(t *testing.T) {
	l, dir, all := threeSegments(t)
	l.Close()

	l = openLog(t, dir, 1<<20)
	replay(t, l, 0)
	if err := l.SetCheckpoint(4); err != nil {
		t.Fatalf("SetCheckpoint(4) = %v", err)
	}
	if _, err := l.Remove(4); err != nil {
		t.Fatalf("Remove(4) = %v", err)
	}
	seg, err := l.Rotate()
	if err != nil || seg <= 3 {
		t.Fatalf("Rotate() after Remove(4) = %d, %v, want a segment above 3", seg, err)
	}
	want := write(t, l, []string{"after restart"})
	if _, err := l.AppendAt(nil, all[0].Pos, len(all[0].Data)); err == nil {
		t.Errorf("AppendAt(nil, %v) of a removed record succeeded", all[0].Pos)
	}
	l.Close()

	l = openLog(t, dir, 1<<20)
	cp, err := l.Checkpoint()
	if err != nil {
		t.Fatalf("Checkpoint() = %v", err)
	}
	if got := replay(t, l, cp); !slices.Equal(got, want) {
		t.Errorf("Replay(Checkpoint() = %d) = %v, want %v", cp, got, want)
	}
}

func TestReadAtErrors(t *testing.T) {
	l, _ := newLog(t, 1<<20)
	r := write(t, l, []string{"payload"})[0]
	tests := []struct {
		name string
		pos  Pos
		n    int
	}{
		{"unknown segment", Pos{Seg: 2, Off: HeaderSize}, 1},
		{"past the end", r.Pos, len(r.Data) + 1},
		{"negative length", r.Pos, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := l.AppendAt(nil, tt.pos, tt.n); err == nil {
				t.Errorf("AppendAt(nil, %v, %d) = %q, nil, want an error", tt.pos, tt.n, b)
			}
		})
	}
}

func TestCheckpoint(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, 1<<20)
	if cp, err := l.Checkpoint(); err != nil || cp != 0 {
		t.Errorf("Checkpoint() of a new log = %d, %v, want 0, nil", cp, err)
	}
	for _, seg := range []uint64{7, 1234567, 3} {
		if err := l.SetCheckpoint(seg); err != nil {
			t.Fatalf("SetCheckpoint(%d) = %v", seg, err)
		}
		if cp, err := l.Checkpoint(); err != nil || cp != seg {
			t.Errorf("Checkpoint() after SetCheckpoint(%d) = %d, %v, want %d, nil", seg, cp, err, seg)
		}
	}
	l.Close()
	l = openLog(t, dir, 1<<20)
	if cp, err := l.Checkpoint(); err != nil || cp != 3 {
		t.Errorf("Checkpoint() after reopen = %d, %v, want 3, nil", cp, err)
	}
}

func TestCheckpointCorrupt(t *testing.T) {
	for _, content := range []string{"", "\n", "seven\n", "-1\n", "7 8\n", "18446744073709551616\n"} {
		t.Run(fmt.Sprintf("%q", content), func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, dir, 1<<20)
			name := filepath.Join(dir, checkpointFile)
			writeFile(t, name, []byte(content))
			if cp, err := l.Checkpoint(); err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("Checkpoint() = %d, %v, want an error naming %s", cp, err, name)
			}
		})
	}
}

func TestSetCheckpointConcurrently(t *testing.T) {
	l, _ := newLog(t, 1<<20)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			// Numbers of different lengths, so that a torn mix shows.
			seg := uint64(1)
			for range 2 * i {
				seg *= 10
			}
			for range 50 {
				if err := l.SetCheckpoint(seg); err != nil {
					t.Errorf("SetCheckpoint(%d) = %v", seg, err)
					return
				}
				if _, err := l.Checkpoint(); err != nil {
					t.Errorf("Checkpoint() = %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestWriteErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*Log) error
		recs  [][]byte
		want  string // in the error
	}{
		{"before Rotate", func(*Log) error { return nil }, [][]byte{[]byte("a")}, "call Rotate"},
		{"empty record", rotate, [][]byte{{}}, "record of 0 bytes"},
		{"empty record in a group", rotate, [][]byte{[]byte("a"), nil, []byte("b")}, "record of 0 bytes"},
		{"after Close", func(l *Log) error { rotate(l); return l.Close() }, [][]byte{[]byte("a")}, "closed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, dir, 1<<20)
			if err := tt.setup(l); err != nil {
				t.Fatal(err)
			}
			if pos, err := l.Write(tt.recs); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Write() = %v, %v, want an error containing %q", pos, err, tt.want)
			}
			l.Close()
			l = openLog(t, dir, 1<<20)
			if got := replay(t, l, 0); len(got) != 0 {
				t.Errorf("Replay(0) after a failed Write = %v, want nothing", got)
			}
		})
	}
}

func rotate(l *Log) error {
	_, err := l.Rotate()
	return err
}

// Readers and Remove run while a writer writes: ReadAt gives the payload
// or, once its segment is removed, an error; never anything else.
func TestConcurrentReaders(t *testing.T) {
	l, _ := newLog(t, 256)
	written := make(chan rec, 1000)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(written)
		for i := range 300 {
			data := fmt.Sprint("record ", i)
			pos, err := l.Write([][]byte{[]byte(data)})
			if err != nil {
				t.Errorf("Write() = %v", err)
				return
			}
			written <- rec{pos[0], data}
		}
	})
	var seen []rec
	for r := range written {
		seen = append(seen, r)
		segs := l.Segments()
		if len(segs) > 3 {
			if _, err := l.Remove(segs[len(segs)-3]); err != nil {
				t.Errorf("Remove(%d) = %v", segs[len(segs)-3], err)
			}
		}
		for _, r := range seen[max(0, len(seen)-20):] {
			b, err := l.AppendAt(nil, r.Pos, len(r.Data))
			if err != nil && !strings.Contains(err.Error(), "is gone") || err == nil && string(b) != r.Data {
				t.Fatalf("AppendAt(nil, %v, %d) = %q, %v, want %q or the segment gone", r.Pos, len(r.Data), b, err, r.Data)
			}
		}
	}
	wg.Wait()
}

func TestSyncFiles(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string) string // returns the directory to sync
		wantErr bool
	}{
		{"files and a subdirectory", func(t *testing.T, dir string) string {
			writeFile(t, filepath.Join(dir, "a"), []byte("a"))
			writeFile(t, filepath.Join(dir, segName(1)), []byte("segment"))
			if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, "sub", "b"), []byte("b"))
			return dir
		}, false},
		{"empty", func(t *testing.T, dir string) string { return dir }, false},
		{"missing", func(t *testing.T, dir string) string { return filepath.Join(dir, "missing") }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.setup(t, t.TempDir())
			if err := SyncFiles(dir); (err != nil) != tt.wantErr {
				t.Errorf("SyncFiles(%q) = %v, want error %t", dir, err, tt.wantErr)
			}
		})
	}
}

// validSegment returns the content of segment 1 of a log with one group of
// payloads written to it.
func validSegment(t testing.TB, payloads ...string) []byte {
	t.Helper()
	l, dir := newLog(t, 1<<30)
	write(t, l, payloads)
	l.Close()
	return readFile(t, segPath(dir, 1))
}

// FuzzReplay replays data as a segment on its own and after a valid
// prefix: the records of recs, one a line, written by Write.
func FuzzReplay(f *testing.F) {
	valid := validSegment(f, "alpha", "beta", "gamma")
	flipped := slices.Clone(valid)
	flipped[len(flipped)-1] ^= 1
	f.Add("alpha\nbeta\ngamma", valid)
	f.Add("one", valid[:len(valid)-2])
	f.Add("", valid[:HeaderSize+3])
	f.Add("x\ny", flipped)
	f.Add("zeros", make([]byte, 64))
	f.Add("", []byte{})
	f.Add("a", []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 'x'})

	f.Fuzz(func(t *testing.T, recs string, data []byte) {
		// data alone as segment 1.
		dir := t.TempDir()
		writeFile(t, segPath(dir, 1), data)
		l := openLog(t, dir, 1<<30)
		checkRecords(t, 1, data, replay(t, l, 0))

		// data after the records of recs.
		var payloads []string
		for p := range strings.SplitSeq(recs, "\n") {
			if p != "" {
				payloads = append(payloads, p)
			}
		}
		l, dir = newLog(t, 1<<30)
		want := write(t, l, payloads)
		l.Close()
		name := segPath(dir, 1)
		file := append(readFile(t, name), data...)
		writeFile(t, name, file)
		l = openLog(t, dir, 1<<30)
		got := replay(t, l, 0)
		if len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
			t.Fatalf("Replay(0) = %.300v, want it to start with %.300v", got, want)
		}
		checkRecords(t, 1, file, got)
	})
}

// Once a segment is half full, a spare of segment size is written, and
// the next segment is that spare: written blocks, zeros after the records.
func TestSpareBecomesTheNextSegment(t *testing.T) {
	const segSize = 4 << 10
	l, dir := newLog(t, segSize)
	first := write(t, l, []string{strings.Repeat("a", segSize/2)})
	deadline := time.Now().Add(10 * time.Second)
	for {
		fi, err := os.Stat(filepath.Join(dir, spareName))
		if err == nil && fi.Size() == segSize {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no spare of %d bytes after the segment passed half full: %v", segSize, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Does not fit, so it rotates; and it leaves segment 2 under half
	// full, so that no new spare is on its way when the test looks.
	second := write(t, l, []string{strings.Repeat("b", segSize/2-10)})
	if second[0].Pos.Seg != 2 {
		t.Fatalf("second record in segment %d, want 2", second[0].Pos.Seg)
	}
	if fi, err := os.Stat(segPath(dir, 2)); err != nil || fi.Size() != segSize {
		t.Fatalf("segment 2 is not the spare: %v, %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dir, spareName)); !os.IsNotExist(err) {
		t.Fatalf("the spare is still there after Rotate took it: %v", err)
	}
	if got := replay(t, l, 0); !slices.Equal(got, append(first, second...)) {
		t.Fatalf("Replay = %d records, want the 2 written", len(got))
	}
}

// waitSpare waits until the spare is there, whole.
func waitSpare(t testing.TB, dir string, segSize int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		fi, err := os.Stat(filepath.Join(dir, spareName))
		if err == nil && fi.Size() == segSize {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no spare of %d bytes: %v", segSize, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cachedPages counts the pages of the file at name in the page cache.
func cachedPages(t testing.TB, name string) int {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (fi.Size()+pageSize-1)/pageSize)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(m))), uintptr(len(m)), uintptr(unsafe.Pointer(unsafe.SliceData(vec)))); e != 0 {
		t.Fatalf("mincore: %v", e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// readBytes is what this process has read from storage so far.
func readBytes(t testing.TB) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Skipf("no I/O accounting: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "read_bytes: "); ok {
			var n int64
			fmt.Sscan(v, &n)
			return n
		}
	}
	t.Skip("no read_bytes in /proc/self/io")
	return 0
}

// The spare's zeros are written past the page cache, and the groups
// written into it are padded to whole pages, so that no commit waits for
// a page read from the disk: without the padding, each group's last page
// is read first.
func TestSpareIsNeverReadBack(t *testing.T) {
	const segSize = 1 << 20
	l, dir := newLog(t, segSize)
	write(t, l, []string{strings.Repeat("a", segSize/2)})
	waitSpare(t, dir, segSize)
	if n := cachedPages(t, filepath.Join(dir, spareName)); n > 0 {
		t.Skipf("the spare has %d pages in the page cache: no direct I/O on this file system", n)
	}
	if _, err := l.Rotate(); err != nil {
		t.Fatal(err)
	}
	before := readBytes(t)
	var groups [][]string
	for i := range 40 {
		groups = append(groups, []string{strings.Repeat("b", 1000+37*i), strings.Repeat("c", 5+i)})
	}
	recs := write(t, l, groups...)
	if got := readBytes(t) - before; got != 0 {
		t.Errorf("writing 40 groups into the spare read %d bytes from the disk, want 0", got)
	}
	if got := replay(t, l, 2); !slices.Equal(got, recs) {
		t.Errorf("Replay(2) = %d records, want the %d written", len(got), len(recs))
	}
	b := readFile(t, segPath(dir, 2))
	end := recs[len(recs)-1].Pos.Off + int64(len(recs[len(recs)-1].Data))
	if int64(len(b)) != segSize || bytes.ContainsFunc(b[end:], func(r rune) bool { return r != 0 }) {
		t.Errorf("segment 2: %d bytes, want %d with zeros after the records", len(b), segSize)
	}
}
