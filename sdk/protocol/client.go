package protocol

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/internal/wire"
	pb "github.com/pipelined/pipelined/sdk/proto"
)

// client is the host's view of a plugin: a Sink whose calls cross the wire.
// The plugin side of each call, and the conversions the other way, are in
// package sdk.
type client struct {
	rpc pb.SinkClient
}

// viaCodec has a call's messages encoded and decoded by the sink protocol's
// codec (generated code, no reflection), which the plugin's server uses too.
var viaCodec = grpc.ForceCodecV2(wire.Codec)

var (
	_ sdk.Sink       = (*client)(nil)
	_ sdk.Closer     = (*client)(nil)
	_ DescribeClient = (*client)(nil)
	_ WrapUpClient   = (*client)(nil)
)

func (c *client) Configure(ctx context.Context, config json.RawMessage) error {
	_, err := c.rpc.Configure(ctx, &pb.ConfigureRequest{Config: config}, viaCodec)
	return wireError(err)
}

func (c *client) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	req := &pb.DeliverRequest{Events: make([]*pb.Event, len(batch))}
	for i := range batch {
		req.Events[i] = eventToProto(&batch[i])
	}
	resp, err := c.rpc.Deliver(ctx, req, viaCodec)
	if status.Code(err) == codes.ResourceExhausted {
		// gRPC refuses a message over its size limit, on either side,
		// with "grpc: received message larger than max (N vs. M)".
		return nil, fmt.Errorf("%s: %w", status.Convert(err).Message(), ErrBatchTooLarge)
	}
	if err != nil {
		return nil, wireError(err)
	}
	if len(resp.GetResults()) != len(batch) {
		return nil, fmt.Errorf("plugin answered %d results for a batch of %d events", len(resp.GetResults()), len(batch))
	}
	results := make([]sdk.Result, len(batch))
	for i, r := range resp.GetResults() {
		results[i] = resultFromProto(r)
	}
	return results, nil
}

func (c *client) Close(ctx context.Context) error {
	_, err := c.rpc.Close(ctx, &pb.CloseRequest{}, viaCodec)
	return wireError(err)
}

func (c *client) DescribeSink(ctx context.Context) (sdk.Description, error) {
	resp, err := c.rpc.Describe(ctx, &pb.DescribeRequest{}, viaCodec)
	if status.Code(err) == codes.Unimplemented {
		// The sink is no Describer, or the plugin predates Describe.
		return sdk.Description{}, ErrNotDescribed
	}
	if err != nil {
		return sdk.Description{}, wireError(err)
	}
	return descriptionFromProto(resp), nil
}

func (c *client) WrapUp(ctx context.Context) (int, error) {
	resp, err := c.rpc.WrapUp(ctx, &pb.WrapUpRequest{}, viaCodec)
	if status.Code(err) == codes.Unimplemented {
		return 0, ErrNoWrapUp // a plugin from before WrapUp
	}
	if err != nil {
		return 0, wireError(err)
	}
	return int(resp.GetCalls()), nil
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

func eventToProto(e *sdk.Event) *pb.Event {
	return &pb.Event{
		Id:         e.ID,
		Source:     e.Source,
		Route:      e.Route,
		ReceivedAt: timestamppb.New(e.ReceivedAt),
		Headers:    e.Headers,
		Body:       e.Body,
		Payload:    e.Transformed,
		Attempt:    uint32(e.Attempt),

		TraceContext: e.TraceContext,
	}
}

func resultFromProto(r *pb.Result) sdk.Result {
	var err error
	if r.GetError() != "" {
		err = errors.New(r.GetError())
	}
	switch r.GetOutcome() {
	case pb.Outcome_OUTCOME_DELIVERED:
		return sdk.Delivered()
	case pb.Outcome_OUTCOME_RETRY:
		return sdk.Retry(r.GetRetryAfter().AsDuration(), err)
	case pb.Outcome_OUTCOME_PERMANENT:
		return sdk.Permanent(err)
	case pb.Outcome_OUTCOME_NOT_ATTEMPTED:
		return sdk.NotAttempted(r.GetRetryAfter().AsDuration(), err)
	}
	if err == nil {
		err = fmt.Errorf("plugin answered outcome %v", r.GetOutcome())
	}
	return sdk.Retry(0, err)
}

func descriptionFromProto(r *pb.DescribeResponse) sdk.Description {
	d := sdk.Description{Summary: r.GetSummary()}
	if len(r.GetFields()) > 0 {
		d.Fields = make([]sdk.Field, len(r.GetFields()))
	}
	for i, f := range r.GetFields() {
		d.Fields[i] = sdk.Field{
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
