package wire

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/pipelined/pipelined/sdk/proto"
)

// echoSink answers one Result per event, its error the event's id and
// route, so that what it read comes back in what it writes; an event with
// an x-cut header gets an error that is not UTF-8.
type echoSink struct {
	pb.UnimplementedSinkServer
}

func (echoSink) Deliver(_ context.Context, r *pb.DeliverRequest) (*pb.DeliverResponse, error) {
	out := &pb.DeliverResponse{}
	for _, e := range r.GetEvents() {
		res := &pb.Result{Outcome: pb.Outcome_OUTCOME_RETRY, RetryAfter: durationpb.New(time.Second),
			Error: e.GetId() + " " + e.GetRoute() + " " + e.GetHeaders()["x-name"]}
		if e.GetHeaders()["x-cut"] != "" {
			res.Error = "503: caf\xc3" // an error message cut inside a character
		}
		out.Results = append(out.Results, res)
	}
	return out, nil
}

// serve serves echoSink on loopback, with the codec when vt is set and
// gRPC's own (a plugin built before it) otherwise, and returns a client
// connection.
func serve(t *testing.T, vt bool) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if vt {
		opts = append(opts, grpc.ForceServerCodecV2(Codec))
	}
	s := grpc.NewServer(opts...)
	pb.RegisterSinkServer(s, echoSink{})
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// A host and a plugin talk whichever of them was built before the codec:
// each pair of codecs, over a real connection, carries a batch under and
// over gRPC's pooling threshold both ways, and refuses a string that is
// not UTF-8 as two peers on protobuf-go did (a request or a result cut
// inside a character): a peer built before the codec must never be sent
// what it cannot read, nor must the host take from a plugin a string it
// could not store (badgerlog refuses it, as protobuf-go did).
func TestCodecTalksToProtobufGo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct{ server, client bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		t.Run(fmt.Sprintf("server-vt=%v/client-vt=%v", c.server, c.client), func(t *testing.T) {
			rpc := pb.NewSinkClient(serve(t, c.server))
			var opts []grpc.CallOption
			if c.client {
				opts = append(opts, grpc.ForceCodecV2(Codec))
			}
			for _, n := range []int{1, 200} {
				req := batch(n, 1200)
				resp, err := rpc.Deliver(ctx, req, opts...)
				if err != nil {
					t.Fatalf("Deliver(%d events) = %v", n, err)
				}
				if len(resp.GetResults()) != n {
					t.Fatalf("%d results for %d events", len(resp.GetResults()), n)
				}
				for i, r := range resp.GetResults() {
					e := req.Events[i]
					want := &pb.Result{Outcome: pb.Outcome_OUTCOME_RETRY, RetryAfter: durationpb.New(time.Second), Error: e.Id + " " + e.Route + " "}
					if !proto.Equal(r, want) {
						t.Fatalf("result %d = %v, want %v", i, r, want)
					}
				}
			}
			// A header value in Latin-1: the request cannot be sent.
			req := batch(1, 30)
			req.Events[0].Headers["x-name"] = "caf\xe9"
			if _, err := rpc.Deliver(ctx, req, opts...); status.Code(err) != codes.Internal {
				t.Errorf("Deliver(a header not UTF-8) = %v, want Internal as between two peers on protobuf-go", err)
			}
			// A result whose error is cut inside a character: the answer cannot be sent.
			req = batch(1, 30)
			req.Events[0].Headers["x-cut"] = "1"
			if _, err := rpc.Deliver(ctx, req, opts...); status.Code(err) != codes.Internal {
				t.Errorf("Deliver(answered with an error not UTF-8) = %v, want Internal as between two peers on protobuf-go", err)
			}
		})
	}
}
