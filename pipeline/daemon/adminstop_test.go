package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
)

// stuckDLQ is a memlog whose dead-letter pages never come until the
// caller's ctx ends, as a call that pages through a huge queue.
type stuckDLQ struct {
	*memlog.Log
	entered atomic.Bool
}

func (l *stuckDLQ) Queue(sink string) pipeline.Queue { return &stuckQueue{l.Log.Queue(sink), l} }

type stuckQueue struct {
	pipeline.Queue
	l *stuckDLQ
}

func (q *stuckQueue) DeadLetters(ctx context.Context, _ uint64, _ int) ([]pipeline.DeadLetter, error) {
	q.l.entered.Store(true)
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestShutdownEndsLongAdminCalls: an admin call still paging when the
// daemon stops (dlq drop --all of a huge dead-letter queue) is cancelled
// before the admin server's shutdown waits for it, so the stop does not
// sit out shutdown_timeout for it nor close the log under it.
func TestShutdownEndsLongAdminCalls(t *testing.T) {
	t.Setenv(pluginVar, "deliver")
	l := &stuckDLQ{Log: memlog.New()}
	const shutdownTimeout = 10 * time.Second
	toml := sinksTOML(fmt.Sprintf("shutdown_timeout = %q", shutdownTimeout.String()), t.TempDir(), deliverSinkTOML())
	_, addr, stop := startStoppable(t, toml, Options{Logger: slog.New(slog.DiscardHandler)}, func(d *Daemon) {
		d.openLog = func(context.Context, config.Log, *slog.Logger, *atomic.Int64) (pipeline.Log, func() map[string]int64, error) {
			return l, nil, nil
		}
	})
	answered := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + addr.admin + "/v1/sinks/s/dlq")
		if err == nil {
			resp.Body.Close()
		}
		answered <- err
	}()
	waitUntil(t, "the admin call to page the dead-letter queue", l.entered.Load)
	t0 := time.Now()
	select {
	case <-stop():
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatal("Run did not return")
	}
	if took := time.Since(t0); took > shutdownTimeout/2 {
		t.Errorf("the stop took %v with an admin call paging: it waited for the call instead of ending it", took)
	}
	select {
	case <-answered:
	case <-time.After(5 * time.Second):
		t.Error("the admin call was not ended by the stop")
	}
}
