package inspector

import (
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline/metrics"
)

// TestDeliveredRateAfterACounterStartsAgain: a reload that removes a sink
// and adds it again starts its delivered counter at 0 again; the
// overview's rate counts from 0 then, never below it.
func TestDeliveredRateAfterACounterStartsAgain(t *testing.T) {
	delivered := map[string]float64{"crm": 500, "db": 100}
	u := New(Options{Counts: func() metrics.Counts {
		return metrics.Counts{Requests: map[string]map[string]float64{}, Delivered: map[string]float64{"crm": delivered["crm"], "db": delivered["db"]}}
	}})
	start := time.Now()
	u.sample(start)
	delivered["crm"], delivered["db"] = 30, 160 // crm removed and added again; db went on
	v := u.rates(start.Add(time.Minute))
	if got := v.delivered["crm"]; got != 30 {
		t.Errorf("crm's rate after its counter started again = %v a minute, want 30 (counted from 0)", got)
	}
	if got := v.delivered["db"]; got != 60 {
		t.Errorf("db's rate = %v a minute, want 60", got)
	}
}
