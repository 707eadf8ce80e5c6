package sinktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipelined/pipelined/sdk"
)

// fake is a sink whose faults are switched on one by one, to prove the
// suite catches each violation.
type fake struct {
	acceptUnknownKeys bool         // Configure ignores keys it does not know
	wrongCount        bool         // Deliver returns one result too few
	zeroResult        bool         // Deliver returns zero Results
	rejectDuplicates  bool         // a redelivered ID is a permanent failure
	batchError        bool         // Deliver fails the whole batch
	closeError        bool         // Close fails
	script            []sdk.Result // Deliver answers event i with script[i%len(script)]
	printStdout       bool         // Configure prints to os.Stdout
	printFD1          bool         // Deliver writes to file descriptor 1
	panicConfigure    bool         // Configure panics
	panicDeliver      bool         // Deliver panics

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
	if f.printStdout {
		fmt.Println("configured!")
	}
	if f.panicConfigure {
		panic("configure exploded")
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
	if f.panicDeliver {
		var m map[string]int
		m["boom"]++ // assignment to entry in nil map
	}
	if f.seen == nil {
		f.seen = map[string]bool{}
	}
	if f.printFD1 {
		os.NewFile(1, "stdout").Write([]byte("delivering\n"))
	}
	results := make([]sdk.Result, len(batch))
	for i, ev := range batch {
		switch {
		case len(f.script) > 0:
			results[i] = f.script[i%len(f.script)]
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
		{"scripted-outcomes", &fake{script: script}, map[string]string{
			"DeliverOne":                   "= retry after 2s: busy, want delivered",
			"DeliverBatch":                 "= permanent: bad payload, want delivered",
			"DeliverThousand":              "... and ",
			"Redelivery":                   "= retry: later, want delivered",
			"DeliverUnicodeAndLargeBodies": "= retry after 2s: busy, want delivered",
			"DeliverTransformed":           "= permanent: bad payload, want delivered",
			"CloseAfterDeliver":            "= retry after 2s: busy, want delivered",
			"DeliverCancelledContext":      "= retry after 2s: busy, want delivered",
		}},
		{"accept-unknown-keys", &fake{acceptUnknownKeys: true}, map[string]string{
			"ConfigureUnknownKey": `want an error naming the unknown key "sinktest_no_such_key"`,
		}},
		{"wrong-count", &fake{wrongCount: true}, map[string]string{
			"DeliverOne":                   "wrong number of results",
			"DeliverBatch":                 "wrong number of results",
			"DeliverThousand":              "wrong number of results",
			"Redelivery":                   "wrong number of results",
			"DeliverUnicodeAndLargeBodies": "wrong number of results",
			"DeliverTransformed":           "wrong number of results",
			"CloseAfterDeliver":            "wrong number of results",
			"DeliverCancelledContext":      "wrong number of results",
		}},
		{"zero-result", &fake{zeroResult: true}, map[string]string{
			"DeliverOne":                   "zero sdk.Result",
			"DeliverBatch":                 "zero sdk.Result",
			"DeliverThousand":              "zero sdk.Result",
			"Redelivery":                   "zero sdk.Result",
			"DeliverUnicodeAndLargeBodies": "zero sdk.Result",
			"DeliverTransformed":           "zero sdk.Result",
			"CloseAfterDeliver":            "zero sdk.Result",
			"DeliverCancelledContext":      "zero sdk.Result",
		}},
		{"reject-duplicates", &fake{rejectDuplicates: true}, map[string]string{
			"Redelivery": "redelivery of the same events with Attempt 2",
		}},
		{"batch-error", &fake{batchError: true}, map[string]string{
			"DeliverEmptyBatch":            `error "disk on fire"`,
			"DeliverOne":                   `error "disk on fire"`,
			"DeliverBatch":                 `error "disk on fire"`,
			"DeliverThousand":              `error "disk on fire"`,
			"Redelivery":                   `error "disk on fire"`,
			"DeliverUnicodeAndLargeBodies": `error "disk on fire"`,
			"DeliverTransformed":           `error "disk on fire"`,
			"CloseAfterDeliver":            `error "disk on fire"`,
			"DeliverCancelledContext":      `error "disk on fire"`,
		}},
		{"close-error", &fake{closeError: true}, map[string]string{
			"Configure":                    "Close = close: file already closed",
			"ConfigureUnknownKey":          "Close = close: file already closed",
			"Describe":                     "Close = close: file already closed",
			"DescribeMatchesConfigure":     "Close = close: file already closed",
			"DeliverEmptyBatch":            "Close = close: file already closed",
			"DeliverOne":                   "Close = close: file already closed",
			"DeliverBatch":                 "Close = close: file already closed",
			"DeliverThousand":              "Close = close: file already closed",
			"Redelivery":                   "Close = close: file already closed",
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

// script is what the scripted fake answers: one of each outcome.
var script = []sdk.Result{
	sdk.Retry(2*time.Second, errors.New("busy")),
	sdk.Delivered(),
	sdk.Permanent(errors.New("bad payload")),
	sdk.Retry(0, errors.New("later")),
}

// TestOutcomesCrossTheWire checks that what a sink answers per event is
// what the host receives over gRPC.
func TestOutcomesCrossTheWire(t *testing.T) {
	s := Serve(t, &fake{script: script})
	b := batch(0, 8)
	got, err := s.Deliver(context.Background(), b)
	if err != nil || len(got) != len(b) {
		t.Fatalf("Deliver(8 events) = %v, %v; want 8 results", got, err)
	}
	for i, r := range got {
		if want := script[i%len(script)]; !sameResult(r, want) {
			t.Errorf("result %d = %v, want %v", i, r, want)
		}
	}
	rec := record(&fake{script: script})
	tg := target{sink: Serve(t, rec), rec: rec.(interface{ recorded() *recorder }).recorded()}
	for _, err := range deliver(tg, b) {
		if strings.Contains(err.Error(), "over gRPC") {
			t.Errorf("deliver reported a wire difference on a faithful wire: %v", err)
		}
	}
}

func TestCompareResults(t *testing.T) {
	b := batch(0, 3)
	sent := []sdk.Result{sdk.Delivered(), sdk.Retry(time.Second, errors.New("busy")), sdk.Permanent(errors.New("bad"))}
	tests := []struct {
		name     string
		sent     []sdk.Result
		received []sdk.Result
		want     string
	}{
		{"same", sent, []sdk.Result{sdk.Delivered(), sdk.Retry(time.Second, errors.New("busy")), sdk.Permanent(errors.New("bad"))}, ""},
		{"nil is all delivered", nil, []sdk.Result{sdk.Delivered(), sdk.Delivered(), sdk.Delivered()}, ""},
		{"outcome lost", sent, []sdk.Result{sdk.Delivered(), sdk.Delivered(), sdk.Permanent(errors.New("bad"))},
			"result 1 (event sinktest-000001): the sink returned retry after 1s: busy, the host received delivered over gRPC"},
		{"delay lost", sent, []sdk.Result{sdk.Delivered(), sdk.Retry(0, errors.New("busy")), sdk.Permanent(errors.New("bad"))},
			"the sink returned retry after 1s: busy, the host received retry: busy"},
		{"message lost", sent, []sdk.Result{sdk.Delivered(), sdk.Retry(time.Second, errors.New("busy")), sdk.Permanent(errors.New("rpc error"))},
			"the sink returned permanent: bad, the host received permanent: rpc error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := compareResults(b, tt.sent, tt.received)
			switch {
			case tt.want == "" && errs != nil:
				t.Errorf("compareResults = %v, want none", errs)
			case tt.want != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), tt.want)):
				t.Errorf("compareResults = %v, want one containing %q", errs, tt.want)
			}
		})
	}
}

// describedFake is a fake with a description.
type describedFake struct {
	fake
	desc sdk.Description
}

func (f *describedFake) Describe() sdk.Description { return f.desc }

func TestDescribeCheck(t *testing.T) {
	good := sdk.Description{Summary: "Counts events.", Fields: []sdk.Field{{Name: "name", Type: "string", Required: true}}}
	tests := []struct {
		name string
		desc sdk.Description
		want string
	}{
		{"good", good, ""},
		{"invalid", sdk.Description{Fields: []sdk.Field{{Name: "name", Type: "text"}}}, `invalid description: description has no summary`},
		{"disagrees with config", sdk.Description{Summary: "s", Fields: []sdk.Field{{Name: "title", Type: "string"}}},
			`fails the sink's own description (Describe and Configure disagree, or the config is wrong): unknown config key "name"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := checks[slices.IndexFunc(checks, func(c check) bool { return c.name == "Describe" })]
			errs := c.exec(t, &describedFake{desc: tt.desc}, fakeConfig)
			switch {
			case tt.want == "" && errs != nil:
				t.Errorf("Describe check = %v, want none", errs)
			case tt.want != "" && !strings.Contains(fmt.Sprint(errs), tt.want):
				t.Errorf("Describe check = %v, want one containing %q", errs, tt.want)
			}
		})
	}
	Run(t, func(*testing.T) (sdk.Sink, json.RawMessage) { return &describedFake{desc: good}, fakeConfig })
}

// TestDescribeDriftIsCaught: a described key renamed to "feild" while the
// config struct kept its key fails the suite, though the config given to
// it passes Check.
func TestDescribeDriftIsCaught(t *testing.T) {
	c := checks[slices.IndexFunc(checks, func(c check) bool { return c.name == "DescribeMatchesConfigure" })]
	tests := []struct {
		name string
		desc sdk.Description
		want string
	}{
		{"matches", sdk.Description{Summary: "s", Fields: []sdk.Field{{Name: "name", Type: "string"}}}, ""},
		{"feild", sdk.Description{Summary: "s", Fields: []sdk.Field{{Name: "name", Type: "string"}, {Name: "feild", Type: "int"}}},
			`Describe lists config key "feild" but Configure refuses it as unknown`},
		{"secret", sdk.Description{Summary: "s", Fields: []sdk.Field{{Name: "name", Type: "string"}, {Name: "token", Type: "string", Secret: true}}},
			`Describe lists config key "token_env" but Configure refuses it as unknown`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if errs := tt.desc.Check(fakeConfig); errs != nil {
				t.Fatalf("premise: the config passes the description, got %v", errs)
			}
			errs := c.exec(t, &describedFake{desc: tt.desc}, fakeConfig)
			switch {
			case tt.want == "" && errs != nil:
				t.Errorf("DescribeMatchesConfigure = %v, want none", errs)
			case tt.want != "" && !strings.Contains(fmt.Sprint(errs), tt.want):
				t.Errorf("DescribeMatchesConfigure = %v, want one containing %q", errs, tt.want)
			}
		})
	}
}

// The test binary doubles as a plugin binary for RunBinary: with helperVar
// set it serves a fake instead of running tests (and, without the magic
// cookie, sdk.Serve says it is not meant to be run by hand).
const helperVar = "SINKTEST_HELPER_PLUGIN"

func TestMain(m *testing.M) {
	if b := os.Getenv(helperVar); b != "" {
		switch b {
		case "good":
			sdk.Serve(&fake{})
		case "print":
			sdk.Serve(&fake{printStdout: true})
		case "print-fd1":
			sdk.Serve(&fake{printFD1: true})
		case "panic-deliver":
			sdk.Serve(&fake{panicDeliver: true})
		case "print-before-serve":
			fmt.Println("starting up")
			sdk.Serve(&fake{})
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestRunBinary(t *testing.T) {
	t.Setenv(helperVar, "good")
	RunBinary(t, os.Args[0], fakeConfig)
}

func TestRunBinaryCatchesStdout(t *testing.T) {
	tests := []struct {
		behaviour string
		check     string // a check that must report it
		want      string
	}{
		{"print", "Configure", `the plugin wrote 12 bytes to stdout after the handshake: "configured!\n"`},
		{"print-fd1", "DeliverBatch", `to stdout after the handshake: "delivering\n"`},
		{"print-before-serve", "Configure", "it printed to stdout before the handshake"},
		{"panic-deliver", "DeliverOne", "the plugin process panicked (the host restarts it, and the events are delivered again):\npanic: assignment to entry in nil map"},
	}
	for _, tt := range tests {
		t.Run(tt.behaviour, func(t *testing.T) {
			t.Setenv(helperVar, tt.behaviour)
			c := checks[slices.IndexFunc(checks, func(c check) bool { return c.name == tt.check })]
			errs := c.execBinary(t, os.Args[0], fakeConfig)
			if !strings.Contains(fmt.Sprint(errs), tt.want) {
				t.Errorf("check %s on a plugin that prints (%s) = %v, want a violation containing %q", tt.check, tt.behaviour, errs, tt.want)
			}
		})
	}
}

// failures records what a check reports through Errorf, from any
// goroutine, instead of failing the real test.
type failures struct {
	testing.TB
	mu   sync.Mutex
	msgs []string
}

func (f *failures) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
}

func (f *failures) Helper() {}

// TestPanicFailsTheCheck: a panic in Configure or Deliver fails the check
// that caused it, with the panic's value and the sink's frame in the
// stack, and the test binary lives on.
func TestPanicFailsTheCheck(t *testing.T) {
	tests := []struct {
		name  string
		sink  *fake
		check string
		want  []string
	}{
		{"Configure", &fake{panicConfigure: true}, "Configure", []string{"*sinktest.fake.Configure panicked: configure exploded", "sinktest.(*fake).Configure("}},
		{"Deliver", &fake{panicDeliver: true}, "DeliverOne", []string{"*sinktest.fake.Deliver panicked: assignment to entry in nil map", "sinktest.(*fake).Deliver("}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &failures{TB: t}
			c := checks[slices.IndexFunc(checks, func(c check) bool { return c.name == tt.check })]
			errs := c.exec(rec, tt.sink, fakeConfig)
			if !strings.Contains(fmt.Sprint(errs), "panicked") {
				t.Errorf("%s check errors = %v, want the call to fail saying the sink panicked", tt.check, errs)
			}
			rec.mu.Lock()
			got := strings.Join(rec.msgs, "\n")
			rec.mu.Unlock()
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("%s check reported %q, want it to contain %q", tt.check, got, w)
				}
			}
		})
	}
}
