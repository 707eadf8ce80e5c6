package writer_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/writer"
)

// TestSubscribe checks the live tail's hook: a subscriber gets each
// appended entry (not the duplicates) with its id; one that does not read
// never holds the writer and is told how many it missed; one of another
// source gets and misses nothing; a cancelled one gets nothing more.
func TestSubscribe(t *testing.T) {
	w := writer.New(memlog.New(), nil)
	defer w.Close()
	ctx := context.Background()
	fast := w.Subscribe(16, "")
	stuck := w.Subscribe(1, "") // never read
	defer stuck.Cancel()
	mine := w.Subscribe(16, "src")
	defer mine.Cancel()
	other := w.Subscribe(1, "other") // never read: no entry of its source comes
	defer other.Cancel()

	for i := range 5 {
		if _, err := w.Append(ctx, entry(fmt.Sprint("ev-", i), fmt.Sprint("k", i))); err != nil {
			t.Fatalf("Append(ev-%d) = %v", i, err)
		}
	}
	// A duplicate: absorbed, not seen by subscribers.
	if a, err := w.Append(ctx, entry("ev-dup", "k1")); err != nil || !a.Duplicate {
		t.Fatalf("Append(duplicate) = %+v, %v; want a duplicate", a, err)
	}
	// The writer has taken a request after the last commit, so it has
	// offered that commit's entries to every subscriber.
	if err := w.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []struct {
		name string
		s    *writer.Subscription
	}{{"every source", fast}, {"source src", mine}} {
		for i := range 5 {
			select {
			case e := <-sub.s.C:
				if want := fmt.Sprint("ev-", i); e.ID != want || e.DedupKey != fmt.Sprint("k", i) || len(e.Sinks) != 1 || e.Size == 0 {
					t.Errorf("subscriber of %s got %s (dedup key %q, sinks %q, size %d), want %s of one sink", sub.name, e.ID, e.DedupKey, e.Sinks, e.Size, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("subscriber of %s got %d entries, want 5", sub.name, i)
			}
		}
		select {
		case e := <-sub.s.C:
			t.Errorf("subscriber of %s got %s after the 5 entries: the duplicate must not be sent", sub.name, e.ID)
		default:
		}
		if n := sub.s.Dropped(); n != 0 {
			t.Errorf("subscriber of %s that kept up: Dropped() = %d, want 0", sub.name, n)
		}
	}
	if n, held := stuck.Dropped(), len(stuck.C); n != 4 || held != 1 {
		t.Errorf("subscriber with a buffer of 1 that never read: holds %d, Dropped() = %d; want 1 and 4", held, n)
	}
	if n, held := other.Dropped(), len(other.C); n != 0 || held != 0 {
		t.Errorf("subscriber of source other: holds %d, Dropped() = %d; want 0 and 0", held, n)
	}
	fast.Cancel()
	fast.Cancel() // twice is fine
	if _, err := w.Append(ctx, entry("ev-late", "late")); err != nil {
		t.Fatal(err)
	}
	if err := w.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-fast.C:
		t.Errorf("a cancelled subscriber got %s", e.ID)
	default:
	}
	if n := fast.Dropped(); n != 0 {
		t.Errorf("a cancelled subscriber: Dropped() = %d, want 0 (nothing more is offered)", n)
	}
	if n := stuck.Dropped(); n != 5 {
		t.Errorf("the stuck subscriber after one more entry: Dropped() = %d, want 5", n)
	}
}

// TestCancelDuringAppends subscribes and cancels over and over while
// appends go on from several goroutines (run it with -race): once Cancel
// has returned and the commit under way has ended (Ping), the cancelled
// subscription neither receives nor counts another entry, and one that
// was never cancelled keeps receiving.
func TestCancelDuringAppends(t *testing.T) {
	w := writer.New(memlog.New(), nil)
	defer w.Close()
	ctx := context.Background()
	stay := w.Subscribe(1, "")
	defer stay.Cancel()
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				if _, err := w.Append(ctx, entry(fmt.Sprint("g", g, "-", i), "")); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range 200 {
		s := w.Subscribe(4, "")
		if i%2 == 0 {
			select { // sometimes cancel while the buffer is being filled
			case <-s.C:
			case <-time.After(5 * time.Second):
				t.Fatal("a subscription got nothing in 5s while appends go on")
			}
		}
		s.Cancel()
		if err := w.Ping(ctx); err != nil { // the commit that may have seen s has ended
			t.Fatal(err)
		}
		held, dropped := len(s.C), s.Dropped()
		// An append that starts after Cancel, and the commit it ends in
		// has offered its entries.
		if _, err := w.Append(ctx, entry(fmt.Sprint("after-", i), "")); err != nil {
			t.Fatal(err)
		}
		if err := w.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		if len(s.C) != held || s.Dropped() != dropped {
			t.Fatalf("subscription %d after Cancel: holds %d then %d, dropped %d then %d; want no change", i, held, len(s.C), dropped, s.Dropped())
		}
	}
	close(stop)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if stay.Dropped() == 0 {
		t.Errorf("the subscription never cancelled, never read, with a buffer of 1: Dropped() = 0, want the appends it missed counted")
	}
}
