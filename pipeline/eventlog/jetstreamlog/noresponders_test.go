package jetstreamlog_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/jetstreamlog"
)

// TestAppendResendsOnNoResponders: a batch the server answers "no
// responders" (here the stream is gone; in a cluster, a new leader whose
// interest has not reached this server yet) stored nothing, so Append
// sends it again until the request timeout; once the stream is back, the
// Append succeeds and the stream holds the batch once.
func TestAppendResendsOnNoResponders(t *testing.T) {
	s := startServer(t)
	l := open(t, s.ClientURL(), "NR")
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js := jsClient(t, s.ClientURL())
	st, err := js.Stream(ctx, "NR")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, "NR"); err != nil {
		t.Fatal(err)
	}
	in := func() int64 {
		v, err := s.Varz(nil)
		if err != nil {
			t.Fatal(err)
		}
		return v.InMsgs
	}
	before := in()

	entry := pipeline.Entry{Event: pipeline.Event{ID: "ev-nr", Source: "s", ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)},
		Targets: []pipeline.Target{{Sink: "crm", Route: "r"}}}
	const batch = 2 // the event and its queue entry
	type result struct {
		a   []pipeline.Appended
		err error
	}
	done := make(chan result, 1)
	go func() {
		a, err := l.Append(ctx, []pipeline.Entry{entry})
		done <- result{a, err}
	}()
	// Premise: the batch went out at least twice while the stream was gone.
	for deadline := time.Now().Add(3 * time.Second); in()-before < 2*batch; time.Sleep(5 * time.Millisecond) {
		select {
		case r := <-done:
			t.Fatalf("Append with no stream returned %v, %v before sending the batch twice: want it sent again", r.a, r.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server received %d messages in 3s, want the batch of %d sent twice", in()-before, batch)
		}
	}
	if _, err := js.CreateStream(ctx, info.Config); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("Append did not return")
	}
	if r.err != nil || len(r.a) != 1 || r.a[0].Duplicate {
		t.Fatalf("Append once the stream is back = %+v, %v; want the event stored", r.a, r.err)
	}
	if ev, err := l.Event(ctx, r.a[0].ID); err != nil || ev.ID != r.a[0].ID {
		t.Errorf("Event(%s) = %s, %v; want the event", r.a[0].ID, ev.ID, err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != batch {
		t.Errorf("the stream holds %v messages (%v), want the batch of %d once", info.State.Msgs, err, batch)
	}
}

// TestAppendWithoutStreamSaysSo: when no server takes the batch until the
// request timeout (the stream was deleted), Append's error, which the
// writer logs as "append to event log failed", names the stream and says
// what "no responders" means, rather than NATS's words alone.
func TestAppendWithoutStreamSaysSo(t *testing.T) {
	url := runServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := jetstreamlog.Open(ctx, jetstreamlog.Options{URLs: []string{url}, Stream: "GONE", Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	js := jsClient(t, url)
	if err := js.DeleteStream(ctx, "GONE"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = l.Append(ctx, []pipeline.Entry{{Event: pipeline.Event{ID: "ev-gone", Source: "s", ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)}}})
	if took := time.Since(start); err == nil || took < 300*time.Millisecond {
		t.Fatalf("Append with the stream gone = %v after %v, want an error after the 300ms timeout", err, took)
	}
	t.Logf("Append: %v", err)
	for _, want := range []string{`stream "GONE"`, "no server took the batch in ", "no responders"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Append's error %q does not say %q", err, want)
		}
	}
}

// jsClient connects to the server at url, for what a test does beside the
// log (delete or create its stream), until t ends.
func jsClient(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
