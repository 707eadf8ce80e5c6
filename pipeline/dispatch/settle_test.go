package dispatch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
	"github.com/pipelined/pipelined/sdk"
)

// TestSettleTooBigForOneWrite gives a real Badger log at its smallest
// memtable a batch of batch_max events whose outcomes do not fit one
// atomic write: retries, each keeping a 1 KiB transform payload. The
// dispatcher must record them in parts, not retry the whole for ever.
func TestSettleTooBigForOneWrite(t *testing.T) {
	const n = 7500
	l, err := badgerlog.Open(t.TempDir(), &badgerlog.Options{MemTableSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	payload := bytes.Repeat([]byte{'p'}, 1024)
	for first := 0; first < n; first += 500 {
		var entries []pipeline.Entry
		for i := first; i < first+500; i++ {
			id := fmt.Sprintf("ev-%05d", i)
			entries = append(entries, pipeline.Entry{
				Event:   pipeline.Event{ID: id, Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)},
				Targets: []pipeline.Target{{Sink: "s", Route: "r", Payload: payload}},
			})
		}
		if _, err := l.Append(context.Background(), entries); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	q := l.Queue("s")
	sink := &fakeSink{answer: func(call int, b []sdk.Event) ([]sdk.Result, error) {
		out := make([]sdk.Result, len(b))
		for i := range out {
			out[i] = sdk.Retry(time.Hour, errors.New("sink busy"))
		}
		return out, nil
	}}
	o := options(q, sink)
	o.BatchMax = 10000 // the most a sink's delivery.batch_max may be
	run(t, o)
	waitFor(t, "every outcome recorded", func() bool { return stats(t, q).Retrying == n })
	if calls := sink.calls(); len(calls) != 1 || len(calls[0]) != n {
		t.Fatalf("Deliver calls: %d, want one of all %d events (the test needs them settled together)", len(calls), n)
	}
}
