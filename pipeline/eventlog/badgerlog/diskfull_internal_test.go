package badgerlog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/smallfs"
	"github.com/pipelined/pipelined/pipeline"
)

// fullDiskChildEnv names the directory TestWriteAfterTheDiskFilled's child
// process works in; unset, the child test skips.
const fullDiskChildEnv = "BADGERLOG_FULL_DISK_DIR"

// TestWriteAfterTheDiskFilled: the disk fills up in the moment between the
// space check's reading and Badger's write into its memory-mapped memtable
// WAL (another process writing fast: dd, a runaway journal). That write must
// not die of SIGBUS: Badger's maps must need no new block. A real Badger
// directory on a real, size-limited filesystem (tmpfs, and ext4 on a loop
// device where mkfs.ext4 is found), in a child process (a SIGBUS kills the
// process): it appends until the write-ahead log writes into a preallocated
// segment (a spare, as under load), fills the filesystem to the last block,
// then appends with the check's reading from before the fill.
func TestWriteAfterTheDiskFilled(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounts size-limited filesystems and must run as root")
	}
	for _, fs := range []string{"tmpfs", "ext4"} {
		t.Run(fs, func(t *testing.T) {
			mnt := mountSmall(t, fs)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestWriteAfterTheDiskFilledChild$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), fullDiskChildEnv+"="+mnt)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			switch {
			case errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled(),
				strings.Contains(string(out), "SIGBUS"):
				t.Fatalf("BUG: the log died writing after the disk filled (%v), P7 wants ErrFull or success:\n%s", err, crashTail(string(out)))
			case err != nil:
				t.Fatalf("child: %v\n%s", err, out)
			case !strings.Contains(string(out), "--- PASS: TestWriteAfterTheDiskFilledChild"):
				t.Fatalf("child did not run its test:\n%s", out)
			}
			for _, l := range strings.Split(string(out), "\n") {
				if i := strings.Index(l, "full disk:"); i >= 0 {
					t.Log(l[i:])
				}
			}
		})
	}
}

// mountSmall mounts a filesystem of type fs (tmpfs, or ext4 on a loop
// device) of 256 MiB for the test, or skips it. Badger's maps take 32 MiB
// (memtable WAL) and 128 MiB (value log) of it, allocated or held in
// reserve, and the next memtable WAL file 32 MiB: that leaves room to
// write.
func mountSmall(t *testing.T, fs string) string {
	return smallfs.Mount(t, fs, filepath.Join(t.TempDir(), "small"), 256<<20)
}

// crashTail is out from a Go crash report on, or its end.
func crashTail(out string) string {
	if i := strings.Index(out, "unexpected fault"); i >= 0 {
		out = out[i:]
	}
	return out[:min(len(out), 4000)]
}

// TestWriteAfterTheDiskFilledChild is TestWriteAfterTheDiskFilled's child.
func TestWriteAfterTheDiskFilledChild(t *testing.T) {
	mnt := os.Getenv(fullDiskChildEnv)
	if mnt == "" {
		t.Skip("the child of TestWriteAfterTheDiskFilled")
	}
	dir := filepath.Join(mnt, "log")
	const segSize = 1 << 20
	l := mustOpen(t, dir, &Options{SegmentSize: segSize})
	closed := false
	defer func() {
		if !closed {
			l.Close()
		}
	}()

	// Append until the write-ahead log rotates into a spare: a segment
	// whose blocks are written already, so that its writes succeed on a
	// full disk and the records go on to Badger.
	walDir := filepath.Join(dir, "wal")
	n := 0
	for segs := segments(t, walDir); ; n += 10 {
		if n > 20000 {
			t.Fatalf("premise: no rotation into a spare after %d events", n)
		}
		appendN(t, l, fmt.Sprintf("before-%d", n), 10, 10)
		now := segments(t, walDir)
		if len(now) > len(segs) && fileSize(t, filepath.Join(walDir, now[len(now)-1])) == segSize {
			break
		}
		segs = now
	}
	mem := memtableFiles(t, dir)
	if len(mem) != 1 {
		t.Fatalf("premise: memtable WAL files %v, want one (no rotation, so no flush writing tables)", mem)
	}
	before := allocated(t, filepath.Join(dir, mem[0]))

	// Fill the filesystem to the last page.
	filler := filepath.Join(mnt, "filler")
	fill(t, filler)
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil || st.Bavail != 0 {
		t.Fatalf("premise: after the fill, statfs = %d blocks free, %v; want 0", st.Bavail, err)
	}
	// The check read the disk a moment before it filled.
	l.space.override = func() (int64, int64) { return 10 << 30, 0 }
	ok, failed := 0, error(nil)
	for i := 0; i < 3000 && failed == nil; i += 10 {
		_, failed = l.Append(context.Background(), entries(fmt.Sprintf("after-%d", i), 10))
		if failed == nil {
			ok += 10
		}
	}
	after := allocated(t, filepath.Join(dir, mem[0]))
	t.Logf("full disk: %d events appended after the fill, then %v; memtable WAL %s allocated %d KiB before, %d after",
		ok, failed, mem[0], before>>10, after>>10)
	if ok < 200 {
		t.Fatalf("premise: only %d events appended on the full disk (%v): too few to write Badger's memtable WAL", ok, failed)
	}
	if failed != nil && !errors.Is(failed, pipeline.ErrFull) && !strings.Contains(failed.Error(), "no space") {
		t.Errorf("Append on the full disk = %v, want success, ErrFull or no space", failed)
	}
	// Free the space before Close: Close flushes the memtable to a table.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	closed = true
	if err := l.Close(); err != nil {
		t.Logf("Close after the full disk: %v", err)
	}
}

// entries returns n events with ids prefix-0000...
func entries(prefix string, n int) []pipeline.Entry {
	es := make([]pipeline.Entry, n)
	for j := range es {
		id := testID(prefix, j)
		es[j] = pipeline.Entry{
			Event: pipeline.Event{
				ID: id, Source: "src", ReceivedAt: time.Now(),
				Headers: map[string]string{"x-n": id}, Body: []byte(`{"id":"` + id + `"}`),
			},
			DedupKey: id, DedupWindow: time.Hour,
			Targets: []pipeline.Target{{Sink: "s", Route: "r"}, {Sink: "t", Route: "r", Payload: []byte(id)}},
		}
	}
	return es
}

// segments lists the write-ahead log's segment files in walDir, in order.
func segments(t *testing.T, walDir string) []string {
	t.Helper()
	es, err := os.ReadDir(walDir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, e := range es {
		if strings.HasSuffix(e.Name(), ".wal") {
			segs = append(segs, e.Name())
		}
	}
	sort.Strings(segs)
	return segs
}

// memtableFiles lists Badger's memtable WAL files in dir, but for an empty
// one (made ahead for the next memtable: see space.go).
func memtableFiles(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var mem []string
	for _, e := range es {
		if fi, err := e.Info(); err == nil && strings.HasSuffix(e.Name(), ".mem") && fi.Size() > 0 {
			mem = append(mem, e.Name())
		}
	}
	return mem
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// allocated is how many bytes of path's file have blocks.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// fill writes a file at path until the filesystem has no block left.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for _, chunk := range []int{1 << 20, 4 << 10, 512} {
		for {
			if _, err := f.Write(buf[:chunk]); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("fill %s: %v", path, err)
				}
				break
			}
		}
	}
}
