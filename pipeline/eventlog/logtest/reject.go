package logtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// rejectionLog returns l as a [pipeline.RejectionLog], skipping the test when
// the implementation does not keep rejections (an optional capability).
func rejectionLog(t *testing.T, l pipeline.Log) pipeline.RejectionLog {
	t.Helper()
	rl, ok := unwrap(l).(pipeline.RejectionLog)
	if !ok {
		t.Skip("the log does not implement pipeline.RejectionLog")
	}
	return rl
}

func rejection(source string, at time.Time, reason string) pipeline.Rejection {
	return pipeline.Rejection{
		Source:     source,
		ReceivedAt: at,
		Status:     422,
		Reason:     reason,
		Violations: []string{"/data/call_duration: expected number, got string"},
		Headers:    map[string]string{"content-type": "application/json"},
		Body:       []byte(`{"event":"call_ended"}`),
		BodySize:   22,
		RemoteAddr: "192.0.2.1:1234",
		Keep:       time.Hour,
	}
}

func listAll(t *testing.T, rl pipeline.RejectionLog, f pipeline.RejectionFilter) []pipeline.Rejection {
	t.Helper()
	var out []pipeline.Rejection
	for range 1000 {
		rs, next, err := rl.Rejections(context.Background(), f)
		if err != nil {
			t.Fatalf("Rejections(%+v) = %v", f, err)
		}
		out = append(out, rs...)
		if next == "" {
			return out
		}
		f.After = next
	}
	t.Fatal("Rejections: no end after 1000 pages")
	return nil
}

func testRejectionsRoundTrip(t *testing.T, l pipeline.Log) {
	rl := rejectionLog(t, l)
	ctx := context.Background()
	at := time.Now().UTC().Truncate(time.Millisecond)
	want := rejection("callkaro", at, "schema: 1 violation")
	if _, err := rl.Reject(ctx, want); err != nil {
		t.Fatalf("Reject = %v", err)
	}
	got := listAll(t, rl, pipeline.RejectionFilter{})
	if len(got) != 1 {
		t.Fatalf("Rejections = %d rejections, want 1", len(got))
	}
	r := got[0]
	if r.ID == "" {
		t.Errorf("Rejections()[0].ID = \"\", want an id")
	}
	if r.Source != want.Source || !r.ReceivedAt.Equal(want.ReceivedAt) || r.Status != want.Status || r.Reason != want.Reason ||
		string(r.Body) != string(want.Body) || r.BodySize != want.BodySize || r.RemoteAddr != want.RemoteAddr ||
		!slices.Equal(r.Violations, want.Violations) || r.Headers["content-type"] != "application/json" {
		t.Errorf("Rejections()[0] = %+v, want %+v", r, want)
	}
	if st, err := l.Queue("any").Stats(ctx); err != nil || st != (pipeline.QueueStats{}) {
		t.Errorf("a rejection touched a queue: Stats = %+v, %v", st, err)
	}
	evs, _, err := l.Events(ctx, pipeline.EventFilter{})
	if err != nil || len(evs) != 0 {
		t.Errorf("Events after a rejection = %d events, %v; want none", len(evs), err)
	}
}

func testRejectionsFilter(t *testing.T, l pipeline.Log) {
	rl := rejectionLog(t, l)
	ctx := context.Background()
	base := time.Now().UTC().Add(-time.Minute)
	for i := range 7 {
		src := "a"
		if i%2 == 1 {
			src = "b"
		}
		if _, err := rl.Reject(ctx, rejection(src, base.Add(time.Duration(i)*time.Second), fmt.Sprint(i))); err != nil {
			t.Fatalf("Reject = %v", err)
		}
	}
	// Kept no longer: ReceivedAt + Keep is in the past.
	old := rejection("a", base.Add(-2*time.Hour), "old")
	if _, err := rl.Reject(ctx, old); err != nil {
		t.Fatalf("Reject(expired) = %v", err)
	}
	reasons := func(rs []pipeline.Rejection) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Reason)
		}
		return out
	}
	if got, want := reasons(listAll(t, rl, pipeline.RejectionFilter{Limit: 2})), []string{"0", "2", "4", "6", "1", "3", "5"}; !slices.Equal(got, want) {
		t.Errorf("Rejections(all, pages of 2) = %v, want %v", got, want)
	}
	if got, want := reasons(listAll(t, rl, pipeline.RejectionFilter{Source: "b"})), []string{"1", "3", "5"}; !slices.Equal(got, want) {
		t.Errorf("Rejections(source b) = %v, want %v", got, want)
	}
	if got, want := reasons(listAll(t, rl, pipeline.RejectionFilter{Source: "a", Since: base.Add(3 * time.Second), Limit: 1})), []string{"4", "6"}; !slices.Equal(got, want) {
		t.Errorf("Rejections(source a, since +3s) = %v, want %v", got, want)
	}
	for _, bad := range []string{
		"not a cursor",
		"a/0123456789ABCDEF0123456789ABCDEF", // ids are lower case: this would not sort as the times do
		"a/0123456789abcdef",
	} {
		if _, _, err := rl.Rejections(ctx, pipeline.RejectionFilter{After: bad}); !errors.Is(err, pipeline.ErrBadCursor) {
			t.Errorf("Rejections(After: %q) = %v, want ErrBadCursor", bad, err)
		}
	}
}

func testRejectionsExpire(t *testing.T, l pipeline.Log) {
	rl := rejectionLog(t, l)
	ctx := context.Background()
	r := rejection("callkaro", time.Now().UTC(), "short-lived")
	r.Keep = time.Second
	if _, err := rl.Reject(ctx, r); err != nil {
		t.Fatalf("Reject = %v", err)
	}
	long := rejection("callkaro", time.Now().UTC(), "long-lived")
	if _, err := rl.Reject(ctx, long); err != nil {
		t.Fatalf("Reject = %v", err)
	}
	// An expiry may count whole seconds: allow up to three.
	deadline := time.Now().Add(3 * time.Second)
	for {
		rs := listAll(t, rl, pipeline.RejectionFilter{Source: "callkaro"})
		if len(rs) == 1 && rs[0].Reason == "long-lived" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Rejections 3s after a 1s keep = %d rejections, want only the long-lived one", len(rs))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testRejectionsCapped checks keep_rejected_max: past r.KeepMax bytes of
// a source's rejections the oldest go first, drops are returned, and
// other sources are untouched.
func testRejectionsCapped(t *testing.T, l pipeline.Log) {
	rl := rejectionLog(t, l)
	ctx := context.Background()
	base := time.Now().UTC().Add(-time.Minute)
	other := rejection("other", base, "other")
	if _, err := rl.Reject(ctx, other); err != nil {
		t.Fatalf("Reject = %v", err)
	}
	one := rejection("capped", base, "0")
	max := 3 * one.Size()
	dropped := 0
	for i := range 10 {
		r := rejection("capped", base.Add(time.Duration(i)*time.Second), fmt.Sprint(i))
		r.KeepMax = max
		n, err := rl.Reject(ctx, r)
		if err != nil {
			t.Fatalf("Reject(%d) = %v", i, err)
		}
		dropped += n
	}
	var got []string
	var size int64
	for _, r := range listAll(t, rl, pipeline.RejectionFilter{Source: "capped"}) {
		got = append(got, r.Reason)
		size += r.Size()
	}
	if want := []string{"7", "8", "9"}; !slices.Equal(got, want) {
		t.Errorf("Rejections(capped at 3 rejections' size) = %v, want %v (the newest)", got, want)
	}
	if size > max {
		t.Errorf("kept %d bytes of rejections, want at most KeepMax = %d", size, max)
	}
	if dropped != 7 {
		t.Errorf("Reject returned %d drops in all, want 7", dropped)
	}
	if rs := listAll(t, rl, pipeline.RejectionFilter{Source: "other"}); len(rs) != 1 {
		t.Errorf("Rejections(other) = %d, want 1: a cap on one source dropped another's", len(rs))
	}
	huge := rejection("capped", base.Add(time.Hour), "huge")
	huge.Body = make([]byte, max)
	huge.KeepMax = max
	if n, err := rl.Reject(ctx, huge); err != nil || n != 1 {
		t.Errorf("Reject(larger than KeepMax) = %d, %v, want 1 drop (itself)", n, err)
	}
}
