package dispatch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// nopSink delivers everything at once.
type nopSink struct{}

func (nopSink) Configure(context.Context, json.RawMessage) error { return nil }
func (nopSink) Deliver(context.Context, []sdk.Event) ([]sdk.Result, error) {
	return nil, nil
}

// BenchmarkDispatch measures the dispatcher → plugin round trip over real
// gRPC (go-plugin, in process) for batches of 1, 128 and 1024 CallKaro
// events: fetch, encode, Deliver, settle. ns/op is per batch.
func BenchmarkDispatch(b *testing.B) {
	sink := sinktest.Serve(b, nopSink{})
	ev := sinktest.NewEvent(0)
	for _, n := range []int{1, 128, 1024} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			l := memlog.New()
			defer l.Close()
			q := l.Queue("s")
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			delivered := make(chan int, 1024)
			d := dispatch.New(dispatch.Options{
				Sink: "s", Queue: q, Deliverer: sink, BatchMax: n,
				Observe: func(r dispatch.Report) { delivered <- r.Delivered },
			})
			go func() { defer close(done); d.Run(ctx) }()
			seq := 0
			start := time.Now()
			for b.Loop() {
				entries := make([]pipeline.Entry, n)
				for i := range entries {
					seq++
					entries[i] = pipeline.Entry{
						Event:   pipeline.Event{ID: fmt.Sprint(seq), Source: "callkaro", ReceivedAt: ev.ReceivedAt, Body: ev.Body},
						Targets: []pipeline.Target{{Sink: "s", Route: "r"}},
					}
				}
				if _, err := l.Append(ctx, entries); err != nil {
					b.Fatal(err)
				}
				for got := 0; got < n; {
					got += <-delivered
				}
			}
			b.ReportMetric(float64(seq)/time.Since(start).Seconds(), "events/s")
			cancel()
			<-done
		})
	}
}
