package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/pipelined/pipelined/sdk/proto"
)

// ctxSink fails its batch with what its context says, or with err when
// its context is still live.
type ctxSink struct{ err error }

func (ctxSink) Configure(context.Context, json.RawMessage) error { return nil }
func (s ctxSink) Deliver(ctx context.Context, _ []Event) ([]Result, error) {
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, s.err
}

// TestDeliverOutOfTimeSaysSo: a sink that gives up because its call ran
// out of time answers DEADLINE_EXCEEDED, which the host counts as a call
// out of time, even when that answer reaches it before its own deadline
// fires; a sink's own batch error is ABORTED.
func TestDeliverOutOfTimeSaysSo(t *testing.T) {
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	called, callOff := context.WithCancel(context.Background())
	callOff()
	req := &pb.DeliverRequest{Events: []*pb.Event{{Id: "e1"}}}
	for _, tt := range []struct {
		name string
		ctx  context.Context
		want codes.Code
	}{
		{"out of time", expired, codes.DeadlineExceeded},
		{"called off", called, codes.Canceled},
		{"the sink's own error", context.Background(), codes.Aborted},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := (&server{impl: ctxSink{err: errors.New("database is locked")}}).Deliver(tt.ctx, req)
			if got := status.Code(err); got != tt.want {
				t.Errorf("Deliver = %v (code %v), want code %v", err, got, tt.want)
			}
		})
	}
}
