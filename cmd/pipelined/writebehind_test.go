package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// slowWriter records every Write it is given, taking a moment over each,
// as a busy journald would.
type slowWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	delay  time.Duration
}

func (s *slowWriter) Write(p []byte) (int, error) {
	time.Sleep(s.delay)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.buf.Write(p)
}

func (s *slowWriter) result() (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String(), s.writes
}

// TestWriteBehindKeepsEveryLineInOrder: lines written from many goroutines
// all reach the writer behind, whole, each goroutine's in its order, in
// far fewer writes than lines when the writer is slow; Close writes out
// what waits, and a line written after Close goes straight through.
func TestWriteBehindKeepsEveryLineInOrder(t *testing.T) {
	const writers, lines = 8, 500
	sw := &slowWriter{delay: 200 * time.Microsecond}
	b := newWriteBehind(sw)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				fmt.Fprintf(b, "level=INFO msg=\"webhook accepted\" writer=%d line=%d\n", g, i)
			}
		})
	}
	wg.Wait()
	if err := b.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	fmt.Fprintf(b, "after close\n")
	out, writes := sw.result()
	got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(got) != writers*lines+1 || got[len(got)-1] != "after close" {
		t.Fatalf("%d lines reached the writer, want %d and the line after Close last", len(got), writers*lines+1)
	}
	next := make([]int, writers)
	for _, l := range got[:len(got)-1] {
		var g, i int
		if _, err := fmt.Sscanf(l, "level=INFO msg=\"webhook accepted\" writer=%d line=%d", &g, &i); err != nil {
			t.Fatalf("a line cut or mixed with another: %q", l)
		}
		if i != next[g] {
			t.Fatalf("writer %d: line %d came where %d was due", g, i, next[g])
		}
		next[g]++
	}
	if writes > writers*lines/5 {
		t.Errorf("%d writes for %d lines: the lines were not gathered", writes, writers*lines)
	}
}

// TestWriteBehindWritesWarningsAtOnce: an info line may wait; a warning or
// an error is written, with every line before it, before the call that
// logs it returns. The writeBehind here has no goroutine, so nothing else
// writes.
func TestWriteBehindWritesWarningsAtOnce(t *testing.T) {
	sw := &slowWriter{}
	b := newIdleWriteBehind(sw)
	log, err := newLogger(b, "text", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("webhook accepted", "source", "callkaro")
	if out, _ := sw.result(); out != "" {
		t.Fatalf("an info line was written at once (%q): the test shows nothing", out)
	}
	log.Warn("plugin restarted", "sink", "archive")
	out, _ := sw.result()
	if !strings.Contains(out, `msg="webhook accepted"`) || !strings.Contains(out, `msg="plugin restarted"`) ||
		strings.Index(out, "webhook accepted") > strings.Index(out, "plugin restarted") {
		t.Fatalf("after the warning returned, the writer had %q; want the info line, then the warning", out)
	}
	log.With("sink", "db").Error("plugin failed") // a derived logger flushes too
	if out, _ := sw.result(); !strings.Contains(out, `msg="plugin failed" sink=db`) {
		t.Fatalf("after the error returned, the writer had %q", out)
	}
}

// TestWriteBehindWaitsForRoom: while the writer behind is stuck, Write
// waits once max bytes wait, as it would on the writer itself, and goes
// on when the writer does.
func TestWriteBehindWaitsForRoom(t *testing.T) {
	release := make(chan struct{})
	stuck := &blockingWriter{release: release}
	b := newWriteBehind(stuck)
	b.max = 64
	line := []byte(strings.Repeat("x", 31) + "\n")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20 {
			b.Write(line)
		}
	}()
	select {
	case <-done:
		t.Fatal("20 writes of 32 bytes went through with the writer stuck and 64 bytes of room")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-done
	b.Close()
	if n := stuck.written(); n != 20*len(line) {
		t.Fatalf("%d bytes reached the writer, want %d", n, 20*len(line))
	}
}

type blockingWriter struct {
	release chan struct{}
	mu      sync.Mutex
	n       int
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n += len(p)
	return len(p), nil
}

func (w *blockingWriter) written() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// TestWriteBehindUnderJournald: through a writeBehind, auto still finds
// that stderr is the journal's stream and writes priorities, not times.
func TestWriteBehindUnderJournald(t *testing.T) {
	f, st := stderrFile(t)
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	b := newWriteBehind(f)
	log, err := newLogger(b, "auto", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("pipelined is ready", "sinks", 2)
	b.Close()
	got, _ := os.ReadFile(f.Name())
	if want := "<6>level=INFO msg=\"pipelined is ready\" sinks=2\n"; string(got) != want {
		t.Fatalf("wrote %q, want %q", got, want)
	}
}
