package slack

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// TestPluginProcess runs the real binary as a go-plugin process, with
// AutoMTLS, and delivers through it to the fake Slack, as the host does.
func TestPluginProcess(t *testing.T) {
	bin := sinktest.Build(t, "../../cmd/pipelined-sink-slack", "pipelined-sink-slack")

	t.Run("by-hand", func(t *testing.T) { sinktest.RunByHand(t, bin) })

	t.Run("go-plugin", func(t *testing.T) {
		f := newFakeSlack(t)
		f.limit(2)
		var logs testlog.Buffer
		// The host passes only the named variables.
		client, s := sinktest.Start(t, bin, sinktest.StartOptions{Env: []string{webhookEnv + "=" + f.URL()}, Logs: &logs, LogLevel: "debug"})
		ctx := context.Background()

		if err := s.Configure(ctx, []byte(`{"webhook_url": "x"}`)); err == nil || !strings.Contains(err.Error(), "webhook_url_env") {
			t.Errorf("Configure with an inline webhook_url over the wire = %v, want it to point at webhook_url_env", err)
		}
		if err := s.Configure(ctx, sinktest.Config(t, map[string]any{"webhook_url_env": webhookEnv, "username": "pipelined"})); err != nil {
			t.Fatalf("Configure = %v", err)
		}
		results, err := s.Deliver(ctx, events(0, 3))
		if err != nil {
			t.Fatalf("Deliver = %v", err)
		}
		checkResult(t, 0, results[0], "delivered", 0, "")
		checkResult(t, 1, results[1], "delivered", 0, "")
		checkResult(t, 2, results[2], "retry", time.Second, "429 rate_limited")
		if err := s.(sdk.Closer).Close(ctx); err != nil {
			t.Errorf("Close = %v", err)
		}
		client.Kill()

		got := f.texts()
		if len(got) != 2 || !strings.HasPrefix(got[0], ":telephone_receiver: *Call ended*: 919876543210 → 918765432109") {
			t.Errorf("fake Slack accepted %q, want two call_ended messages", got)
		}
		if r := f.requests(); len(r) < 1 || r[0].Msg["username"] != "pipelined" {
			t.Errorf("fake Slack got %+v, want the username override", r)
		}
		// The plugin's sdk.Logger lines reach the host at their own level,
		// and never with the webhook URL.
		if !strings.Contains(logs.String(), "slack throttled the webhook") {
			t.Errorf("host log lacks the plugin's Warn record \"slack throttled the webhook\":\n%s", logs.String())
		}
		for _, secret := range []string{token, "T000/B000"} {
			if strings.Contains(logs.String(), secret) {
				t.Errorf("host log contains %q:\n%s", secret, logs.String())
			}
		}
	})
}
