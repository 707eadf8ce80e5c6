package inspector

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// attemptN matches a timeline step that lists an attempt.
var attemptN = regexp.MustCompile(`attempts? \d`)

// TestTimelineNotAttempted: an event the sink answered not attempted
// (sdk.NotAttempted) shows no attempt in its timeline, only when it is due
// again and why (the reason the sink gave); so does one retrying that the
// sink's latest call did not attempt; once delivered, the one attempt that
// delivered it.
func TestTimelineNotAttempted(t *testing.T) {
	received := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	due := received.Add(30 * time.Second)
	const why = "not sent: the receiver answered 503 with Retry-After"
	rec := pipeline.DeliveryRecord{Sink: "crm", Route: "all", State: pipeline.StateQueued, NextAttemptAt: due, NotAttemptedReason: why}
	steps := timeline(received, rec)
	var what []string
	for _, s := range steps {
		what = append(what, s.What)
		if attemptN.MatchString(s.What) {
			t.Errorf("timeline of an event never attempted shows %q", s.What)
		}
	}
	if last := steps[len(steps)-1]; !strings.Contains(last.What, "not attempted") || !last.At.Equal(due) || last.Error != why {
		t.Errorf("timeline = %q, last step at %v (%q); want it to end with the not-attempted event due at %v, and why", what, last.At, last.Error, due)
	}
	retrying := pipeline.DeliveryRecord{Sink: "crm", Route: "all", State: pipeline.StateRetrying, Attempts: 1, NextAttemptAt: due, NotAttemptedReason: why}
	if last := timeline(received, retrying)[len(timeline(received, retrying))-1]; !strings.Contains(last.What, "not attempted") || last.Error != why {
		t.Errorf("timeline of a retry not attempted at the latest call ends with %q (%q), want it to say so, and why", last.What, last.Error)
	}

	rec = rec.Settled(pipeline.Settlement{Outcome: pipeline.Ack}, due)
	steps = timeline(received, rec)
	if len(steps) != 2 || steps[1].What != "attempt 1: delivered" {
		var what []string
		for _, s := range steps {
			what = append(what, s.What)
		}
		t.Errorf("timeline after the delivery = %q, want queued, then delivered (its one attempt)", what)
	}
}
