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
	"github.com/pipelined/pipelined/sdk/protocol"
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
// with an error that names it; a sink that implements [sdk.Describer] has a
// valid description that config passes ([sdk.Description.Check]), and
// Configure does not refuse as unknown any key the description lists; an empty
// batch, a batch of 1, of 10 and of 1000 events each get one result per
// event, none of them the zero [sdk.Result], and the results the host
// receives over gRPC are the ones the sink returned; the same events
// delivered again with Attempt 2 (the host delivers at least once) are
// accepted; unicode and 100 KiB bodies; events with Transformed set; Close
// after Deliver and without Deliver, each within 5s; Deliver with a
// context cancelled before or during the call returns within 2s and leaves
// the sink usable.
//
// A panic in the sink's Configure, Deliver, Close or Describe fails the
// check that made the call, with the panic's value and stack; the other
// checks still run.
//
// Run cannot see what a plugin process prints to stdout; [RunBinary] runs
// the same checks on a built plugin binary and also fails when it does.
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
	run  func(tg target, config json.RawMessage) []error
}

// target is a sink under test as the checks see it.
type target struct {
	// sink is the host's view: calls cross the wire.
	sink sdk.Sink
	// rec holds what the sink itself answered, to compare with what came
	// over the wire; nil when the sink runs in another process.
	rec *recorder
}

// exec serves s over gRPC and runs the check on it.
func (c check) exec(t testing.TB, s sdk.Sink, config json.RawMessage) []error {
	t.Helper()
	rec := record(s)
	return c.run(target{sink: Serve(t, rec), rec: rec.(interface{ recorded() *recorder }).recorded()}, config)
}

var checks = []check{
	{"Configure", checkConfigure},
	{"ConfigureUnknownKey", checkConfigureUnknownKey},
	{"Describe", checkDescribe},
	{"DescribeMatchesConfigure", checkDescribeMatchesConfigure},
	{"DeliverEmptyBatch", checkDeliverEmpty},
	{"DeliverOne", checkDeliverOne},
	{"DeliverBatch", checkDeliverBatch},
	{"DeliverThousand", checkDeliverThousand},
	{"Redelivery", checkRedelivery},
	{"DeliverUnicodeAndLargeBodies", checkDeliverUnusualBodies},
	{"DeliverTransformed", checkDeliverTransformed},
	{"CloseAfterDeliver", checkCloseAfterDeliver},
	{"CloseWithoutDeliver", checkCloseWithoutDeliver},
	{"DeliverCancelledContext", checkDeliverCancelled},
}

func checkConfigure(tg target, config json.RawMessage) []error {
	errs := configure(tg, config)
	return append(errs, closeSink(tg)...)
}

func checkConfigureUnknownKey(tg target, config json.RawMessage) []error {
	bad, errs := withUnknownKey(config)
	if errs != nil {
		return errs
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	switch err := tg.sink.Configure(ctx, bad); {
	case err == nil:
		errs = append(errs, fmt.Errorf("Configure(%s) = nil, want an error naming the unknown key %q (decode with sdk.DecodeConfig)", bad, unknownKey))
	case !strings.Contains(err.Error(), unknownKey):
		errs = append(errs, fmt.Errorf("Configure with unknown key %q = %q, want an error that names the key", unknownKey, err))
	}
	return append(errs, closeSink(tg)...)
}

// withUnknownKey returns config with unknownKey added.
func withUnknownKey(config json.RawMessage) (json.RawMessage, []error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(orEmpty(config), &obj); err != nil || obj == nil {
		return nil, []error{fmt.Errorf("the config given to sinktest.Run must be a JSON object: %s", config)}
	}
	obj[unknownKey] = json.RawMessage(`true`)
	bad, err := json.Marshal(obj)
	if err != nil {
		return nil, []error{fmt.Errorf("encode config with an unknown key: %w", err)}
	}
	return bad, nil
}

// checkDescribe checks the description of a sink that implements
// sdk.Describer, fetched over the wire as the host does: it is valid, the
// working config passes Check, and Check names an unknown key.
func checkDescribe(tg target, config json.RawMessage) []error {
	dc, ok := tg.sink.(protocol.DescribeClient)
	if !ok {
		return []error{fmt.Errorf("the served sink %T does not implement protocol.DescribeClient", tg.sink)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	d, err := dc.DescribeSink(ctx)
	if errors.Is(err, protocol.ErrNotDescribed) {
		return closeSink(tg) // optional: nothing to check
	}
	if err != nil {
		return append([]error{fmt.Errorf("Describe over gRPC = %v, want a description or protocol.ErrNotDescribed", err)}, closeSink(tg)...)
	}
	var errs []error
	if err := d.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("Describe() returned an invalid description: %w", err))
	}
	for _, err := range d.Check(config) {
		errs = append(errs, fmt.Errorf("the config given to sinktest fails the sink's own description (Describe and Configure disagree, or the config is wrong): %w", err))
	}
	if bad, berrs := withUnknownKey(config); berrs == nil {
		if !strings.Contains(fmt.Sprint(d.Check(bad)), unknownKey) {
			errs = append(errs, fmt.Errorf("Describe().Check with unknown key %q reported nothing", unknownKey))
		}
	}
	return append(errs, closeSink(tg)...)
}

// checkDescribeMatchesConfigure sets every key the description lists
// (keeping the author's values, adding a value of the described type for
// the others; a secret as <name>_env naming an unset variable) and fails
// when Configure answers that one of them is unknown: the description and
// the config struct have drifted apart (a key renamed in one of them only),
// and `pipelined check` would refuse a key the sink takes, or pass one it
// refuses. Only the refusal counts here ("unknown config key", as
// [sdk.DecodeConfig] words it); the sample values may fail validation.
func checkDescribeMatchesConfigure(tg target, config json.RawMessage) []error {
	dc, ok := tg.sink.(protocol.DescribeClient)
	if !ok {
		return closeSink(tg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	d, err := dc.DescribeSink(ctx)
	if err != nil {
		return closeSink(tg) // not described, or reported by the Describe check
	}
	var table map[string]json.RawMessage
	if err := json.Unmarshal(orEmpty(config), &table); err != nil || table == nil {
		return []error{fmt.Errorf("the config given to sinktest.Run must be a JSON object: %s", config)}
	}
	var probed []string
	for _, f := range d.Fields {
		key := f.Name
		if f.Secret {
			if _, ok := table[f.Name+"_file"]; ok {
				continue
			}
			key = f.Name + "_env"
		}
		probed = append(probed, key)
		if _, ok := table[key]; ok {
			continue
		}
		table[key] = sampleValue(f)
	}
	probe, err := json.Marshal(table)
	if err != nil {
		return []error{fmt.Errorf("encode the probe config: %w", err)}
	}
	var errs []error
	if err := tg.sink.Configure(ctx, probe); err != nil {
		for _, k := range probed {
			if strings.Contains(err.Error(), fmt.Sprintf("unknown config key %q", k)) {
				errs = append(errs, fmt.Errorf("Describe lists config key %q but Configure refuses it as unknown: the description and the config struct disagree (describe the config once, with sdk.DescribeConfig); Configure(%s) = %v", k, probe, err))
			}
		}
	}
	return append(errs, closeSink(tg)...)
}

// unsetVariable names an environment variable no one sets.
const unsetVariable = "SINKTEST_PROBE_UNSET_VARIABLE"

// sampleValue is a value of the field's described type.
func sampleValue(f sdk.Field) json.RawMessage {
	if f.Secret {
		return json.RawMessage(`"` + unsetVariable + `"`)
	}
	switch f.Type {
	case "int":
		return json.RawMessage(`1`)
	case "bool":
		return json.RawMessage(`true`)
	case "duration":
		return json.RawMessage(`"1s"`)
	case "size":
		return json.RawMessage(`"1KiB"`)
	case "[]string":
		return json.RawMessage(`["sinktest"]`)
	case "[]int":
		return json.RawMessage(`[1]`)
	case "map", "object":
		return json.RawMessage(`{}`)
	}
	return json.RawMessage(`"sinktest"`)
}

func checkDeliverEmpty(tg target, config json.RawMessage) []error {
	if errs := configure(tg, config); errs != nil {
		return errs
	}
	errs := deliver(tg, []sdk.Event{})
	return append(errs, closeSink(tg)...)
}

func checkDeliverOne(tg target, config json.RawMessage) []error {
	if errs := configure(tg, config); errs != nil {
		return errs
	}
	errs := deliver(tg, batch(700, 1))
	return append(errs, closeSink(tg)...)
}

func checkDeliverBatch(tg target, config json.RawMessage) []error {
	if errs := configure(tg, config); errs != nil {
		return errs
	}
	errs := deliver(tg, batch(0, 10))
	return append(errs, closeSink(tg)...)
}

// checkDeliverThousand delivers 1000 events in one call, as the host does
// under load (batch_max); a sink must answer every one.
func checkDeliverThousand(tg target, config json.RawMessage) []error {
	if errs := configure(tg, config); errs != nil {
		return errs
	}
	errs := deliver(tg, batch(1000, 1000))
	return append(errs, closeSink(tg)...)
}

func checkRedelivery(tg target, config json.RawMessage) []error {
	if errs := configure(tg, config); errs != nil {
		return errs
	}
	b := batch(100, 5)
	errs := deliver(tg, b)
	again := batch(100, 5)
	for i := range again {
		again[i].Attempt = 2
	}
	for _, err := range deliver(tg, again) {
		errs = append(errs, fmt.Errorf("redelivery of the same events with Attempt 2 (the host delivers at least once; use Event.ID to be idempotent): %w", err))
	}
	return append(errs, closeSink(tg)...)
}

func checkDeliverUnusualBodies(tg target, config json.RawMessage) []error {
	if errs := configure(tg, config); errs != nil {
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
	errs := deliver(tg, b)
	return append(errs, closeSink(tg)...)
}

func checkDeliverTransformed(tg target, config json.RawMessage) []error {
	if errs := configure(tg, config); errs != nil {
		return errs
	}
	b := batch(300, 3)
	for i := range b {
		b[i].Transformed = json.RawMessage(fmt.Sprintf(`{"text":"Interested lead from 91987654321%d"}`, i))
	}
	errs := deliver(tg, b)
	return append(errs, closeSink(tg)...)
}

func checkCloseAfterDeliver(tg target, config json.RawMessage) []error {
	if errs := configure(tg, config); errs != nil {
		return errs
	}
	errs := deliver(tg, batch(400, 3))
	return append(errs, closeSink(tg)...)
}

func checkCloseWithoutDeliver(tg target, config json.RawMessage) []error {
	if errs := configure(tg, config); errs != nil {
		return errs
	}
	return closeSink(tg)
}

// cancelGrace is how long Deliver may take to return once its ctx is done.
const cancelGrace = 2 * time.Second

func checkDeliverCancelled(tg target, config json.RawMessage) []error {
	if errs := configure(tg, config); errs != nil {
		return errs
	}
	var errs []error
	// Cancelled before the call, then during a call of 1000 events.
	for _, c := range []struct {
		what  string
		after time.Duration
		b     []sdk.Event
	}{
		{"a context cancelled before the call", 0, batch(500, 3)},
		{"a context cancelled during the call", time.Millisecond, batch(2000, 1000)},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		if c.after == 0 {
			cancel()
		} else {
			time.AfterFunc(c.after, cancel)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = tg.sink.Deliver(ctx, c.b)
		}()
		select {
		case <-done:
		case <-time.After(c.after + cancelGrace):
			errs = append(errs, fmt.Errorf("Deliver with %s did not return within %v of the cancel", c.what, cancelGrace))
			<-done
		}
		cancel()
	}
	for _, err := range deliver(tg, batch(600, 3)) {
		errs = append(errs, fmt.Errorf("Deliver after a cancelled Deliver: %w", err))
	}
	return append(errs, closeSink(tg)...)
}

func configure(tg target, config json.RawMessage) []error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := tg.sink.Configure(ctx, config); err != nil {
		return []error{fmt.Errorf("Configure(%s) = %v, want nil", config, err)}
	}
	return nil
}

// deliver delivers b and reports every way the answer breaks the contract
// for a working sink: a batch error, a wrong number of results, zero
// results, results that differ from what the sink returned, and any result
// other than Delivered.
func deliver(tg target, b []sdk.Event) []error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	results, err := tg.sink.Deliver(ctx, b)
	if err != nil {
		if strings.Contains(err.Error(), "results for a batch of") {
			return []error{fmt.Errorf("Deliver(%d events) returned the wrong number of results: %v; want one sdk.Result per event, in order (or nil for all delivered)", len(b), err)}
		}
		return []error{fmt.Errorf("Deliver(%d events) = error %q, want nil", len(b), err)}
	}
	var errs []error
	if tg.rec != nil {
		errs = compareResults(b, tg.rec.last(), results)
	}
	if results == nil {
		return errs
	}
	if len(results) != len(b) {
		return append(errs, fmt.Errorf("Deliver(%d events) returned %d results, want %d", len(b), len(results), len(b)))
	}
	var bad []error
	for i, r := range results {
		switch {
		case r.IsDelivered():
		case isZero(r):
			bad = append(bad, fmt.Errorf("Deliver result %d (event %s) is the zero sdk.Result, want sdk.Delivered, sdk.Retry, sdk.Permanent or sdk.NotAttempted", i, b[i].ID))
		default:
			bad = append(bad, fmt.Errorf("Deliver result %d (event %s) = %v, want delivered", i, b[i].ID, r))
		}
	}
	return append(errs, capped(bad)...)
}

// maxReported is how many violations of one kind a call reports before it
// sums up the rest: a batch of 1000 makes 1000 otherwise.
const maxReported = 5

func capped(errs []error) []error {
	if len(errs) <= maxReported {
		return errs
	}
	return append(errs[:maxReported:maxReported], fmt.Errorf("... and %d more results like these", len(errs)-maxReported))
}

// compareResults reports where the results the host received over the
// wire differ from those the sink returned (sent; nil means every event
// delivered). A zero Result is reported by deliver, not here.
func compareResults(b []sdk.Event, sent, received []sdk.Result) []error {
	if sent == nil {
		sent = make([]sdk.Result, len(b))
		for i := range sent {
			sent[i] = sdk.Delivered()
		}
	}
	if len(sent) != len(received) {
		return nil // the count is reported on its own
	}
	var errs []error
	for i := range sent {
		if sent[i] == (sdk.Result{}) || sameResult(sent[i], received[i]) {
			continue
		}
		id := ""
		if i < len(b) {
			id = b[i].ID
		}
		errs = append(errs, fmt.Errorf("Deliver result %d (event %s): the sink returned %v, the host received %v over gRPC", i, id, sent[i], received[i]))
	}
	return capped(errs)
}

// sameResult reports whether a and b have the same outcome, delay and
// error message.
func sameResult(a, b sdk.Result) bool {
	aAfter, aRetry := a.IsRetry()
	bAfter, bRetry := b.IsRetry()
	aNotAfter, aNot := a.IsNotAttempted()
	bNotAfter, bNot := b.IsNotAttempted()
	msg := func(err error) string {
		if err == nil {
			return ""
		}
		return err.Error()
	}
	return a.IsDelivered() == b.IsDelivered() && a.IsPermanent() == b.IsPermanent() &&
		aRetry == bRetry && aAfter == bAfter && aNot == bNot && aNotAfter == bNotAfter && msg(a.Err()) == msg(b.Err())
}

// isZero reports whether r is how the wire carries a zero sdk.Result: the
// sdk's server turns it into a retry whose error says so.
func isZero(r sdk.Result) bool {
	_, retry := r.IsRetry()
	return retry && r.Err() != nil && strings.Contains(r.Err().Error(), "zero sdk.Result")
}

// closeTimeout is how long Close may take: the host gives plugins a
// bounded time to stop.
const closeTimeout = 5 * time.Second

// closeSink closes the sink with a ctx of closeTimeout and reports an
// error, or a Close that outlives its ctx.
func closeSink(tg target) []error {
	c, ok := tg.sink.(sdk.Closer)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	start := time.Now()
	err := c.Close(ctx)
	took := time.Since(start)
	var errs []error
	if took > closeTimeout {
		errs = append(errs, fmt.Errorf("Close took %v, want it to return within %v (return when its ctx expires)", took.Round(time.Millisecond), closeTimeout))
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("Close = %v, want nil", err))
	}
	return errs
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
