package protocol_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/pipelined/pipelined/sdk"
	pb "github.com/pipelined/pipelined/sdk/proto"
	"github.com/pipelined/pipelined/sdk/protocol"
)

var testDescription = sdk.Description{
	Summary: "Stores events in a database.",
	Fields: []sdk.Field{
		{Name: "dsn", Type: "string", Required: true, Secret: true, Doc: "Where the database is."},
	},
}

type nopSink struct{ delivered atomic.Int64 }

func (*nopSink) Configure(context.Context, json.RawMessage) error { return nil }
func (s *nopSink) Deliver(_ context.Context, b []sdk.Event) ([]sdk.Result, error) {
	s.delivered.Add(int64(len(b)))
	return nil, nil
}

type describedSink struct{ nopSink }

func (*describedSink) Describe() sdk.Description { return testDescription }

// served is the go-plugin glue of both sides in one plugin, as
// plugin.TestPluginGRPCConn wants: the plugin side that sdk.Serve uses and
// the host side of ClientPlugins.
type served struct {
	plugin.Plugin
	server interface {
		GRPCServer(*plugin.GRPCBroker, *grpc.Server) error
	}
}

func (p served) GRPCServer(b *plugin.GRPCBroker, s *grpc.Server) error {
	return p.server.GRPCServer(b, s)
}

func (served) GRPCClient(ctx context.Context, b *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	host := protocol.ClientPlugins()[protocol.ProtocolVersion][protocol.PluginName].(plugin.GRPCPlugin)
	return host.GRPCClient(ctx, b, c)
}

// serve returns the sdk's plugin side of s.
func serve(t testing.TB, s sdk.Sink) plugin.GRPCPlugin {
	t.Helper()
	cfg := protocol.ServeConfig(s)
	p, ok := cfg.VersionedPlugins[protocol.ProtocolVersion][protocol.PluginName].(plugin.GRPCPlugin)
	if !ok {
		t.Fatalf("ServeConfig serves %v, want a gRPC plugin named %q at version %d", cfg.VersionedPlugins, protocol.PluginName, protocol.ProtocolVersion)
	}
	return p
}

// dispense connects a host client to server over a local gRPC connection
// (with gRPC's default limits) and returns the dispensed sink.
func dispense(t *testing.T, server served) sdk.Sink {
	t.Helper()
	client, _ := plugin.TestPluginGRPCConn(t, false, plugin.PluginSet{protocol.PluginName: server})
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(protocol.PluginName)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := raw.(sdk.Sink)
	if !ok {
		t.Fatalf("dispensed %T, want an sdk.Sink", raw)
	}
	return s
}

// oldServer serves the protocol as it was before Describe: the generated
// Unimplemented server answers UNIMPLEMENTED, as a server without the
// method does.
type oldServer struct{ pb.UnimplementedSinkServer }

type oldPlugin struct{}

func (oldPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterSinkServer(s, oldServer{})
	return nil
}

func TestDescribeOverTheWire(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		server  served
		want    sdk.Description
		wantErr error
	}{
		{"describer", served{server: serve(t, &describedSink{})}, testDescription, nil},
		{"not a describer", served{server: serve(t, &nopSink{})}, sdk.Description{}, protocol.ErrNotDescribed},
		{"plugin from before Describe", served{server: oldPlugin{}}, sdk.Description{}, protocol.ErrNotDescribed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dc, ok := dispense(t, tt.server).(protocol.DescribeClient)
			if !ok {
				t.Fatalf("the dispensed sink is no protocol.DescribeClient")
			}
			got, err := dc.DescribeSink(ctx)
			if !errors.Is(err, tt.wantErr) || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DescribeSink() = %+v, %v; want %+v, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestDeliverTooLarge checks that a batch over gRPC's message size limit
// (4 MiB by default) comes back as ErrBatchTooLarge, without reaching the
// sink, and that the connection still carries a batch that fits.
func TestDeliverTooLarge(t *testing.T) {
	ctx := context.Background()
	sink := &nopSink{}
	s := dispense(t, served{server: serve(t, sink)})
	body := json.RawMessage(`"` + string(bytes.Repeat([]byte("x"), 1<<20)) + `"`)
	batch := make([]sdk.Event, 5)
	for i := range batch {
		batch[i] = sdk.Event{ID: string(rune('a' + i)), Body: body}
	}

	if _, err := s.Deliver(ctx, batch); !errors.Is(err, protocol.ErrBatchTooLarge) {
		t.Fatalf("Deliver(5 events of 1 MiB) = %v, want ErrBatchTooLarge", err)
	}
	if n := sink.delivered.Load(); n != 0 {
		t.Errorf("the sink got %d events of a batch refused as too large, want 0", n)
	}
	res, err := s.Deliver(ctx, batch[:2])
	if err != nil || len(res) != 2 || !res[0].IsDelivered() || !res[1].IsDelivered() {
		t.Fatalf("Deliver(2 events of 1 MiB) = %v, %v; want both delivered", res, err)
	}
	if n := sink.delivered.Load(); n != 2 {
		t.Errorf("the sink got %d events, want the 2 of the batch that fits", n)
	}
}

// latin1Sink fails every event with an error text that is not UTF-8.
type latin1Sink struct{ nopSink }

func (*latin1Sink) Deliver(_ context.Context, b []sdk.Event) ([]sdk.Result, error) {
	out := make([]sdk.Result, len(b))
	for i := range out {
		out[i] = sdk.Permanent(errors.New("duplicate key caf\xe9"))
	}
	return out, nil
}

// TestErrorNotUTF8CrossesTheWire: a sink's error says what it likes (a
// database quoting Latin-1 bytes), but protobuf refuses a string that is
// not UTF-8, which would fail the whole call, batch after batch. The
// results arrive, each error as JSON shows it (U+FFFD for the bad byte).
func TestErrorNotUTF8CrossesTheWire(t *testing.T) {
	s := dispense(t, served{server: serve(t, &latin1Sink{})})
	res, err := s.Deliver(context.Background(), []sdk.Event{{ID: "a", Body: json.RawMessage(`{}`)}})
	if err != nil {
		t.Fatalf("Deliver = %v, want the sink's results", err)
	}
	if len(res) != 1 || !res[0].IsPermanent() || res[0].Err() == nil || res[0].Err().Error() != "duplicate key caf\uFFFD" {
		t.Fatalf("Deliver's results = %+v, want one permanent failure %q", res, "duplicate key caf\uFFFD")
	}
}

// scriptedSink answers every batch with its results, one per event.
type scriptedSink struct {
	nopSink
	results []sdk.Result
}

func (s *scriptedSink) Deliver(_ context.Context, b []sdk.Event) ([]sdk.Result, error) {
	return s.results[:len(b)], nil
}

// TestNotAttemptedCrossesTheWire: a sink's NotAttempted reaches the host as
// NotAttempted, with its delay and reason, and is no Retry there.
func TestNotAttemptedCrossesTheWire(t *testing.T) {
	sent := []sdk.Result{
		sdk.NotAttempted(3*time.Second, errors.New("429 earlier in the batch")),
		sdk.NotAttempted(0, errors.New("not sent in time")),
		sdk.Retry(0, errors.New("503")),
	}
	s := dispense(t, served{server: serve(t, &scriptedSink{results: sent})})
	batch := []sdk.Event{{ID: "a", Body: json.RawMessage(`{}`)}, {ID: "b", Body: json.RawMessage(`{}`)}, {ID: "c", Body: json.RawMessage(`{}`)}}
	got, err := s.Deliver(context.Background(), batch)
	if err != nil || len(got) != len(sent) {
		t.Fatalf("Deliver = %v, %v; want %d results", got, err, len(sent))
	}
	for i, want := range sent {
		if got[i].String() != want.String() {
			t.Errorf("result %d = %v, want %v", i, got[i], want)
		}
		gotAfter, gotNA := got[i].IsNotAttempted()
		wantAfter, wantNA := want.IsNotAttempted()
		_, gotRetry := got[i].IsRetry()
		_, wantRetry := want.IsRetry()
		if gotAfter != wantAfter || gotNA != wantNA || gotRetry != wantRetry {
			t.Errorf("result %d: IsNotAttempted() = %v, %v, IsRetry() = %v; want %v, %v, %v", i, gotAfter, gotNA, gotRetry, wantAfter, wantNA, wantRetry)
		}
	}
}

// futureServer answers every event with an outcome this host does not know
// (as a host built before OUTCOME_NOT_ATTEMPTED sees that value), with a
// delay and an error.
type futureServer struct{ pb.UnimplementedSinkServer }

func (futureServer) Deliver(_ context.Context, r *pb.DeliverRequest) (*pb.DeliverResponse, error) {
	out := &pb.DeliverResponse{}
	for range r.GetEvents() {
		out.Results = append(out.Results, &pb.Result{Outcome: pb.Outcome(99), RetryAfter: durationpb.New(time.Hour), Error: "not sent"})
	}
	return out, nil
}

type futurePlugin struct{}

func (futurePlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterSinkServer(s, futureServer{})
	return nil
}

// TestUnknownOutcomeIsARetry: an outcome the host does not know (one a
// newer plugin sends) is a retry with the host's own backoff, keeping the
// plugin's error: how a host built before OUTCOME_NOT_ATTEMPTED reads it,
// by the same code (resultFromProto's fallback), so that a new plugin on an
// old host degrades to a retry and never loses an event.
func TestUnknownOutcomeIsARetry(t *testing.T) {
	s := dispense(t, served{server: futurePlugin{}})
	got, err := s.Deliver(context.Background(), []sdk.Event{{ID: "a", Body: json.RawMessage(`{}`)}})
	if err != nil || len(got) != 1 {
		t.Fatalf("Deliver = %v, %v; want one result", got, err)
	}
	after, retry := got[0].IsRetry()
	if !retry || after != 0 || got[0].Err() == nil || got[0].Err().Error() != "not sent" {
		t.Errorf("result of an unknown outcome = %v, want a retry with the host's backoff: not sent", got[0])
	}
}

// blockingSink blocks each Deliver until its ctx ends, then delivers the
// first event and leaves the rest not attempted; it keeps the ctx's cause.
type blockingSink struct {
	nopSink
	started chan struct{} // a Deliver is under way
	cause   chan error    // the cause its ctx ended with
}

func (s *blockingSink) Deliver(ctx context.Context, b []sdk.Event) ([]sdk.Result, error) {
	close(s.started)
	<-ctx.Done()
	s.cause <- context.Cause(ctx)
	out := make([]sdk.Result, len(b))
	out[0] = sdk.Delivered()
	for i := 1; i < len(out); i++ {
		out[i] = sdk.NotAttempted(0, context.Cause(ctx))
	}
	return out, nil
}

// TestWrapUpAnswersTheCallInFlight: WrapUp ends the ctx of the sink's
// Deliver in flight with sdk.ErrWrapUp, and the sink's answer for what it
// did reaches the host on the call, which stays open.
func TestWrapUpAnswersTheCallInFlight(t *testing.T) {
	sink := &blockingSink{started: make(chan struct{}), cause: make(chan error, 1)}
	s := dispense(t, served{server: serve(t, sink)})
	wc, ok := s.(protocol.WrapUpClient)
	if !ok {
		t.Fatal("the dispensed sink is no protocol.WrapUpClient")
	}
	type answer struct {
		res []sdk.Result
		err error
	}
	answered := make(chan answer, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() {
		batch := []sdk.Event{{ID: "a", Body: json.RawMessage(`{}`)}, {ID: "b", Body: json.RawMessage(`{}`)}}
		res, err := s.Deliver(ctx, batch)
		answered <- answer{res, err}
	}()
	select {
	case <-sink.started:
	case <-ctx.Done():
		t.Fatal("the sink's Deliver never started")
	}
	n, err := wc.WrapUp(ctx)
	if err != nil || n != 1 {
		t.Fatalf("WrapUp = %d, %v; want 1 call wrapped up", n, err)
	}
	select {
	case a := <-answered:
		if a.err != nil || len(a.res) != 2 || !a.res[0].IsDelivered() {
			t.Fatalf("Deliver = %v, %v; want the sink's answer: delivered, not attempted", a.res, a.err)
		}
		if _, na := a.res[1].IsNotAttempted(); !na || a.res[1].Err() == nil || a.res[1].Err().Error() != sdk.ErrWrapUp.Error() {
			t.Errorf("second result = %v, want not attempted: %v", a.res[1], sdk.ErrWrapUp)
		}
	case <-ctx.Done():
		t.Fatal("Deliver did not answer after WrapUp")
	}
	if cause := <-sink.cause; !errors.Is(cause, sdk.ErrWrapUp) {
		t.Errorf("the sink's ctx ended with %v, want sdk.ErrWrapUp", cause)
	}
	if n, err := wc.WrapUp(ctx); err != nil || n != 0 {
		t.Errorf("WrapUp with nothing in flight = %d, %v; want 0, nil", n, err)
	}
}

// TestWrapUpOfAnOldPlugin: a plugin from before WrapUp answers
// UNIMPLEMENTED, which the host sees as ErrNoWrapUp.
func TestWrapUpOfAnOldPlugin(t *testing.T) {
	wc := dispense(t, served{server: oldPlugin{}}).(protocol.WrapUpClient)
	if n, err := wc.WrapUp(context.Background()); n != 0 || !errors.Is(err, protocol.ErrNoWrapUp) {
		t.Errorf("WrapUp of an old plugin = %d, %v; want 0, ErrNoWrapUp", n, err)
	}
}
