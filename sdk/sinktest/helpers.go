package sinktest

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/pipelined/pipelined/sdk"
)

// Config encodes a config table, as pipeline.toml's [[sink]] config would
// reach Configure.
func Config(t testing.TB, table map[string]any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(table)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Configure calls s.Configure with table and fails the test on an error.
func Configure(t testing.TB, s sdk.Sink, table map[string]any) {
	t.Helper()
	if err := s.Configure(context.Background(), Config(t, table)); err != nil {
		t.Fatalf("Configure(%v) = %v", table, err)
	}
}

// DeliverAll delivers batch and fails the test unless every event was
// answered Delivered (a nil result slice counts as all delivered).
func DeliverAll(t testing.TB, s sdk.Sink, batch []sdk.Event) {
	t.Helper()
	results, err := s.Deliver(context.Background(), batch)
	if err != nil {
		t.Fatalf("Deliver(%d events) = error %v, want all delivered", len(batch), err)
	}
	for i, r := range results {
		if !r.IsDelivered() {
			t.Errorf("Deliver result %d (event %s) = %v, want delivered", i, batch[i].ID, r)
		}
	}
}
