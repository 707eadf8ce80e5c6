package daemon

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline/admin"
)

// TestSinksShowTheBatchInFlight: while a sink's plugin holds a batch,
// GET /v1/sinks says how many events it holds and for how long, so that an
// operator tells a plugin stuck in its call from a queue that is not
// being read; before any batch it says nothing of it.
func TestSinksShowTheBatchInFlight(t *testing.T) {
	s := startSlow(t, 300*time.Millisecond, "forever", false, stopTiming{})
	sinks := func() admin.SinkStatus {
		t.Helper()
		resp, err := http.Get("http://" + s.addr.admin + "/v1/sinks")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var list admin.SinkList
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list.Sinks) != 1 {
			t.Fatalf("GET /v1/sinks = %d sinks, %v", len(list.Sinks), err)
		}
		return list.Sinks[0]
	}
	if st := sinks(); st.InFlight != 0 || st.InFlightSeconds != 0 {
		t.Fatalf("before any event: in_flight %d for %vs, want none", st.InFlight, st.InFlightSeconds)
	}
	s.appendEvents(t, 3)
	s.waitInFlight(t, 3)
	if st := sinks(); st.InFlight != 3 || st.InFlightSeconds <= 0 || st.InFlightSeconds > 60 {
		t.Errorf("while the plugin holds 3 events: in_flight %d for %vs, want 3 for a moment", st.InFlight, st.InFlightSeconds)
	}
}
