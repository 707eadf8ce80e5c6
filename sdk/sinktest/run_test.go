package sinktest

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/sdk"
)

// fake is a sink whose faults are switched on one by one, to prove the
// suite catches each violation.
type fake struct {
	acceptUnknownKeys bool // Configure ignores keys it does not know
	wrongCount        bool // Deliver returns one result too few
	zeroResult        bool // Deliver returns zero Results
	rejectDuplicates  bool // a redelivered ID is a permanent failure
	batchError        bool // Deliver fails the whole batch
	closeError        bool // Close fails

	seen map[string]bool
}

var (
	_ sdk.Sink   = (*fake)(nil)
	_ sdk.Closer = (*fake)(nil)
)

func (f *fake) Configure(_ context.Context, raw json.RawMessage) error {
	var cfg struct {
		Name string `json:"name"`
	}
	if f.acceptUnknownKeys {
		return json.Unmarshal(raw, &cfg)
	}
	return sdk.DecodeConfig(raw, &cfg)
}

func (f *fake) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if f.batchError {
		return nil, errors.New("disk on fire")
	}
	if f.seen == nil {
		f.seen = map[string]bool{}
	}
	results := make([]sdk.Result, len(batch))
	for i, ev := range batch {
		switch {
		case f.zeroResult:
		case f.rejectDuplicates && f.seen[ev.ID]:
			results[i] = sdk.Permanent(errors.New("duplicate id " + ev.ID))
		default:
			results[i] = sdk.Delivered()
		}
		f.seen[ev.ID] = true
	}
	if f.wrongCount && len(results) > 0 {
		results = results[1:]
	}
	return results, nil
}

func (f *fake) Close(context.Context) error {
	if f.closeError {
		return errors.New("close: file already closed")
	}
	return nil
}

var fakeConfig = json.RawMessage(`{"name": "fake"}`)

func TestRunGoodSink(t *testing.T) {
	Run(t, func(*testing.T) (sdk.Sink, json.RawMessage) { return &fake{}, fakeConfig })
}

// TestChecksCatchViolations runs every check on a sink with one fault and
// asserts which checks report it, and with what words.
func TestChecksCatchViolations(t *testing.T) {
	tests := []struct {
		name string
		sink *fake
		// want maps the checks that must fail to a phrase of their report;
		// every other check must pass.
		want map[string]string
	}{
		{"good", &fake{}, nil},
		{"accept-unknown-keys", &fake{acceptUnknownKeys: true}, map[string]string{
			"ConfigureUnknownKey": `want an error naming the unknown key "sinktest_no_such_key"`,
		}},
		{"wrong-count", &fake{wrongCount: true}, map[string]string{
			"DeliverBatch":                 "wrong number of results",
			"DeliverSameBatchTwice":        "wrong number of results",
			"DeliverUnicodeAndLargeBodies": "wrong number of results",
			"DeliverTransformed":           "wrong number of results",
			"CloseAfterDeliver":            "wrong number of results",
			"DeliverCancelledContext":      "wrong number of results",
		}},
		{"zero-result", &fake{zeroResult: true}, map[string]string{
			"DeliverBatch":                 "zero sdk.Result",
			"DeliverSameBatchTwice":        "zero sdk.Result",
			"DeliverUnicodeAndLargeBodies": "zero sdk.Result",
			"DeliverTransformed":           "zero sdk.Result",
			"CloseAfterDeliver":            "zero sdk.Result",
			"DeliverCancelledContext":      "zero sdk.Result",
		}},
		{"reject-duplicates", &fake{rejectDuplicates: true}, map[string]string{
			"DeliverSameBatchTwice": "second delivery of the same batch",
		}},
		{"batch-error", &fake{batchError: true}, map[string]string{
			"DeliverEmptyBatch":            `error "disk on fire"`,
			"DeliverBatch":                 `error "disk on fire"`,
			"DeliverSameBatchTwice":        `error "disk on fire"`,
			"DeliverUnicodeAndLargeBodies": `error "disk on fire"`,
			"DeliverTransformed":           `error "disk on fire"`,
			"CloseAfterDeliver":            `error "disk on fire"`,
			"DeliverCancelledContext":      `error "disk on fire"`,
		}},
		{"close-error", &fake{closeError: true}, map[string]string{
			"Configure":                    "Close = close: file already closed",
			"ConfigureUnknownKey":          "Close = close: file already closed",
			"DeliverEmptyBatch":            "Close = close: file already closed",
			"DeliverBatch":                 "Close = close: file already closed",
			"DeliverSameBatchTwice":        "Close = close: file already closed",
			"DeliverUnicodeAndLargeBodies": "Close = close: file already closed",
			"DeliverTransformed":           "Close = close: file already closed",
			"CloseAfterDeliver":            "Close = close: file already closed",
			"CloseWithoutDeliver":          "Close = close: file already closed",
			"DeliverCancelledContext":      "Close = close: file already closed",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range checks {
				sink := *tt.sink // a fresh copy per check
				errs := c.exec(t, &sink, fakeConfig)
				phrase, wantFail := tt.want[c.name]
				switch {
				case !wantFail && len(errs) > 0:
					t.Errorf("check %s reported %v, want no violation", c.name, errs)
				case wantFail && len(errs) == 0:
					t.Errorf("check %s reported nothing, want a violation containing %q", c.name, phrase)
				case wantFail && !strings.Contains(errors.Join(errs...).Error(), phrase):
					t.Errorf("check %s reported %v, want a violation containing %q", c.name, errs, phrase)
				}
			}
		})
	}
}

// TestServeCarriesContract checks what Serve's gRPC path does with answers
// a plain method call would let through.
func TestServeCarriesContract(t *testing.T) {
	ctx := context.Background()

	s := Serve(t, &fake{wrongCount: true})
	_, err := s.Deliver(ctx, batch(0, 3))
	if err == nil || !strings.Contains(err.Error(), "2 results for a batch of 3 events") {
		t.Errorf("Deliver on a sink returning 2 of 3 results = %v, want an error naming both counts", err)
	}

	s = Serve(t, &fake{})
	if err := s.Configure(ctx, json.RawMessage(`{"nmae": "typo"}`)); err == nil || !strings.Contains(err.Error(), `"nmae"`) {
		t.Errorf("Configure with a typo = %v, want an error naming the key", err)
	}
	results, err := s.Deliver(ctx, batch(0, 2))
	if err != nil || len(results) != 2 || !results[0].IsDelivered() || !results[1].IsDelivered() {
		t.Errorf("Deliver(2 events) = %v, %v, want 2 delivered", results, err)
	}
	if _, ok := s.(sdk.Closer); !ok {
		t.Errorf("Serve returned %T, want an sdk.Closer too", s)
	}
}

func TestNewEvent(t *testing.T) {
	a, b := NewEvent(1), NewEvent(2)
	if a.ID == b.ID {
		t.Errorf("NewEvent(1).ID = NewEvent(2).ID = %q, want distinct", a.ID)
	}
	if got := NewEvent(1); got.ID != a.ID || string(got.Body) != string(a.Body) || !got.ReceivedAt.Equal(a.ReceivedAt) {
		t.Errorf("NewEvent(1) is not stable: %+v, then %+v", a, got)
	}
	var ba, bb struct {
		Event string `json:"event"`
		Data  struct {
			CallSid string `json:"callSid"`
		} `json:"data"`
	}
	if err := json.Unmarshal(a.Body, &ba); err != nil {
		t.Fatalf("NewEvent(1).Body does not parse: %v", err)
	}
	if err := json.Unmarshal(b.Body, &bb); err != nil {
		t.Fatalf("NewEvent(2).Body does not parse: %v", err)
	}
	if ba.Event != "call_ended" || ba.Data.CallSid == "" || ba.Data.CallSid == bb.Data.CallSid || len(ba.Data.CallSid) != len(callSid) {
		t.Errorf("NewEvent bodies: event %q, callSids %q and %q; want call_ended with distinct %d-character callSids",
			ba.Event, ba.Data.CallSid, bb.Data.CallSid, len(callSid))
	}
}
