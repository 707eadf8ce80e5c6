package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pipelined/pipelined/sdk"
)

// countSink is a sink that counts calls per source; its config names a
// source to refuse. A real sink writes somewhere durable before it answers
// Delivered.
type countSink struct {
	cfg    countConfig
	counts map[string]int
}

type countConfig struct {
	Refuse   string `json:"refuse"`
	MaxBytes int    `json:"max_bytes"`
}

// Configure sets defaults, decodes strictly and validates; no side effects.
func (s *countSink) Configure(_ context.Context, raw json.RawMessage) error {
	cfg := countConfig{MaxBytes: 1 << 20}
	if err := sdk.DecodeConfig(raw, &cfg); err != nil {
		return err
	}
	if cfg.MaxBytes <= 0 {
		return fmt.Errorf(`config key "max_bytes" = %d must be positive, e.g. 1048576`, cfg.MaxBytes)
	}
	s.cfg = cfg
	s.counts = map[string]int{}
	return nil
}

// Deliver answers one Result per event, in order.
func (s *countSink) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // the whole batch is retried
	}
	results := make([]sdk.Result, len(batch))
	for i, ev := range batch {
		switch {
		case ev.Source == s.cfg.Refuse:
			results[i] = sdk.Permanent(fmt.Errorf("source %q is refused", ev.Source))
		case len(ev.Payload()) > s.cfg.MaxBytes:
			results[i] = sdk.Retry(time.Minute, errors.New("payload too large for now"))
		default:
			s.counts[ev.Source]++
			results[i] = sdk.Delivered()
		}
	}
	return results, nil
}

// Example shows a whole sink: its main would be just
// `func main() { sdk.Serve(&countSink{}) }`. Here the host's calls are made
// directly; package sinktest makes them over the real protocol.
func Example() {
	s := &countSink{}
	ctx := context.Background()
	if err := s.Configure(ctx, json.RawMessage(`{"refuse": "spam", "max_bytes": 32}`)); err != nil {
		fmt.Println("configure:", err)
		return
	}
	batch := []sdk.Event{
		{ID: "e1", Source: "callkaro", Body: json.RawMessage(`{"event":"call_ended"}`)},
		{ID: "e2", Source: "spam", Body: json.RawMessage(`{}`)},
		{ID: "e3", Source: "callkaro", Body: json.RawMessage(`{"event":"call_ended"}`),
			Transformed: json.RawMessage(`{"text":"` + strings.Repeat("x", 40) + `"}`)},
	}
	results, err := s.Deliver(ctx, batch)
	if err != nil {
		fmt.Println("deliver:", err)
		return
	}
	for i, r := range results {
		fmt.Printf("%s: %v\n", batch[i].ID, r)
	}
	// Output:
	// e1: delivered
	// e2: permanent: source "spam" is refused
	// e3: retry after 1m0s: payload too large for now
}

// ExampleDecodeConfig shows defaults set before decoding, and the errors a
// typo or a wrong type gives: each names the key.
func ExampleDecodeConfig() {
	type config struct {
		Dir    string `json:"dir"`
		Rotate string `json:"rotate"`
		Keep   int    `json:"keep"`
	}
	cfg := config{Rotate: "1h", Keep: 7} // defaults first
	err := sdk.DecodeConfig(json.RawMessage(`{"dir": "data/archive", "keep": 30}`), &cfg)
	fmt.Printf("%+v %v\n", cfg, err)

	fmt.Println(sdk.DecodeConfig(json.RawMessage(`{"dri": "data/archive"}`), &cfg))
	fmt.Println(sdk.DecodeConfig(json.RawMessage(`{"keep": "thirty"}`), &cfg))
	// Output:
	// {Dir:data/archive Rotate:1h Keep:30} <nil>
	// unknown config key "dri": check its spelling (valid keys: dir, keep, rotate)
	// config key "keep": want int, got string
}

// ExampleEvent_Payload shows what a sink should deliver: the route's
// transform when it has one, else the webhook body.
func ExampleEvent_Payload() {
	ev := sdk.Event{Body: json.RawMessage(`{"event":"call_ended"}`)}
	fmt.Println(string(ev.Payload()))
	ev.Transformed = json.RawMessage(`{"text":"Interested lead"}`)
	fmt.Println(string(ev.Payload()))
	// Output:
	// {"event":"call_ended"}
	// {"text":"Interested lead"}
}
