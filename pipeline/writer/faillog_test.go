package writer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/writer"
)

// TestFailingLogIsLoggedOnce: on a full disk every commit fails; the log
// gets one line for the first failure, not one per commit, and one when
// appends work again, with how many failed.
func TestFailingLogIsLoggedOnce(t *testing.T) {
	var logs bytes.Buffer
	l := &slowLog{Log: memlog.New(), err: fmt.Errorf("disk: %w", pipeline.ErrFull)}
	w := writer.New(l, &writer.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer w.Close()
	for i := range 50 {
		if _, err := w.Append(context.Background(), entry(fmt.Sprintf("f%d", i), "")); !errors.Is(err, pipeline.ErrFull) {
			t.Fatalf("Append %d on a full log = %v, want ErrFull", i, err)
		}
	}
	l.err = nil // space freed: the writer's goroutine reads it in its next Append, after this
	if _, err := w.Append(context.Background(), entry("ok", "")); err != nil {
		t.Fatalf("Append once space is free = %v", err)
	}
	if n := strings.Count(logs.String(), "append to event log failed"); n != 1 {
		t.Errorf("%d lines say an append failed, after 50 failures within a second; want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `msg="the event log takes appends again" failed_appends=50`) {
		t.Errorf("no line says appends work again after 50 failed:\n%s", logs.String())
	}
}
