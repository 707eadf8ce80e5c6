package badgerlog

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// appendDedup appends events with dedup keys keys (ids "id-"+key) and
// returns what Append answered.
func appendDedup(t *testing.T, l *DB, keys ...string) []pipeline.Appended {
	t.Helper()
	es := make([]pipeline.Entry, len(keys))
	for i, k := range keys {
		es[i] = pipeline.Entry{
			Event:    pipeline.Event{ID: "id-" + k, Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			DedupKey: k, DedupWindow: time.Hour,
		}
	}
	got, err := l.Append(context.Background(), es)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// wantDuplicates checks that appending keys again finds every one a
// duplicate of its first event.
func wantDuplicates(t *testing.T, l *DB, keys []string) {
	t.Helper()
	for i, a := range appendDedup(t, l, keys...) {
		if !a.Duplicate || a.ID != "id-"+keys[i] {
			t.Fatalf("Append of %s again = %+v, want a duplicate of id-%s", keys[i], a, keys[i])
		}
	}
}

// filterBuilt waits until l's dedup filter is built and no build runs.
func filterBuilt(t *testing.T, l *DB) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		l.dedup.mu.Lock()
		done := l.dedup.bloom != nil && !l.dedup.building
		l.dedup.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the dedup filter was not built in 10 s")
		}
	}
}

func TestDedupFilter(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, nil)
	var keys []string
	for i := range 500 {
		keys = append(keys, fmt.Sprintf("call-%d", i))
	}
	for i := 0; i < len(keys); i += 50 {
		appendDedup(t, l, keys[i:i+50]...)
	}
	filterBuilt(t, l)
	for _, k := range keys {
		if !l.dedup.mayHave(dedupKey("src", k)) {
			t.Fatalf("the filter says %s is not in the log, and it is", k)
		}
	}
	fp := 0
	for i := range 10000 {
		if l.dedup.mayHave(dedupKey("src", fmt.Sprintf("new-%d", i))) {
			fp++
		}
	}
	if fp > 300 {
		t.Errorf("the filter may have %d of 10,000 new keys, want about 1%%: it saves few lookups", fp)
	}
	wantDuplicates(t, l, keys)
	// Within one Append: the second is a duplicate of the first.
	if got := appendDedup(t, l, "twice", "twice"); got[0].Duplicate || !got[1].Duplicate || got[1].ID != "id-twice" {
		t.Errorf("Append of one key twice = %+v, want the second a duplicate of the first", got)
	}
	// After a restart, with the filter still being built and once built.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, dir, nil)
	defer l.Close()
	wantDuplicates(t, l, keys[:100])
	filterBuilt(t, l)
	wantDuplicates(t, l, keys)
}

// TestDedupFilterKeepsKeysAddedDuringABuild: a key committed after a
// rebuild took its snapshot is in the new filter all the same.
func TestDedupFilterKeepsKeysAddedDuringABuild(t *testing.T) {
	l := mustOpen(t, t.TempDir(), nil)
	defer l.Close()
	filterBuilt(t, l)
	var during []string
	for i := range 100 {
		during = append(during, fmt.Sprintf("during-%d", i))
	}
	appended := make(chan error, 1)
	// The filter's goroutine reads the hook only after the send below.
	dedupBuildHook = func() {
		es := make([]pipeline.Entry, len(during))
		for i, k := range during {
			es[i] = pipeline.Entry{
				Event:    pipeline.Event{ID: "id-" + k, Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)},
				DedupKey: k, DedupWindow: time.Hour,
			}
		}
		_, err := l.Append(context.Background(), es) // after the snapshot
		appended <- err
	}
	t.Cleanup(func() { dedupBuildHook = nil })
	l.dedup.rebuild <- struct{}{}
	select {
	case err := <-appended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no rebuild ran")
	}
	dedupBuildHook = nil // the goroutine reads it again only after another send
	filterBuilt(t, l)
	for _, k := range during {
		if !l.dedup.mayHave(dedupKey("src", k)) {
			t.Fatalf("the rebuilt filter says %s is not in the log: appended during the build, it is", k)
		}
	}
	wantDuplicates(t, l, during)
}

// TestDedupFilterUnderRebuilds: appends while the filter is rebuilt again
// and again; every key is a duplicate afterwards.
func TestDedupFilterUnderRebuilds(t *testing.T) {
	var builds atomic.Int32
	dedupBuildHook = func() { builds.Add(1) } // before Open, whose build reads it
	t.Cleanup(func() { dedupBuildHook = nil })
	l := mustOpen(t, t.TempDir(), nil)
	defer l.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case l.dedup.rebuild <- struct{}{}:
			case <-time.After(time.Millisecond):
			}
		}
	})
	var keys []string
	for i := range 2000 {
		keys = append(keys, fmt.Sprintf("k-%d", i))
	}
	for i := 0; i < len(keys); i += 20 {
		appendDedup(t, l, keys[i:i+20]...)
	}
	close(stop)
	wg.Wait()
	if n := builds.Load(); n < 3 {
		t.Fatalf("%d builds during the appends: the test's premise is wrong", n)
	}
	wantDuplicates(t, l, keys)
}
