// Package sdk is all a sink plugin author imports to write a sink for
// pipelined: implement [Sink], call [Serve] from main, build a binary named
// pipelined-sink-<name>.
//
// A minimal sink:
//
//	type stdoutSink struct{}
//
//	func (stdoutSink) Configure(ctx context.Context, raw json.RawMessage) error { return nil }
//
//	func (stdoutSink) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
//		results := make([]sdk.Result, len(batch))
//		for i, ev := range batch {
//			results[i] = sdk.Delivered()
//			_ = ev // write ev.Payload() somewhere
//		}
//		return results, nil
//	}
//
//	func main() { sdk.Serve(stdoutSink{}) }
//
// A sink's config is described once, by a struct with tags: [DescribeConfig]
// makes the description `pipelined check` and `pipelined plugins describe`
// use, and [DecodeConfig] decodes, applies defaults, refuses unknown and
// missing required keys, and reads secrets from <key>_env / <key>_file.
//
// The host (pipelined) runs each plugin as its own process and talks to it
// over gRPC with hashicorp/go-plugin; package sinktest runs a sink through the
// same protocol inside an ordinary go test. docs/plugin-protocol.md in the
// repository specifies that protocol for a plugin in another language.
//
// The sdk is a Go module of its own, github.com/pipelined/pipelined/sdk,
// which needs go-plugin, gRPC, protobuf and hclog, and none of the daemon's
// dependencies.
package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"
)

// Sink is what a plugin implements.
//
// The host calls Configure once, then Deliver any number of times, never two
// calls at once: a sink needs no locking for its own calls. If the sink also
// implements [Closer], Close is called last.
type Sink interface {
	// Configure receives the sink's `config` table from pipeline.toml as a
	// JSON object ("{}" when there is none). It sets defaults, decodes
	// (see [DecodeConfig]) and validates, and returns an error that says
	// which key is wrong and how to fix it: one line per problem (e.g.
	// [errors.Join]), each naming its key as `config key "name"` (a nested
	// one as "name.sub"), so that the host prefixes the line with where
	// pipeline.toml sets that key (file:line:col; the table's place for a
	// key it lacks). It must be cheap and have no
	// side effects: `pipelined check` calls it too. Open files and
	// connections lazily, in the first Deliver. ctx limits this call only.
	Configure(ctx context.Context, config json.RawMessage) error

	// Deliver hands over a batch of events in log order. It returns one
	// [Result] per event, in the same order; a nil slice with a nil error
	// means every event was delivered. A non-nil error means the whole
	// batch failed for a reason that may pass (the host retries it with
	// backoff). Answer [Delivered] only once the event is durable on the
	// sink's side: the host then forgets it. Events can arrive again
	// (at-least-once delivery); Event.ID is stable, use it to be
	// idempotent. ctx is cancelled when the host gives up on the call: its
	// deadline (60 s) has passed, or the host is stopping. Before it gives
	// up at a stop, the host asks the sink to wrap up: ctx ends with the
	// cause [ErrWrapUp] while the call stays open, and the results Deliver
	// then returns reach the host (see ErrWrapUp). An error
	// returned after the deadline counts as a call out of time, not as
	// the sink's own failure; three calls in a row out of time get the
	// plugin restarted.
	Deliver(ctx context.Context, batch []Event) ([]Result, error)
}

// ErrWrapUp is the cause (see [context.Cause]) with which the ctx of a
// [Sink.Deliver] in flight ends when the host is stopping and wants the
// sink's answer now: "answer for what you have done". Unlike a deadline or
// a call the host called off, the call stays open, and the results Deliver
// returns are recorded as usual: [Delivered] for each event the sink
// delivered, so that it is not sent again after the restart. So, when ctx
// ends with this cause, a sink:
//
//   - starts nothing new: each event it has not begun to send is
//     [NotAttempted] (0), which costs the event no attempt;
//   - gives up what is under way (requests made with ctx end by
//     themselves): an event sent without an answer may have arrived, so it
//     is a [Retry], as after a timeout;
//   - answers every event it did finish as it would have, and returns at
//     once, within a second or two: the host stops waiting at its stop
//     deadline, and an answer that comes later is lost (the whole batch is
//     then delivered again after the restart).
//
// A sink that ignores ctx still works: its answer comes when it comes, and
// is used if it is in time. Returning an error instead of results fails the
// whole batch (it is retried after the restart).
//
// Its text is what an operator reads where a sink quotes it in an event's
// error (`pipelined events show`, the daemon's log): "not sent: the daemon
// is stopping". Match it with [errors.Is], never by its text.
var ErrWrapUp = errors.New("the daemon is stopping")

// Closer is implemented by sinks that hold resources (files, connections).
// Close is called once when the host stops the plugin, after the last
// Deliver returned; it should flush and release them before ctx expires.
type Closer interface {
	Close(ctx context.Context) error
}

// Event is one event delivered to a sink.
type Event struct {
	// ID identifies the event for life; redeliveries carry the same ID.
	ID string
	// Source is the name of the source that received the webhook.
	Source string
	// Route is the name of the route that sent the event to this sink.
	Route string
	// ReceivedAt is when pipelined accepted the request.
	ReceivedAt time.Time
	// Headers are the request headers, lower-case names, credentials removed.
	Headers map[string]string
	// Body is the webhook body exactly as received (JSON).
	Body json.RawMessage
	// Transformed is what the route's transform built (JSON), or nil when
	// the route has no transform.
	Transformed json.RawMessage
	// Attempt numbers this delivery among those of the event's current
	// queueing for this sink, from 1: it is the count the sink's
	// max_attempts limits. Every later delivery of that queueing (after a
	// Retry result, a batch error, a plugin restart; not after
	// [NotAttempted], which costs none) has Attempt+1; a
	// failure at Attempt >= max_attempts sends the event to the
	// dead-letter queue (except during an outage: the breaker's probes do
	// not count toward the limit, so Attempt may pass it). An
	// operator's DLQ retry (`pipelined dlq retry`) or replay
	// (`pipelined replay`) queues the event anew, with a fresh budget of
	// max_attempts, and Attempt starts again at 1. So Attempt 1 does not
	// mean the sink never saw the event (a replay, or a daemon crash
	// between delivery and acknowledgement, sends it again): use ID to be
	// idempotent. The count over the event's whole life is in its delivery
	// record (`pipelined events show ID`, "attempts").
	Attempt int
	// TraceContext holds the W3C Trace Context headers of this delivery
	// attempt ("traceparent" and, when set, "tracestate"); nil when the
	// host does not trace. A sink that calls another service sets them as
	// headers of its request, so the receiver's spans join the trace.
	TraceContext map[string]string
}

// Payload returns what the route wants delivered: the transform's output
// when the route has one, else the body.
func (e Event) Payload() json.RawMessage {
	if e.Transformed != nil {
		return e.Transformed
	}
	return e.Body
}

// Result is a sink's answer for one event. Make one with [Delivered],
// [Retry], [Permanent] or [NotAttempted]; the zero Result is not a valid
// answer.
type Result struct {
	outcome outcome
	after   time.Duration
	err     error
}

type outcome uint8

const (
	outcomeNone outcome = iota
	outcomeDelivered
	outcomeRetry
	outcomePermanent
	outcomeNotAttempted
)

// Delivered reports that the event is durably stored by the sink.
func Delivered() Result { return Result{outcome: outcomeDelivered} }

// Retry reports a failure that may pass: the host delivers the event again
// after the given delay, or after its own backoff when after is 0, until the
// sink's max_attempts is reached.
func Retry(after time.Duration, err error) Result {
	if after < 0 {
		after = 0
	}
	return Result{outcome: outcomeRetry, after: after, err: err}
}

// Permanent reports a failure that will not pass by retrying (a rejected
// payload, say): the event goes to the sink's dead-letter queue with err.
func Permanent(err error) Result { return Result{outcome: outcomePermanent, err: err} }

// NotAttempted reports that the sink did not try this event: it was not
// sent at all (the call's time ran out before its turn, or the destination
// throttled an earlier event of the batch). It is not a failure of the
// event, and the host treats it so:
//
//   - it puts the event back without counting an attempt: the event's next
//     delivery has the same [Event.Attempt], and it never counts toward the
//     sink's max_attempts, nor grows the backoff of its later retries;
//   - not before after: 0 means as soon as the sink has capacity (the next
//     batch, usually at once); after a 429 pass its Retry-After. When no
//     event of a batch was delivered (none was attempted, or every one
//     attempted is a [Retry]: a 429 without Retry-After), the host waits
//     at least the sink's backoff_min (1 s by default) before it sends
//     the events not attempted again (and, when none was attempted, before
//     its next call, with other events or not), so that a sink that takes
//     nothing, or a receiver that throttles, is not called in a hot loop;
//   - it neither opens the sink's circuit breaker nor feeds it: a batch is
//     judged by the events the sink attempted, and one with none says
//     nothing about the sink;
//   - max_age still applies: it is wall time, counted from the event's
//     first failure or not-attempted answer, and an event past it is given
//     up on (to the dead-letter queue) at its next answer that is not
//     [Delivered], this one included.
//
// reason says why, for the host's log (the event's delivery record lists
// attempts only, so it does not show there).
//
// Use it only for events the sink did not send. An event it sent and got
// no answer for (a timeout) may have arrived: that is a [Retry].
//
// A host older than this result (one whose protocol has no
// OUTCOME_NOT_ATTEMPTED) reads it as an outcome it does not know, which it
// retries with its own backoff, ignoring after: it degrades to Retry(0,
// reason), counting an attempt, as before this result existed.
func NotAttempted(after time.Duration, reason error) Result {
	if after < 0 {
		after = 0
	}
	return Result{outcome: outcomeNotAttempted, after: after, err: reason}
}

// IsDelivered reports whether r is [Delivered].
func (r Result) IsDelivered() bool { return r.outcome == outcomeDelivered }

// IsRetry reports whether r is a [Retry], and the delay it asks for.
func (r Result) IsRetry() (after time.Duration, ok bool) { return r.after, r.outcome == outcomeRetry }

// IsPermanent reports whether r is [Permanent].
func (r Result) IsPermanent() bool { return r.outcome == outcomePermanent }

// IsNotAttempted reports whether r is [NotAttempted], and the delay it
// asks for.
func (r Result) IsNotAttempted() (after time.Duration, ok bool) {
	return r.after, r.outcome == outcomeNotAttempted
}

// Err returns the error of a failed result (the reason of a
// [NotAttempted]), nil for [Delivered].
func (r Result) Err() error { return r.err }

// String describes the result for logs and test failures.
func (r Result) String() string {
	switch r.outcome {
	case outcomeDelivered:
		return "delivered"
	case outcomeRetry:
		if r.after > 0 {
			return fmt.Sprintf("retry after %v: %v", r.after, r.err)
		}
		return fmt.Sprintf("retry: %v", r.err)
	case outcomePermanent:
		return fmt.Sprintf("permanent: %v", r.err)
	case outcomeNotAttempted:
		if r.after > 0 {
			return fmt.Sprintf("not attempted, again after %v: %v", r.after, r.err)
		}
		return fmt.Sprintf("not attempted: %v", r.err)
	}
	return "invalid result (zero Result)"
}

// DecodeConfig decodes a sink's config into v strictly. v is usually a
// pointer to a struct whose fields carry `json` tags; set its defaults
// before the call. Every problem is reported at once, each naming its key: a
// key v has no field for (so a typo in pipeline.toml is caught by `pipelined
// check` instead of silently ignored), and a value of the wrong type or
// format. Keys that decode are set even when others fail, so the caller can
// go on validating and report its own problems too.
//
// The struct's tags describe the config (see [DescribeConfig]): a field
// tagged required:"true" must be set, and a string field tagged
// secret:"true", say `json:"token"`, is read with [Secret] from the keys
// token_env or token_file (one of them; token itself is refused, a secret
// is never written inline), unless the struct has its own token_env or
// token_file field.
func DecodeConfig(config json.RawMessage, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		if len(bytes.TrimSpace(config)) == 0 {
			return nil
		}
		return decodeStrict(config, v)
	}
	var table map[string]json.RawMessage
	if len(bytes.TrimSpace(config)) > 0 {
		if err := json.Unmarshal(config, &table); err != nil {
			return fmt.Errorf("config is not a table of keys: %w", err)
		}
	}
	fields := configFields(rv.Elem())
	byName := map[string]configField{}
	for _, f := range fields {
		byName[f.name] = f
	}
	// A secret's keys: <name>_env and <name>_file, unless declared on their own.
	implicit := map[string]bool{}
	var valid []string
	for _, f := range fields {
		if !f.secret {
			valid = append(valid, f.name)
			continue
		}
		for _, k := range []string{f.name + "_env", f.name + "_file"} {
			if _, ok := byName[k]; !ok {
				implicit[k] = true
				valid = append(valid, k)
			}
		}
	}
	sort.Strings(valid)
	keys := make([]string, 0, len(table))
	for k := range table {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []error
	secretRefs := map[string]string{}
	for _, k := range keys {
		f, ok := byName[k]
		switch {
		case ok && f.secret:
			errs = append(errs, fmt.Errorf("config key %q must not be written inline: it is a secret, never put it in the config; set %s_env (an environment variable) or %s_file (a file) instead", k, k, k))
		case ok:
			if err := decodeStrict(table[k], f.value.Addr().Interface()); err != nil {
				errs = append(errs, fmt.Errorf("config key %q: %w", k, err))
			}
		case implicit[k]:
			var s string
			if err := json.Unmarshal(table[k], &s); err != nil {
				errs = append(errs, fmt.Errorf("config key %q: want a string (the name of an environment variable or a file), got %s", k, kindOf(table[k])))
				continue
			}
			if strings.TrimSpace(s) == "" {
				errs = append(errs, fmt.Errorf("config key %q is empty: name an environment variable or a file", k))
				continue
			}
			secretRefs[k] = s
		default:
			errs = append(errs, fmt.Errorf("unknown config key %q: check its spelling (valid keys: %s)", k, strings.Join(valid, ", ")))
		}
	}
	for _, f := range fields {
		if f.secret {
			if _, inline := table[f.name]; inline {
				continue // refused above
			}
			envVar, file := secretRefs[f.name+"_env"], secretRefs[f.name+"_file"]
			if envVar == "" && file == "" && !f.required {
				continue
			}
			val, err := Secret(f.name, envVar, file)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if f.value.Kind() != reflect.String {
				errs = append(errs, fmt.Errorf("config field for %s is tagged secret but is a %s: make it a string", f.name, f.value.Type()))
				continue
			}
			f.value.SetString(val)
			continue
		}
		if _, ok := table[f.name]; !ok && f.required {
			errs = append(errs, requiredError(Field{Name: f.name, Doc: f.doc}))
		}
	}
	return errors.Join(errs...)
}

// decodeStrict decodes one JSON value, refusing unknown keys of nested
// objects, with errors that say what was expected.
func decodeStrict(raw json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var te *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &te):
		if te.Field != "" {
			return fmt.Errorf("key %q: want %v, got %s", te.Field, te.Type, te.Value)
		}
		return fmt.Errorf("want %v, got %s", te.Type, te.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("unknown key %s: check its spelling", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return err
}
