package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/pipelined/pipelined/sdk/proto"
)

// server serves a Sink over gRPC in the plugin process.
type server struct {
	pb.UnimplementedSinkServer
	impl Sink
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
	batch := make([]Event, len(req.GetEvents()))
	for i, e := range req.GetEvents() {
		batch[i] = eventFromProto(e)
	}
	results, err := s.impl.Deliver(ctx, batch)
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

// client is the host's view of a plugin: a Sink whose calls cross the wire.
type client struct {
	rpc pb.SinkClient
}

var (
	_ Sink           = (*client)(nil)
	_ Closer         = (*client)(nil)
	_ DescribeClient = (*client)(nil)
)

func (c *client) Configure(ctx context.Context, config json.RawMessage) error {
	_, err := c.rpc.Configure(ctx, &pb.ConfigureRequest{Config: config})
	return wireError(err)
}

func (c *client) Deliver(ctx context.Context, batch []Event) ([]Result, error) {
	req := &pb.DeliverRequest{Events: make([]*pb.Event, len(batch))}
	for i := range batch {
		req.Events[i] = eventToProto(&batch[i])
	}
	resp, err := c.rpc.Deliver(ctx, req)
	if err != nil {
		return nil, wireError(err)
	}
	if len(resp.GetResults()) != len(batch) {
		return nil, fmt.Errorf("plugin answered %d results for a batch of %d events", len(resp.GetResults()), len(batch))
	}
	results := make([]Result, len(batch))
	for i, r := range resp.GetResults() {
		results[i] = resultFromProto(r)
	}
	return results, nil
}

func (c *client) Close(ctx context.Context) error {
	_, err := c.rpc.Close(ctx, &pb.CloseRequest{})
	return wireError(err)
}

func (c *client) DescribeSink(ctx context.Context) (Description, error) {
	resp, err := c.rpc.Describe(ctx, &pb.DescribeRequest{})
	if status.Code(err) == codes.Unimplemented {
		// The sink is no Describer, or the plugin predates Describe.
		return Description{}, ErrNotDescribed
	}
	if err != nil {
		return Description{}, wireError(err)
	}
	return descriptionFromProto(resp), nil
}

// wireError turns a gRPC status into a plain error carrying the plugin's
// message, so the host's logs read "permission denied on data/archive", not
// "rpc error: code = InvalidArgument desc = ...". Transport failures keep
// their status so the host can tell them apart.
func wireError(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.Internal, codes.Aborted:
		return errors.New(st.Message())
	}
	return err
}

func eventToProto(e *Event) *pb.Event {
	return &pb.Event{
		Id:         e.ID,
		Source:     e.Source,
		Route:      e.Route,
		ReceivedAt: timestamppb.New(e.ReceivedAt),
		Headers:    e.Headers,
		Body:       e.Body,
		Payload:    e.Transformed,
		Attempt:    uint32(e.Attempt),
	}
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
	}
	if len(e.GetPayload()) > 0 {
		ev.Transformed = e.GetPayload()
	}
	return ev
}

func resultToProto(r Result) *pb.Result {
	out := &pb.Result{}
	if r.err != nil {
		out.Error = r.err.Error()
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
	default:
		// A zero Result is a bug in the sink; retrying keeps the event.
		out.Outcome = pb.Outcome_OUTCOME_RETRY
		out.Error = "sink returned a zero sdk.Result (use sdk.Delivered, sdk.Retry or sdk.Permanent)"
	}
	return out
}

func resultFromProto(r *pb.Result) Result {
	var err error
	if r.GetError() != "" {
		err = errors.New(r.GetError())
	}
	switch r.GetOutcome() {
	case pb.Outcome_OUTCOME_DELIVERED:
		return Delivered()
	case pb.Outcome_OUTCOME_RETRY:
		return Retry(r.GetRetryAfter().AsDuration(), err)
	case pb.Outcome_OUTCOME_PERMANENT:
		return Permanent(err)
	}
	if err == nil {
		err = fmt.Errorf("plugin answered outcome %v", r.GetOutcome())
	}
	return Retry(0, err)
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

func descriptionFromProto(r *pb.DescribeResponse) Description {
	d := Description{Summary: r.GetSummary()}
	if len(r.GetFields()) > 0 {
		d.Fields = make([]Field, len(r.GetFields()))
	}
	for i, f := range r.GetFields() {
		d.Fields[i] = Field{
			Name:     f.GetName(),
			Type:     f.GetType(),
			Default:  f.GetDefaultValue(),
			Required: f.GetRequired(),
			Secret:   f.GetSecret(),
			Doc:      f.GetDoc(),
		}
	}
	return d
}
