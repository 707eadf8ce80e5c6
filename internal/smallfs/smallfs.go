// Package smallfs mounts size-limited filesystems for the tests of a full
// disk: a tmpfs, or ext4 on a loop device, that a test can fill to its
// last block without touching the machine's own disks.
package smallfs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Mount mounts a filesystem of kind ("tmpfs" or "ext4") holding size
// bytes at dir, made if missing, and unmounts it when the test ends. The
// test is skipped when it cannot be: not run as root, or the mount (or
// mkfs.ext4, or a loop device) not to be had.
func Mount(t testing.TB, kind, dir string, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("mounts a size-limited %s and must run as root", kind)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var out []byte
	var err error
	switch kind {
	case "tmpfs":
		out, err = exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprint("size=", size), "tmpfs", dir).CombinedOutput()
	case "ext4":
		img := filepath.Join(t.TempDir(), "ext4.img")
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, size); err != nil {
			t.Fatal(err)
		}
		if out, err = exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err == nil {
			out, err = exec.Command("mount", "-o", "loop", img, dir).CombinedOutput()
		}
	default:
		t.Fatalf("smallfs.Mount: kind %q, want tmpfs or ext4", kind)
	}
	if err != nil {
		t.Skipf("mount a %s: %v: %s", kind, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}
