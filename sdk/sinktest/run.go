// Package sinktest is the harness for sink plugin authors: [Serve] runs a
// sink in-process over the real go-plugin gRPC protocol, and [Run] is the
// conformance suite every sink must pass, called from an ordinary go test:
//
//	func TestConformance(t *testing.T) {
//		sinktest.Run(t, func(t *testing.T) (sdk.Sink, json.RawMessage) {
//			return newSink(), json.RawMessage(`{"dir": "` + t.TempDir() + `"}`)
//		})
//	}
//
// [NewEvent] makes realistic events (CallKaro call_ended webhooks) for an
// author's own tests.
package sinktest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/sdk"
)

// unknownKey is added to the author's config to check that Configure
// rejects keys it does not know.
const unknownKey = "sinktest_no_such_key"

// callTimeout bounds every call the suite makes, so a hanging sink fails the
// check instead of hanging the test.
const callTimeout = 30 * time.Second

// Run runs the conformance suite on the sinks newSink makes. Each check is a
// subtest that gets a fresh sink from newSink (called with the subtest's t,
// so t.TempDir and t.Cleanup are per check), serves it with [Serve] and
// talks to it over gRPC exactly as the host does. config is the sink's
// config table as JSON, one that works: every event delivered with it must
// be answered Delivered. Every violation is reported, not only the first.
//
// The checks: Configure accepts config; Configure rejects an unknown key
// with an error that names it; an empty batch; a batch of N events gets N
// results, none of them the zero [sdk.Result]; the same batch twice (the
// host delivers at least once); unicode and 100 KiB bodies; events with
// Transformed set; Close after Deliver and without Deliver; Deliver with a
// cancelled context returns promptly and leaves the sink usable.
func Run(t *testing.T, newSink func(t *testing.T) (s sdk.Sink, config json.RawMessage)) {
	t.Helper()
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			s, config := newSink(t)
			for _, err := range c.exec(t, s, config) {
				t.Error(err)
			}
		})
	}
}

// check is one rule of the contract. run gets the served sink and returns
// every violation it found.
type check struct {
	name string
	run  func(s sdk.Sink, config json.RawMessage) []error
}

// exec serves s over gRPC and runs the check on it.
func (c check) exec(t testing.TB, s sdk.Sink, config json.RawMessage) []error {
	t.Helper()
	return c.run(Serve(t, s), config)
}

var checks = []check{
	{"Configure", checkConfigure},
	{"ConfigureUnknownKey", checkConfigureUnknownKey},
	{"DeliverEmptyBatch", checkDeliverEmpty},
	{"DeliverBatch", checkDeliverBatch},
	{"DeliverSameBatchTwice", checkDeliverTwice},
	{"DeliverUnicodeAndLargeBodies", checkDeliverUnusualBodies},
	{"DeliverTransformed", checkDeliverTransformed},
	{"CloseAfterDeliver", checkCloseAfterDeliver},
	{"CloseWithoutDeliver", checkCloseWithoutDeliver},
	{"DeliverCancelledContext", checkDeliverCancelled},
}

func checkConfigure(s sdk.Sink, config json.RawMessage) []error {
	errs := configure(s, config)
	return append(errs, closeSink(s)...)
}

func checkConfigureUnknownKey(s sdk.Sink, config json.RawMessage) []error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(orEmpty(config), &obj); err != nil || obj == nil {
		return []error{fmt.Errorf("the config given to sinktest.Run must be a JSON object: %s", config)}
	}
	obj[unknownKey] = json.RawMessage(`true`)
	bad, err := json.Marshal(obj)
	if err != nil {
		return []error{fmt.Errorf("encode config with an unknown key: %w", err)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	var errs []error
	switch err := s.Configure(ctx, bad); {
	case err == nil:
		errs = append(errs, fmt.Errorf("Configure(%s) = nil, want an error naming the unknown key %q (decode with sdk.DecodeConfig)", bad, unknownKey))
	case !strings.Contains(err.Error(), unknownKey):
		errs = append(errs, fmt.Errorf("Configure with unknown key %q = %q, want an error that names the key", unknownKey, err))
	}
	return append(errs, closeSink(s)...)
}

func checkDeliverEmpty(s sdk.Sink, config json.RawMessage) []error {
	if errs := configure(s, config); errs != nil {
		return errs
	}
	errs := deliver(s, []sdk.Event{})
	return append(errs, closeSink(s)...)
}

func checkDeliverBatch(s sdk.Sink, config json.RawMessage) []error {
	if errs := configure(s, config); errs != nil {
		return errs
	}
	errs := deliver(s, batch(0, 10))
	return append(errs, closeSink(s)...)
}

func checkDeliverTwice(s sdk.Sink, config json.RawMessage) []error {
	if errs := configure(s, config); errs != nil {
		return errs
	}
	b := batch(100, 5)
	errs := deliver(s, b)
	for _, err := range deliver(s, b) {
		errs = append(errs, fmt.Errorf("second delivery of the same batch (the host delivers at least once; use Event.ID to be idempotent): %w", err))
	}
	return append(errs, closeSink(s)...)
}

func checkDeliverUnusualBodies(s sdk.Sink, config json.RawMessage) []error {
	if errs := configure(s, config); errs != nil {
		return errs
	}
	texts := []string{
		"नमस्ते, मुझे आपके प्लान में रुचि है। கால் முடிந்தது. 你好 👋🏽 \"quoted\" <b>&amp;</b> \\ \u2028 end",
		strings.Repeat("Customer: हाँ, interested. Agent: great, I will send the details. ", 100<<10/64),
	}
	b := batch(200, len(texts))
	for i, text := range texts {
		b[i].Body = withTranscription(b[i].Body, text)
	}
	if n := len(b[1].Body); n < 100<<10 {
		panic(fmt.Sprintf("sinktest: large body is %d bytes, want >= 100 KiB", n))
	}
	b[0].Headers["x-unicode"] = "ünïcödé ✓"
	errs := deliver(s, b)
	return append(errs, closeSink(s)...)
}

func checkDeliverTransformed(s sdk.Sink, config json.RawMessage) []error {
	if errs := configure(s, config); errs != nil {
		return errs
	}
	b := batch(300, 3)
	for i := range b {
		b[i].Transformed = json.RawMessage(fmt.Sprintf(`{"text":"Interested lead from 91987654321%d"}`, i))
	}
	errs := deliver(s, b)
	return append(errs, closeSink(s)...)
}

func checkCloseAfterDeliver(s sdk.Sink, config json.RawMessage) []error {
	if errs := configure(s, config); errs != nil {
		return errs
	}
	errs := deliver(s, batch(400, 3))
	return append(errs, closeSink(s)...)
}

func checkCloseWithoutDeliver(s sdk.Sink, config json.RawMessage) []error {
	if errs := configure(s, config); errs != nil {
		return errs
	}
	return closeSink(s)
}

func checkDeliverCancelled(s sdk.Sink, config json.RawMessage) []error {
	if errs := configure(s, config); errs != nil {
		return errs
	}
	var errs []error
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = s.Deliver(ctx, batch(500, 3))
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		errs = append(errs, fmt.Errorf("Deliver with a cancelled context did not return within 2s"))
		<-done
	}
	for _, err := range deliver(s, batch(600, 3)) {
		errs = append(errs, fmt.Errorf("Deliver after a cancelled Deliver: %w", err))
	}
	return append(errs, closeSink(s)...)
}

func configure(s sdk.Sink, config json.RawMessage) []error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := s.Configure(ctx, config); err != nil {
		return []error{fmt.Errorf("Configure(%s) = %v, want nil", config, err)}
	}
	return nil
}

// deliver delivers b and reports every way the answer breaks the contract
// for a working sink: a batch error, a wrong number of results, zero
// results, and any result other than Delivered.
func deliver(s sdk.Sink, b []sdk.Event) []error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	results, err := s.Deliver(ctx, b)
	if err != nil {
		if strings.Contains(err.Error(), "results for a batch of") {
			return []error{fmt.Errorf("Deliver(%d events) returned the wrong number of results: %v; want one sdk.Result per event, in order (or nil for all delivered)", len(b), err)}
		}
		return []error{fmt.Errorf("Deliver(%d events) = error %q, want nil", len(b), err)}
	}
	if results == nil {
		return nil
	}
	if len(results) != len(b) {
		return []error{fmt.Errorf("Deliver(%d events) returned %d results, want %d", len(b), len(results), len(b))}
	}
	var errs []error
	for i, r := range results {
		switch {
		case r.IsDelivered():
		case isZero(r):
			errs = append(errs, fmt.Errorf("Deliver result %d (event %s) is the zero sdk.Result, want sdk.Delivered, sdk.Retry or sdk.Permanent", i, b[i].ID))
		default:
			errs = append(errs, fmt.Errorf("Deliver result %d (event %s) = %v, want delivered", i, b[i].ID, r))
		}
	}
	return errs
}

// isZero reports whether r is how the wire carries a zero sdk.Result: the
// sdk's server turns it into a retry whose error says so.
func isZero(r sdk.Result) bool {
	_, retry := r.IsRetry()
	return retry && r.Err() != nil && strings.Contains(r.Err().Error(), "zero sdk.Result")
}

func closeSink(s sdk.Sink) []error {
	c, ok := s.(sdk.Closer)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		return []error{fmt.Errorf("Close = %v, want nil", err)}
	}
	return nil
}

func batch(first, n int) []sdk.Event {
	b := make([]sdk.Event, n)
	for i := range b {
		b[i] = NewEvent(first + i)
	}
	return b
}

// withTranscription returns body with data.transcription set to text.
func withTranscription(body json.RawMessage, text string) json.RawMessage {
	s, err := json.Marshal(text)
	if err != nil {
		panic(err)
	}
	out := bytes.Replace(body, []byte(`"Full call transcript..."`), s, 1)
	if bytes.Equal(out, body) {
		panic(errors.New("sinktest: call_ended.json has no transcription to replace"))
	}
	return out
}

func orEmpty(config json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(config)) == 0 {
		return json.RawMessage(`{}`)
	}
	return config
}
