package sdk

import (
	"context"
	"errors"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/pipelined/pipelined/sdk/proto"
)

// server serves a Sink over gRPC in the plugin process. The host's client of
// this service, and the conversions the other way, are in package protocol.
type server struct {
	pb.UnimplementedSinkServer
	impl Sink

	mu sync.Mutex
	// calls holds the cancel funcs of the Deliver calls in flight, by a
	// number of their own, for WrapUp (the host makes one at a time).
	calls map[uint64]context.CancelCauseFunc
	next  uint64
}

// track makes ctx a context that WrapUp can end, for one Deliver call;
// untrack when the call returns.
func (s *server) track(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	s.mu.Lock()
	if s.calls == nil {
		s.calls = map[uint64]context.CancelCauseFunc{}
	}
	s.next++
	id := s.next
	s.calls[id] = cancel
	s.mu.Unlock()
	return ctx, func() {
		s.mu.Lock()
		delete(s.calls, id)
		s.mu.Unlock()
		cancel(nil)
	}
}

// WrapUp ends the context of each Deliver call in flight with [ErrWrapUp]:
// each call's sink answers for what it did, and that answer goes back to
// the host on the call, which stays open.
func (s *server) WrapUp(context.Context, *pb.WrapUpRequest) (*pb.WrapUpResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, cancel := range s.calls {
		cancel(ErrWrapUp)
	}
	return &pb.WrapUpResponse{Calls: uint32(len(s.calls))}, nil
}

func (s *server) Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	cfg := req.GetConfig()
	if len(cfg) == 0 {
		cfg = []byte("{}")
	}
	if err := s.impl.Configure(ctx, cfg); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &pb.ConfigureResponse{}, nil
}

func (s *server) Deliver(ctx context.Context, req *pb.DeliverRequest) (*pb.DeliverResponse, error) {
	ctx, untrack := s.track(ctx)
	defer untrack()
	batch := make([]Event, len(req.GetEvents()))
	for i, e := range req.GetEvents() {
		batch[i] = eventFromProto(e)
	}
	results, err := s.impl.Deliver(ctx, batch)
	if err != nil && errors.Is(context.Cause(ctx), ErrWrapUp) {
		// Wrapped up, the sink gave up the batch as a whole: its own
		// failure, which the host retries, not a call out of time.
		return nil, status.Error(codes.Aborted, err.Error())
	}
	if err != nil && ctx.Err() != nil {
		// The call ran out of time (or the host called it off), and the
		// sink gave up with it: say so by the code, as gRPC would have had
		// the sink not answered, so that the host counts a call out of
		// time whichever side's deadline fires first.
		return nil, status.Error(status.FromContextError(ctx.Err()).Code(), err.Error())
	}
	if err != nil {
		// Aborted, not Unavailable: the host tells a sink's own batch
		// error from a broken connection by the code.
		return nil, status.Error(codes.Aborted, err.Error())
	}
	resp := &pb.DeliverResponse{Results: make([]*pb.Result, len(batch))}
	if results == nil {
		for i := range resp.Results {
			resp.Results[i] = &pb.Result{Outcome: pb.Outcome_OUTCOME_DELIVERED}
		}
		return resp, nil
	}
	if len(results) != len(batch) {
		return nil, status.Errorf(codes.Internal, "sink returned %d results for a batch of %d events", len(results), len(batch))
	}
	for i, r := range results {
		resp.Results[i] = resultToProto(r)
	}
	return resp, nil
}

func (s *server) Close(ctx context.Context, _ *pb.CloseRequest) (*pb.CloseResponse, error) {
	if c, ok := s.impl.(Closer); ok {
		if err := c.Close(ctx); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	return &pb.CloseResponse{}, nil
}

func (s *server) Describe(context.Context, *pb.DescribeRequest) (*pb.DescribeResponse, error) {
	d, ok := s.impl.(Describer)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "the sink does not implement sdk.Describer")
	}
	return descriptionToProto(d.Describe()), nil
}

func eventFromProto(e *pb.Event) Event {
	ev := Event{
		ID:         e.GetId(),
		Source:     e.GetSource(),
		Route:      e.GetRoute(),
		ReceivedAt: e.GetReceivedAt().AsTime(),
		Headers:    e.GetHeaders(),
		Body:       e.GetBody(),
		Attempt:    int(e.GetAttempt()),

		TraceContext: e.GetTraceContext(),
	}
	if len(e.GetPayload()) > 0 {
		ev.Transformed = e.GetPayload()
	}
	return ev
}

func resultToProto(r Result) *pb.Result {
	out := &pb.Result{}
	if r.err != nil {
		// protobuf refuses a string that is not UTF-8 (and with it the
		// whole call); an error quoting Latin-1 bytes goes as JSON shows
		// it, each bad byte U+FFFD.
		out.Error = strings.ToValidUTF8(r.err.Error(), "\uFFFD")
	}
	switch r.outcome {
	case outcomeDelivered:
		out.Outcome = pb.Outcome_OUTCOME_DELIVERED
	case outcomeRetry:
		out.Outcome = pb.Outcome_OUTCOME_RETRY
		if r.after > 0 {
			out.RetryAfter = durationpb.New(r.after)
		}
	case outcomePermanent:
		out.Outcome = pb.Outcome_OUTCOME_PERMANENT
	case outcomeNotAttempted:
		out.Outcome = pb.Outcome_OUTCOME_NOT_ATTEMPTED
		if r.after > 0 {
			out.RetryAfter = durationpb.New(r.after)
		}
	default:
		// A zero Result is a bug in the sink; retrying keeps the event.
		out.Outcome = pb.Outcome_OUTCOME_RETRY
		out.Error = "sink returned a zero sdk.Result (use sdk.Delivered, sdk.Retry, sdk.Permanent or sdk.NotAttempted)"
	}
	return out
}

func descriptionToProto(d Description) *pb.DescribeResponse {
	out := &pb.DescribeResponse{Summary: d.Summary, Fields: make([]*pb.Field, len(d.Fields))}
	for i, f := range d.Fields {
		out.Fields[i] = &pb.Field{
			Name:         f.Name,
			Type:         f.Type,
			DefaultValue: f.Default,
			Required:     f.Required,
			Secret:       f.Secret,
			Doc:          f.Doc,
		}
	}
	return out
}
