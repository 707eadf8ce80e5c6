package dispatch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// BenchmarkOrderKey measures delivery with delivery.order_key against
// without, in the same run, over a Badger log and real gRPC to a sink that
// delivers at once, with 1, 50 and 10,000 keys (event i has key i mod
// keys). One op appends 50 events and waits until all are delivered, so
// with 1 key an op is 50 events one after the other, and with 50 keys one
// batch. Compare events/s of order and none at the same keys.
func BenchmarkOrderKey(b *testing.B) {
	sink := sinktest.Serve(b, nopSink{})
	const perOp = 50
	for _, keys := range []int{1, 50, 10000} {
		for _, ordered := range []bool{false, true} {
			name := fmt.Sprintf("keys=%d/none", keys)
			if ordered {
				name = fmt.Sprintf("keys=%d/order", keys)
			}
			b.Run(name, func(b *testing.B) {
				l, err := badgerlog.Open(b.TempDir(), nil)
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				o := dispatch.Options{Sink: "s", Queue: l.Queue("s"), Deliverer: sink, BatchMax: 500}
				if ordered {
					o.OrderKey = bodyKey
				}
				deliverKeyed(b, l, o, perOp, keys)
			})
		}
	}
}

// BenchmarkOrderKeyBacklog measures how fast a backlog of a few keys
// drains with delivery.order_key and the daemon's default batch_wait
// (20ms): one op appends 1500 events at once (event i of key i mod keys)
// and waits until all are delivered, over real gRPC to a sink that
// delivers at once, on memlog and on Badger. Each key's events go one
// Deliver call after the other; the figure to read is events/s, against
// the same keys with batch_wait 0.
func BenchmarkOrderKeyBacklog(b *testing.B) {
	sink := sinktest.Serve(b, nopSink{})
	const perOp = 1500
	logs := []struct {
		name string
		open func(b *testing.B) (pipeline.Log, func())
	}{
		{"memlog", func(b *testing.B) (pipeline.Log, func()) { l := memlog.New(); return l, func() { l.Close() } }},
		{"badgerlog", func(b *testing.B) (pipeline.Log, func()) {
			l, err := badgerlog.Open(b.TempDir(), nil)
			if err != nil {
				b.Fatal(err)
			}
			return l, func() { l.Close() }
		}},
	}
	for _, lg := range logs {
		for _, keys := range []int{1, 10} {
			for _, wait := range []time.Duration{0, 20 * time.Millisecond} {
				b.Run(fmt.Sprintf("%s/keys=%d/batch_wait=%v", lg.name, keys, wait), func(b *testing.B) {
					l, closeLog := lg.open(b)
					defer closeLog()
					deliverKeyed(b, l, dispatch.Options{
						Sink: "s", Queue: l.Queue("s"), Deliverer: sink, BatchMax: 500, BatchWait: wait, OrderKey: bodyKey,
					}, perOp, keys)
				})
			}
		}
	}
}

// deliverKeyed runs a dispatcher with o (Observe set here) on l while b
// loops: each op appends perOp events, event n with key n mod keys, and
// waits until all are delivered. It reports events/s and events per
// Deliver call.
func deliverKeyed(b *testing.B, l pipeline.Log, o dispatch.Options, perOp, keys int) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	delivered := make(chan int, 1024)
	o.Observe = func(r dispatch.Report) { delivered <- r.Delivered }
	d := dispatch.New(o)
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	seq, calls := 0, 0
	start := time.Now()
	for b.Loop() {
		entries := make([]pipeline.Entry, perOp)
		for i := range entries {
			body, _ := json.Marshal(keyed{K: fmt.Sprint(seq % keys), N: seq})
			entries[i] = pipeline.Entry{
				Event:   pipeline.Event{ID: fmt.Sprint(seq), Source: "src", ReceivedAt: time.Now(), Body: body},
				Targets: []pipeline.Target{{Sink: "s", Route: "r"}},
			}
			seq++
		}
		if _, err := l.Append(ctx, entries); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < perOp; calls++ {
			got += <-delivered
		}
	}
	elapsed := time.Since(start)
	b.ReportMetric(float64(seq)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(seq)/float64(calls), "events/call")
}
