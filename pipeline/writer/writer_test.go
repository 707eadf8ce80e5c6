package writer_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/writer"
)

func entry(id, dedupKey string) pipeline.Entry {
	return pipeline.Entry{
		Event:       pipeline.Event{ID: id, Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)},
		DedupKey:    dedupKey,
		DedupWindow: time.Hour,
		Targets:     []pipeline.Target{{Sink: "s", Route: "r"}},
	}
}

// slowLog makes each Append take a while, as an fsync does, so that
// concurrent requests pile up behind it.
type slowLog struct {
	pipeline.Log
	delay   time.Duration
	err     error
	tooBig  int // Append of more entries than this fails with ErrTooBig
	calls   atomic.Int64
	largest atomic.Int64
}

func (l *slowLog) Append(ctx context.Context, es []pipeline.Entry) ([]pipeline.Appended, error) {
	l.calls.Add(1)
	if int64(len(es)) > l.largest.Load() {
		l.largest.Store(int64(len(es)))
	}
	time.Sleep(l.delay)
	if l.err != nil {
		return nil, l.err
	}
	if l.tooBig > 0 && len(es) > l.tooBig {
		return nil, fmt.Errorf("wrapped: %w", pipeline.ErrTooBig)
	}
	return l.Log.Append(ctx, es)
}

func TestGroupCommit(t *testing.T) {
	l := &slowLog{Log: memlog.New(), delay: 2 * time.Millisecond}
	w := writer.New(l, nil)
	defer w.Close()

	const n = 400
	var wg sync.WaitGroup
	ids := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := w.Append(context.Background(), entry(fmt.Sprintf("ev-%d", i), ""))
			if err != nil {
				t.Errorf("Append(ev-%d) = %v", i, err)
				return
			}
			ids[i] = res.ID
		}()
	}
	wg.Wait()
	for i, id := range ids {
		if want := fmt.Sprintf("ev-%d", i); id != want {
			t.Errorf("Append(%s).ID = %q, want %q", want, id, want)
		}
	}
	if calls := l.calls.Load(); calls >= n/4 {
		t.Errorf("%d appends for %d concurrent entries; want group commit to batch them", calls, n)
	}
	st, _ := l.Queue("s").Stats(context.Background())
	if st.Ready != n {
		t.Errorf("queue holds %d entries, want %d", st.Ready, n)
	}
}

// heldLog records the entries of each Append call, and holds the first
// call until release is closed, so that the appends after it queue up in
// the writer.
type heldLog struct {
	pipeline.Log
	entered chan struct{} // closed when the first Append is held
	release chan struct{}

	mu      sync.Mutex
	batches [][]string // the ids of each Append call
}

func (l *heldLog) Append(ctx context.Context, es []pipeline.Entry) ([]pipeline.Appended, error) {
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = e.Event.ID
	}
	l.mu.Lock()
	l.batches = append(l.batches, ids)
	first := len(l.batches) == 1
	l.mu.Unlock()
	if first {
		close(l.entered)
		<-l.release
	}
	return l.Log.Append(ctx, es)
}

func (l *heldLog) appendCalls() [][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.batches)
}

// TestDuplicatesInOneBatch checks that entries with one dedup key that
// share an append come out as one event and duplicates of it. It holds the
// first append until all of them are queued, and checks that they were
// given to the log in one call.
func TestDuplicatesInOneBatch(t *testing.T) {
	l := &heldLog{Log: memlog.New(), entered: make(chan struct{}), release: make(chan struct{})}
	w := writer.New(l, nil)
	defer w.Close()
	warm := make(chan error, 1)
	go func() {
		_, err := w.Append(context.Background(), entry("warmup", ""))
		warm <- err
	}()
	<-l.entered // the writer is busy with the warm-up append

	const n = 20
	var wg sync.WaitGroup
	var dups atomic.Int64
	first := make(chan string, n)
	want := make([]string, n)
	for i := range n {
		want[i] = fmt.Sprintf("same-%d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := w.Append(context.Background(), entry(want[i], "key"))
			if err != nil {
				t.Error(err)
				return
			}
			if res.Duplicate {
				dups.Add(1)
			}
			first <- res.ID
		}()
	}
	waitPending(t, w, n)
	close(l.release)
	wg.Wait()
	if err := <-warm; err != nil {
		t.Fatalf("Append(warmup) = %v", err)
	}
	close(first)

	// The premise: the warm-up alone, then all n in one Append call.
	calls := l.appendCalls()
	if len(calls) != 2 || !slices.Equal(calls[0], []string{"warmup"}) || len(calls[1]) != n {
		t.Fatalf("Append calls = %v, want [warmup] and then one call with all %d same-key entries", calls, n)
	}
	got := slices.Clone(calls[1])
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("second Append call = %v, want the %d same-key entries %v", calls[1], n, want)
	}

	idset := map[string]bool{}
	for id := range first {
		idset[id] = true
	}
	if dups.Load() != n-1 || len(idset) != 1 {
		t.Errorf("%d appends with one key in one batch: %d duplicates and ids %v; want %d duplicates all naming one id", n, dups.Load(), idset, n-1)
	}
}

// waitPending waits until n entries wait in w's queue.
func waitPending(t testing.TB, w *writer.Writer, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for writer.Pending(w) < n {
		if time.Now().After(deadline) {
			t.Fatalf("writer queue holds %d entries after 5s, want %d", writer.Pending(w), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSplitsWhatIsTooBig(t *testing.T) {
	l := &slowLog{Log: memlog.New(), delay: 2 * time.Millisecond, tooBig: 3}
	w := writer.New(l, nil)
	defer w.Close()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := w.Append(context.Background(), entry(fmt.Sprintf("e%d", i), "")); err != nil {
				t.Errorf("Append = %v, want the writer to split batches the log finds too big", err)
			}
		}()
	}
	wg.Wait()
}

func TestAppendErrors(t *testing.T) {
	full := &slowLog{Log: memlog.New(), err: fmt.Errorf("disk: %w", pipeline.ErrFull)}
	w := writer.New(full, nil)
	_, err := w.Append(context.Background(), entry("a", ""))
	if !errors.Is(err, pipeline.ErrFull) {
		t.Errorf("Append on a full log = %v, want ErrFull", err)
	}
	w.Close()
	if _, err := w.Append(context.Background(), entry("b", "")); !errors.Is(err, pipeline.ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}

	slow := &slowLog{Log: memlog.New(), delay: 200 * time.Millisecond}
	w = writer.New(slow, &writer.Options{MaxPending: 1, MaxBatch: 1})
	defer w.Close()
	var overloaded atomic.Int64
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := w.Append(context.Background(), entry(fmt.Sprintf("o%d", i), ""))
			if errors.Is(err, writer.ErrOverloaded) {
				overloaded.Add(1)
			} else if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if overloaded.Load() == 0 {
		t.Errorf("10 appends into a writer holding 1: none refused with ErrOverloaded")
	}
}

// TestCloseAppendsWhatItTook: Close stops taking entries but appends those
// it already took, and returns only once they are in the log. The log holds
// the first append, so that more wait in the writer's queue when Close
// begins; an Append after that is refused with ErrClosed and never written,
// and each queued one succeeds once the log lets go.
func TestCloseAppendsWhatItTook(t *testing.T) {
	const queued = 10
	l := &heldLog{Log: memlog.New(), entered: make(chan struct{}), release: make(chan struct{})}
	w := writer.New(l, nil)
	release := sync.OnceFunc(func() { close(l.release) })
	t.Cleanup(release) // a failed test still lets Close end

	errs := make(chan error, queued+1)
	appendAsync := func(id string) {
		go func() {
			_, err := w.Append(context.Background(), entry(id, ""))
			if err != nil {
				err = fmt.Errorf("Append(%s) = %w", id, err)
			}
			errs <- err
		}()
	}
	appendAsync("held")
	select {
	case <-l.entered: // the writer is in the log's Append with "held" alone
	case <-time.After(5 * time.Second):
		t.Fatal("the first append did not reach the log")
	}
	for i := range queued {
		appendAsync(fmt.Sprintf("c%d", i))
	}
	waitPending(t, w, queued) // taken, not yet appended

	closed := make(chan struct{})
	go func() {
		w.Close()
		close(closed)
	}()
	waitClosed(t, w)
	if _, err := w.Append(context.Background(), entry("late", "")); !errors.Is(err, pipeline.ErrClosed) {
		t.Errorf("Append once Close has begun = %v, want ErrClosed", err)
	}
	select {
	case <-closed:
		t.Fatalf("Close returned while the log still held the first append and %d waited", writer.Pending(w))
	default:
	}

	release()
	<-closed
	for range queued + 1 {
		if err := <-errs; err != nil {
			t.Errorf("%v, want an entry taken before Close to be appended", err)
		}
	}
	var got []string
	for _, b := range l.appendCalls() {
		got = append(got, b...)
	}
	slices.Sort(got)
	want := []string{"held"}
	for i := range queued {
		want = append(want, fmt.Sprintf("c%d", i))
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("the log was given %v, want the %d entries taken before Close and not \"late\" %v", got, queued+1, want)
	}
	if st, err := l.Queue("s").Stats(context.Background()); err != nil || st.Ready != queued+1 {
		t.Errorf("after Close the queue holds %d entries (err %v), want %d", st.Ready, err, queued+1)
	}
}

// waitClosed waits until Close has begun on w.
func waitClosed(t testing.TB, w *writer.Writer) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !writer.Closed(w) {
		if time.Now().After(deadline) {
			t.Fatal("Close has not begun after 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPing(t *testing.T) {
	l := &heldLog{Log: memlog.New(), entered: make(chan struct{}), release: make(chan struct{})}
	w := writer.New(l, nil)
	if err := w.Ping(context.Background()); err != nil {
		t.Fatalf("Ping of an idle writer = %v", err)
	}
	appended := make(chan error, 1)
	go func() {
		_, err := w.Append(context.Background(), entry("slow", ""))
		appended <- err
	}()
	<-l.entered // the writer is stuck in the append until release
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := w.Ping(ctx); err == nil {
		t.Errorf("Ping of a writer stuck in an append = nil, want a timeout")
	}
	close(l.release)
	if err := w.Ping(context.Background()); err != nil {
		t.Errorf("Ping once the append is done = %v", err)
	}
	if err := <-appended; err != nil {
		t.Errorf("Append(slow) = %v", err)
	}
	w.Close()
	if err := w.Ping(context.Background()); !errors.Is(err, pipeline.ErrClosed) {
		t.Errorf("Ping after Close = %v, want ErrClosed", err)
	}
}
