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

// errSink fails every batch with err.
type errSink struct{ err error }

func (errSink) Configure(context.Context, json.RawMessage) error     { return nil }
func (s errSink) Deliver(context.Context, []Event) ([]Result, error) { return nil, s.err }

// TestDeliverOutOfTimeSaysSo: a sink that fails its batch once its call
// ran out of time answers DEADLINE_EXCEEDED, which the host counts as a
// call out of time even when that answer reaches it before its own timer
// fires; a sink's own batch error is ABORTED. Either keeps the sink's words.
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
			_, err := (&server{impl: errSink{err: errors.New("database is locked")}}).Deliver(tt.ctx, req)
			if st := status.Convert(err); st.Code() != tt.want || st.Message() != "database is locked" {
				t.Errorf("Deliver = %v, want code %v with the sink's message", err, tt.want)
			}
		})
	}
}
