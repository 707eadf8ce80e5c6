package jetstreamlog_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/jetstreamlog"
)

// TestRequeueReadsOnlyWhatItQueues: a replay page of events with 1 MiB
// bodies costs the reads of the events Requeue queues, once each, and
// nothing of the others: their queue entries and dead letters (copies of
// the event) are looked up, not read. Given only the seqs, it reads each
// event once (for its id), and still none of the copies. The cost is what
// the server sent (its own counter, so no hook and no timing).
func TestRequeueReadsOnlyWhatItQueues(t *testing.T) {
	s, l := largeServer(t, "RQ")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const (
		each = 2       // events of each kind
		size = 1 << 20 // each event's body
		sink = "crm"
	)
	pad := strings.Repeat("x", size)
	body := []byte(`{"pad":"` + pad + `"}`)
	appendAs := func(kind string, i int) {
		t.Helper()
		id := fmt.Sprintf("%s-%d", kind, i)
		target := pipeline.Target{Sink: sink, Route: "r"}
		if kind == "failed" {
			target.Err = "transform: boom" // Append writes its dead letter
		}
		e := pipeline.Entry{
			Event:   pipeline.Event{ID: id, Source: "s", ReceivedAt: time.Now().UTC(), Body: body},
			Targets: []pipeline.Target{target},
		}
		if _, err := l.Append(ctx, []pipeline.Entry{e}); err != nil {
			t.Fatalf("Append(%s) = %v", id, err)
		}
	}
	// The kinds Requeue skips: retrying (in the queue, due in an hour),
	// dead (Settle's dead letter), failed (Append's dead letter), ready
	// (in the queue, never fetched); and the one it queues: delivered.
	for i := range each {
		for _, kind := range []string{"retrying", "dead", "delivered", "failed"} {
			appendAs(kind, i)
		}
	}
	q := l.Queue(sink)
	var ds []pipeline.Delivery
	for len(ds) < 3*each {
		got, err := q.Fetch(ctx, 3*each)
		if err != nil {
			t.Fatalf("Fetch = %v after %d of %d", err, len(ds), 3*each)
		}
		ds = append(ds, got...)
	}
	var ss []pipeline.Settlement
	for _, d := range ds {
		switch kind, _, _ := strings.Cut(d.Event.ID, "-"); kind {
		case "retrying":
			ss = append(ss, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Retry, Err: "busy", RetryAt: time.Now().Add(time.Hour)})
		case "dead":
			ss = append(ss, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Dead, Err: "gave up"})
		case "delivered":
			ss = append(ss, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack})
		default:
			t.Fatalf("Fetch returned %s, which is not in the queue", d.Event.ID)
		}
	}
	if err := q.Settle(ctx, ss); err != nil {
		t.Fatalf("Settle = %v", err)
	}
	for i := range each {
		appendAs("ready", i)
	}
	events, _, err := l.Events(ctx, pipeline.EventFilter{Limit: 100})
	if err != nil || len(events) != 5*each {
		t.Fatalf("Events = %d events, %v, want %d", len(events), err, 5*each)
	}
	// Each event's message is about 16/9 of its body on the wire (base64
	// in the record, and the record base64 in the get's answer).
	msg := int64(size) * 16 / 9
	cost := func(what string, maxMsgs int64, f func()) {
		t.Helper()
		before := varz(t, s)
		f()
		sent := varz(t, s).OutBytes - before.OutBytes
		t.Logf("%s: the server sent %d bytes (%.2f events)", what, sent, float64(sent)/float64(msg))
		if sent > maxMsgs*msg+256<<10 { // 256 KiB: the lookups' and answers' own bytes
			t.Errorf("%s: the server sent %d bytes (%.1f events), want at most %d events", what, sent, float64(sent)/float64(msg), maxMsgs)
		}
	}
	check := func(what string, rs []pipeline.Requeue, n, wantN int) {
		t.Helper()
		if n != wantN {
			t.Errorf("%s = %d queued, want %d", what, n, wantN)
		}
		for _, r := range rs {
			kind, _, _ := strings.Cut(idOf(events, r.Seq), "-")
			if want := kind == "dead" || kind == "failed"; r.Dead != want {
				t.Errorf("%s: Dead of %s = %v, want %v", what, idOf(events, r.Seq), r.Dead, want)
			}
		}
	}

	// With ids, as a replay gives them: the delivered events are read and
	// queued, the others are not read.
	rs := make([]pipeline.Requeue, len(events))
	for i, e := range events {
		rs[i] = pipeline.Requeue{Seq: e.Seq, ID: e.ID, Route: "replay"}
	}
	var n int
	cost("Requeue with ids", each, func() { n, err = q.Requeue(ctx, rs) })
	if err != nil {
		t.Fatalf("Requeue with ids = %v", err)
	}
	check("Requeue with ids", rs, n, each)
	got, err := q.Fetch(ctx, 5*each)
	if err != nil {
		t.Fatalf("Fetch after Requeue = %v", err)
	}
	for _, d := range got {
		if kind, _, _ := strings.Cut(d.Event.ID, "-"); kind != "delivered" && kind != "ready" {
			t.Errorf("Fetch after Requeue returned %s", d.Event.ID)
		}
		if d.Route == "replay" && len(d.Event.Body) != len(body) {
			t.Errorf("requeued %s has a body of %d bytes, want %d", d.Event.ID, len(d.Event.Body), len(body))
		}
	}
	if len(got) == 0 {
		t.Fatal("Fetch after Requeue returned nothing")
	}
	var back []pipeline.Settlement
	for _, d := range got {
		back = append(back, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Retry, NotAttempted: true, RetryAt: time.Now().Add(time.Hour)})
	}
	if err := q.Settle(ctx, back); err != nil {
		t.Fatalf("Settle = %v", err)
	}

	// With seqs only: every event is read once, for its id, and no copy.
	for i, e := range events {
		rs[i] = pipeline.Requeue{Seq: e.Seq, Route: "replay"}
	}
	cost("Requeue with seqs only", 5*each, func() { n, err = q.Requeue(ctx, rs) })
	if err != nil {
		t.Fatalf("Requeue with seqs only = %v", err)
	}
	check("Requeue with seqs only", rs, n, 0)
}

// largeServer starts an in-process nats-server that takes messages of up
// to 4 MiB (an event of 1 MiB is a record of 1.33 MiB) and opens a log on
// it; both stop when t ends.
func largeServer(t *testing.T, stream string) (*server.Server, *jetstreamlog.Log) {
	t.Helper()
	s := startServerWith(t, &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true, MaxPayload: 4 << 20})
	t.Cleanup(s.Shutdown)
	l := open(t, s.ClientURL(), stream)
	t.Cleanup(func() { l.Close() })
	return s, l
}

func idOf(events []pipeline.EventInfo, seq uint64) string {
	for _, e := range events {
		if e.Seq == seq {
			return e.ID
		}
	}
	return fmt.Sprint("seq ", seq)
}

// TestRequeueHoldsABoundedPage: a Requeue of a page of events with large
// bodies, given only their seqs, holds a bounded part of the page at
// once, not every event of it (P9): here 1 MiB of bodies (the hold, set
// low so that the test is quick under -race) of a page of 8 MiB. The
// Requeue runs in a child process (this test binary again), so that the
// Go heap measured is its own and not the in-process server's: the
// measure is the heap's peak above its start, sampled every millisecond
// while the call runs, with GOGC=20 so that the heap follows what is
// held.
func TestRequeueHoldsABoundedPage(t *testing.T) {
	if os.Getenv(requeueChild) != "" {
		requeueInChild(t)
		return
	}
	s, l := largeServer(t, "RQH")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const (
		n    = 32
		size = 256 << 10
		hold = 1 << 20
		sink = "crm"
	)
	body := []byte(`{"pad":"` + strings.Repeat("x", size) + `"}`)
	for i := range n {
		e := pipeline.Entry{
			Event:   pipeline.Event{ID: fmt.Sprintf("big-%02d", i), Source: "s", ReceivedAt: time.Now().UTC(), Body: body},
			Targets: []pipeline.Target{{Sink: sink, Route: "r"}},
		}
		if _, err := l.Append(ctx, []pipeline.Entry{e}); err != nil {
			t.Fatalf("Append = %v", err)
		}
	}
	q := l.Queue(sink)
	var seqs []string
	for len(seqs) < n {
		ds, err := q.Fetch(ctx, n)
		if err != nil {
			t.Fatalf("Fetch = %v", err)
		}
		var ss []pipeline.Settlement
		for _, d := range ds {
			ss = append(ss, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack})
			seqs = append(seqs, strconv.FormatUint(d.Seq, 10))
		}
		if err := q.Settle(ctx, ss); err != nil {
			t.Fatalf("Settle = %v", err)
		}
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, exe, "-test.run=^TestRequeueHoldsABoundedPage$", "-test.v")
	cmd.Env = append(os.Environ(), "GOGC=20", requeueChild+"="+s.ClientURL()+" RQH "+sink+" "+strings.Join(seqs, ",")+" "+strconv.Itoa(hold))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the child's Requeue: %v\n%s", err, out)
	}
	var (
		queued        int
		before, after int64
	)
	i := bytes.Index(out, []byte("requeued "))
	if i < 0 {
		t.Fatalf("the child did not answer:\n%s", out)
	}
	if _, err := fmt.Sscanf(string(out[i:]), "requeued %d peak %d %d", &queued, &before, &after); err != nil {
		t.Fatalf("the child's answer: %v\n%s", err, out)
	}
	if queued != n {
		t.Fatalf("the child's Requeue queued %d events, want %d\n%s", queued, n, out)
	}
	grew := after - before
	if grew < size {
		t.Fatalf("the child's heap peaked %d bytes above its start, less than one event's body: the measure misses what Requeue reads", grew)
	}
	t.Logf("Requeue of %d events of %d KiB: the child's heap peaked %.1f MiB above its start", n, size>>10, float64(grew)/(1<<20))
	if grew > n*size*3/4 { // the hold and an event's reads and writes at a time
		t.Errorf("Requeue of %d events of %d KiB: the child's heap peaked %.1f MiB above its start, want at most %.1f MiB (3/4 of the page)",
			n, size>>10, float64(grew)/(1<<20), float64(n*size*3/4)/(1<<20))
	}
	ds, err := q.Fetch(ctx, n)
	if err != nil || len(ds) == 0 || len(ds[0].Event.Body) != len(body) || ds[0].Route != "replay" {
		t.Fatalf("Fetch after the child's Requeue = %d entries, %v, want the events again, whole, routed replay", len(ds), err)
	}
}

// requeueChild names the variable that makes TestRequeueHoldsABoundedPage
// the child: "url stream sink seq,seq,... hold".
const requeueChild = "PIPELINED_TEST_REQUEUE_CHILD"

// requeueInChild requeues the seqs the parent gave and prints how many it
// queued, its heap at the start and the heap's peak during the call.
func requeueInChild(t *testing.T) {
	f := strings.Fields(os.Getenv(requeueChild))
	hold, err := strconv.Atoi(f[4])
	if err != nil {
		t.Fatal(err)
	}
	defer jetstreamlog.SetRequeueHold(hold)()
	l := open(t, f[0], f[1])
	defer l.Close()
	var rs []pipeline.Requeue
	for _, s := range strings.Split(f[3], ",") {
		seq, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, pipeline.Requeue{Seq: seq, Route: "replay"})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	heap := func() int64 { metrics.Read(sample); return int64(sample[0].Value.Uint64()) }
	runtime.GC()
	start := heap()
	var (
		peak int64
		stop = make(chan struct{})
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			peak = max(peak, heap())
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	n, err := l.Queue(f[2]).Requeue(ctx, rs)
	close(stop)
	<-done
	if err != nil {
		t.Fatalf("Requeue = %v", err)
	}
	fmt.Printf("requeued %d peak %d %d\n", n, start, peak)
}
