package pluginhost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pipelined/pipelined/sdk"
	pb "github.com/pipelined/pipelined/sdk/proto"
	"github.com/pipelined/pipelined/sdk/protocol"
)

// The test binary doubles as the plugin: Start runs os.Args[0] with the
// magic cookie set, and the sink's config passes the behaviour through the
// *_env mechanism ({"plugin_env": "PIPELINED_TEST_PLUGIN"}).
const behaviourVar = "PIPELINED_TEST_PLUGIN"

func TestMain(m *testing.M) {
	if b := os.Getenv(behaviourVar); b != "" && os.Getenv(protocol.Handshake.MagicCookieKey) == protocol.Handshake.MagicCookieValue {
		runHelperPlugin(b)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runHelperPlugin(behaviour string) {
	switch behaviour {
	case "sink":
		sdk.Serve(&testSink{})
	case "described":
		sdk.Serve(&describedSink{})
	case "oldsdk":
		cfg := protocol.ServeConfig(&testSink{})
		cfg.VersionedPlugins = map[int]plugin.PluginSet{protocol.ProtocolVersion: {protocol.PluginName: oldSDKPlugin{}}}
		plugin.Serve(cfg)
	case "version99":
		cfg := protocol.ServeConfig(&testSink{})
		cfg.HandshakeConfig.ProtocolVersion = 99
		cfg.VersionedPlugins = map[int]plugin.PluginSet{99: cfg.VersionedPlugins[protocol.ProtocolVersion]}
		plugin.Serve(cfg)
	default:
		fmt.Fprintf(os.Stderr, "unknown test plugin behaviour %q\n", behaviour)
		os.Exit(2)
	}
}

// testSink is configured with:
//
//	reject  string  Configure fails with this message
//	dir_env string  names a variable holding a directory where Configure
//	                writes env.txt and Close writes closed.txt
//	log     bool    Configure logs one line per level
//	close_hang bool Close never returns (a sink stuck flushing)
//
// Each event's body says what to answer: {"outcome": "delivered" |
// "retry" | "not-attempted" | "permanent" | "fail-batch" | "panic", "after": "2s", "error":
// "..."}, or {"sleep": "5s"}. A sleep cut short by a wrap up (sdk.ErrWrapUp)
// answers that event and the rest not attempted.
type testSink struct {
	dir       string
	closeHang bool
}

func (s *testSink) Configure(ctx context.Context, raw json.RawMessage) error {
	var cfg struct {
		Reject string `json:"reject"`
		DirEnv string `json:"dir_env"`
		Log    bool   `json:"log"`
		Hang   bool   `json:"close_hang"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return err
	}
	if cfg.Reject != "" {
		return errors.New(cfg.Reject)
	}
	s.closeHang = cfg.Hang
	if cfg.Log {
		l := sdk.Logger()
		l.Debug("helper debug line", "k", "d")
		l.Info("helper info line", "k", "i", "size", 67108871, "ratio", 0.5, "b", "first", "sizes", []int{67108871, 2})
		l.Warn("helper warn line", "k", "w")
		l.Error("helper error line", "k", "e")
	}
	if cfg.DirEnv != "" {
		s.dir = os.Getenv(cfg.DirEnv)
		env, _ := json.Marshal(os.Environ())
		if err := os.WriteFile(filepath.Join(s.dir, "env.json"), env, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (s *testSink) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	results := make([]sdk.Result, len(batch))
	for i, ev := range batch {
		var b struct {
			Outcome string `json:"outcome"`
			After   string `json:"after"`
			Error   string `json:"error"`
			Sleep   string `json:"sleep"`
		}
		if err := json.Unmarshal(ev.Body, &b); err != nil {
			return nil, err
		}
		if b.Sleep != "" {
			d, _ := time.ParseDuration(b.Sleep)
			select {
			case <-time.After(d):
			case <-ctx.Done():
				if errors.Is(context.Cause(ctx), sdk.ErrWrapUp) {
					// Wrapped up: this event and the rest were not sent.
					for j := i; j < len(results); j++ {
						results[j] = sdk.NotAttempted(0, context.Cause(ctx))
					}
					return results, nil
				}
				return nil, ctx.Err()
			}
		}
		var err error
		if b.Error != "" {
			err = errors.New(b.Error)
		}
		switch b.Outcome {
		case "retry":
			after, _ := time.ParseDuration(b.After)
			results[i] = sdk.Retry(after, err)
		case "not-attempted":
			after, _ := time.ParseDuration(b.After)
			results[i] = sdk.NotAttempted(after, err)
		case "permanent":
			results[i] = sdk.Permanent(err)
		case "fail-batch":
			return nil, err
		case "panic": // a bug in the sink: the stack that follows is long
			panic(b.Error)
		default:
			results[i] = sdk.Delivered()
		}
	}
	return results, nil
}

func (s *testSink) Close(ctx context.Context) error {
	if s.closeHang {
		select {} // ignores ctx: only a kill ends it
	}
	if s.dir != "" {
		return os.WriteFile(filepath.Join(s.dir, "closed.txt"), []byte("closed\n"), 0o600)
	}
	return nil
}

// describedSink is a testSink that describes its config.
type describedSink struct{ testSink }

var _ sdk.Describer = (*describedSink)(nil)

// testDescription describes what the helper's config may hold: "plugin" is
// a secret so that helperSpec's plugin_env passes Check.
var testDescription = sdk.Description{
	Summary: "Answers what each event's body asks for.",
	Fields: []sdk.Field{
		{Name: "plugin", Type: "string", Secret: true, Doc: "The helper behaviour."},
		{Name: "dir", Type: "string", Required: true, Doc: "A directory."},
		{Name: "rotate", Type: "duration", Default: `"1h"`, Doc: "How often."},
		{Name: "token", Type: "string", Secret: true, Doc: "A secret."},
		{Name: "reject", Type: "string", Doc: "Configure fails with this message."},
	},
}

func (*describedSink) Describe() sdk.Description { return testDescription }

// oldSDKPlugin serves a sink as the sdk did before it answered
// DEADLINE_EXCEEDED (as a plugin in another language may): its Deliver
// gives up when its side of the deadline passes, and fails the batch with
// ABORTED.
type oldSDKPlugin struct{ plugin.Plugin }

func (oldSDKPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterSinkServer(s, oldSDKServer{})
	return nil
}

func (oldSDKPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("plugin side only")
}

type oldSDKServer struct{ pb.UnimplementedSinkServer }

func (oldSDKServer) Configure(context.Context, *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	return &pb.ConfigureResponse{}, nil
}

func (oldSDKServer) Deliver(ctx context.Context, _ *pb.DeliverRequest) (*pb.DeliverResponse, error) {
	<-ctx.Done()
	return nil, status.Error(codes.Aborted, "gave up: the database did not answer")
}
