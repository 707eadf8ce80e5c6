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

// TestSettledNotAttemptedReason: the reason a call gave for not attempting
// an event is kept until the next attempt, and dropped when the event is
// given up on (a dead letter retried or replayed starts without it).
func TestSettledNotAttemptedReason(t *testing.T) {
	now := time.Now()
	const why = "not sent: the receiver answered 503 with Retry-After"
	parked := pipeline.DeliveryRecord{State: pipeline.StateQueued}.Settled(
		pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: now.Add(time.Hour), Err: why, NotAttempted: true}, now)
	tests := []struct {
		name string
		s    pipeline.Settlement
		want string
	}{
		{"not attempted again", pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: now, Err: "not sent in time", NotAttempted: true}, "not sent in time"},
		{"attempted and failed", pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: now, Err: "503"}, ""},
		{"delivered", pipeline.Settlement{Outcome: pipeline.Ack}, ""},
		{"given up on", pipeline.Settlement{Outcome: pipeline.Dead, Err: "given up: bad data", NotAttempted: true}, ""},
	}
	if parked.NotAttemptedReason != why {
		t.Fatalf("NotAttemptedReason after a call that did not attempt it = %q, want %q", parked.NotAttemptedReason, why)
	}
	for _, tt := range tests {
		if got := parked.Settled(tt.s, now).NotAttemptedReason; got != tt.want {
			t.Errorf("%s: NotAttemptedReason = %q, want %q", tt.name, got, tt.want)
		}
	}
}
