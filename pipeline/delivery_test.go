package pipeline_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// TestSettledKeepsLatestFailures: each failed attempt is kept with its
// error, the latest MaxFailures of them; a success adds none.
func TestSettledKeepsLatestFailures(t *testing.T) {
	now := time.Now()
	var r pipeline.DeliveryRecord
	for i := 1; i <= pipeline.MaxFailures+3; i++ {
		prev := r
		r = r.Settled(pipeline.Settlement{Outcome: pipeline.Retry, Err: fmt.Sprint("e", i)}, now)
		if len(prev.Failures) > 0 && prev.Failures[len(prev.Failures)-1].Attempt != i-1 {
			t.Fatalf("attempt %d changed the previous record's failures", i)
		}
	}
	if len(r.Failures) != pipeline.MaxFailures {
		t.Fatalf("after %d failures, %d kept, want %d", pipeline.MaxFailures+3, len(r.Failures), pipeline.MaxFailures)
	}
	if f := r.Failures[0]; f.Attempt != 4 || f.Err != "e4" {
		t.Errorf("oldest kept = %+v, want attempt 4 (e4)", f)
	}
	if f := r.Failures[len(r.Failures)-1]; f.Attempt != pipeline.MaxFailures+3 || f.Err != fmt.Sprint("e", pipeline.MaxFailures+3) {
		t.Errorf("latest kept = %+v", f)
	}
	r = r.Settled(pipeline.Settlement{Outcome: pipeline.Ack}, now)
	if r.State != pipeline.StateDelivered || len(r.Failures) != pipeline.MaxFailures {
		t.Errorf("after a success: state %s, %d failures; want delivered and the failures as they were", r.State, len(r.Failures))
	}
}
