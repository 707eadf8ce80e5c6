package pluginhost

import (
	"context"
	"testing"
	"time"

	"github.com/pipelined/pipelined/sdk"
)

// TestWrapUpAnswersTheDeliveryInFlight: a real plugin process whose sink
// is in the middle of a long batch answers at once when the supervisor
// wraps it up: delivered what it did, the rest not attempted, long before
// the call's own deadline.
func TestWrapUpAnswersTheDeliveryInFlight(t *testing.T) {
	s := NewSupervisor(helperSpec(t, "sink", nil), &Options{CallTimeout: time.Minute})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
	})
	if err := s.WrapUp(context.Background()); err != nil {
		t.Fatalf("WrapUp with no plugin running = %v, want nil", err)
	}
	type answer struct {
		res []sdk.Result
		err error
	}
	answered := make(chan answer, 1)
	start := time.Now()
	go func() {
		res, err := s.Deliver(context.Background(), []sdk.Event{
			event("e1", `{"outcome":"delivered"}`),
			event("e2", `{"sleep":"1m"}`),
			event("e3", `{"outcome":"delivered"}`),
		})
		answered <- answer{res, err}
	}()
	// Ask until the call is answered: the first asks may come before the
	// plugin runs or before the call reaches it.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var a answer
wait:
	for {
		select {
		case a = <-answered:
			break wait
		case <-tick.C:
			if err := s.WrapUp(context.Background()); err != nil {
				t.Fatalf("WrapUp = %v", err)
			}
		}
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("Deliver took %v, want an answer at the wrap up", took)
	}
	if a.err != nil || len(a.res) != 3 {
		t.Fatalf("Deliver = %v, %v; want 3 results", a.res, a.err)
	}
	if !a.res[0].IsDelivered() {
		t.Errorf("result[0] = %v, want delivered", a.res[0])
	}
	for _, r := range a.res[1:] {
		if _, na := r.IsNotAttempted(); !na || r.Err() == nil || r.Err().Error() != sdk.ErrWrapUp.Error() {
			t.Errorf("result = %v, want not attempted: %v", r, sdk.ErrWrapUp)
		}
	}
}

// TestWrapUpOfAPluginFromBefore: a plugin built before WrapUp answers
// UNIMPLEMENTED; WrapUp is then no error, and does nothing.
func TestWrapUpOfAPluginFromBefore(t *testing.T) {
	p := startHelper(t, helperSpec(t, "oldsdk", nil), nil)
	if err := p.WrapUp(context.Background()); err != nil {
		t.Errorf("WrapUp of an old plugin = %v, want nil", err)
	}
	if p.Exited() {
		t.Error("the old plugin exited after WrapUp")
	}
}
