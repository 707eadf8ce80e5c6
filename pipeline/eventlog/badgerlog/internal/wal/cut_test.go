package wal

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/pipelined/pipelined/internal/smallfs"
)

// TestFailedSyncCutsTheGroupOff: a group whose fdatasync failed was
// answered as failed, and its pages may stay in the page cache marked
// clean, where a restart on the same boot would replay them (acknowledging
// the sender's retry as a duplicate of an event the disk may not hold).
// The group is cut off the segment, and the log writes no more.
func TestFailedSyncCutsTheGroupOff(t *testing.T) {
	l, dir := newLog(t, 1<<20)
	want := write(t, l, []string{"a", "b"})
	SyncFault = func() error { return errors.New("input/output error") }
	t.Cleanup(func() { SyncFault = nil })
	if _, err := l.Write([][]byte{[]byte("c"), []byte("d")}); !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "input/output error") {
		t.Fatalf("Write whose sync failed = %v, want ErrBroken and the cause", err)
	}
	SyncFault = nil
	if _, err := l.Write([][]byte{[]byte("e")}); !errors.Is(err, ErrBroken) {
		t.Fatalf("Write after a failed sync = %v, want ErrBroken", err)
	}
	if got := int64(len(readFile(t, segPath(dir, 1)))); got != 2*HeaderSize+2 {
		t.Errorf("segment 1 after the failed sync holds %d bytes, want %d (the first group's)", got, 2*HeaderSize+2)
	}
	l.Close()
	l = openLog(t, dir, 1<<20)
	if got := replay(t, l, 0); !slices.Equal(got, want) {
		t.Errorf("Replay after a failed sync = %v, want %v: the failed group is not replayed", got, want)
	}
}

// TestFailedWriteCutsTheGroupOff: a write that fails part way (a full
// disk) leaves whole records of its group in the segment; the next group
// is written at the same offset, and one of the same size as the first
// record left the second behind it, valid, where a crash's replay would
// apply it after the next group, out of order. On a small tmpfs with two
// pages free, a group of three records of 3,000 bytes fails on the third,
// and the next group (one record of that size, once space is freed) must
// be the last record replayed.
func TestFailedWriteCutsTheGroupOff(t *testing.T) {
	mnt := smallfs.Mount(t, "tmpfs", filepath.Join(t.TempDir(), "small"), 1<<20)
	dir := filepath.Join(mnt, "wal")
	l := openLog(t, dir, 1<<20)
	if _, err := l.Rotate(); err != nil {
		t.Fatal(err)
	}
	first := strings.Repeat("f", int(pageSize-HeaderSize)) // the segment's first page, whole
	want := write(t, l, []string{first})

	// Fill the filesystem, then free two pages.
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, pageSize)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	size, _ := f.Seek(0, 2)
	if err := f.Truncate(size - size%pageSize - 2*pageSize); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil || int64(st.Bavail)*st.Bsize != 2*pageSize {
		t.Fatalf("premise: %d bytes free after the fill, %v; want two pages", st.Bavail*uint64(st.Bsize), err)
	}

	rec := func(c string) []byte { return []byte(strings.Repeat(c, 3000)) }
	if _, err := l.Write([][]byte{rec("a"), rec("b"), rec("x")}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Write of a group bigger than the space left = %v, want ENOSPC", err)
	}
	if got := int64(len(readFile(t, segPath(dir, 1)))); got != pageSize {
		t.Errorf("segment 1 after the failed write holds %d bytes, want %d: the group cut off", got, pageSize)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	want = append(want, write(t, l, []string{string(rec("c"))})...)
	l.Close()
	l = openLog(t, dir, 1<<20)
	got := replay(t, l, 0)
	if len(got) != len(want) || got[len(got)-1].Data[0] != 'c' {
		var firsts []string
		for _, r := range got {
			firsts = append(firsts, r.Data[:1])
		}
		t.Errorf("Replay after a failed write and the next group yields records %v, want [f c]: a record of the failed group replayed after the next", firsts)
	}
}
