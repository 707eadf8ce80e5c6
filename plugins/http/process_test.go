package http

import (
	"context"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// TestPluginProcess runs the real binary as a go-plugin process, with
// AutoMTLS, and talks to it as the host does: the events reach a receiver
// that verifies them with the reference Standard Webhooks library.
func TestPluginProcess(t *testing.T) {
	bin := sinktest.Build(t, "../../cmd/pipelined-sink-http", "pipelined-sink-http")

	t.Run("by-hand", func(t *testing.T) { sinktest.RunByHand(t, bin) })

	t.Run("go-plugin", func(t *testing.T) {
		wh, err := standardwebhooks.NewWebhook(testSecret)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var verifyErrs []error
		rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
			if err := wh.Verify(body, r.Header); err != nil {
				mu.Lock()
				verifyErrs = append(verifyErrs, err)
				mu.Unlock()
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			if r.Header.Get("webhook-id") == sinktest.NewEvent(3).ID {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusOK)
		})

		var logs testlog.Buffer
		// The host passes only the variables named by *_env keys.
		client, s := sinktest.Start(t, bin, sinktest.StartOptions{Env: append(os.Environ(), "TEST_HTTP_SECRET="+testSecret), Logs: &logs})

		if err := s.Configure(context.Background(), []byte(`{"url": "https://a.example", "method": "GET"}`)); err == nil || !strings.Contains(err.Error(), `"method" = "GET"`) {
			t.Errorf("Configure with a bad method over the wire = %v, want the key named", err)
		}
		sinktest.Configure(t, s, map[string]any{"url": rc.URL + "/hook?token=tok-PROC-1", "secret_env": "TEST_HTTP_SECRET", "body": "envelope"})
		results, err := s.Deliver(context.Background(), events(1, 3))
		if err != nil || len(results) != 3 {
			t.Fatalf("Deliver = %v, %v", results, err)
		}
		if !results[0].IsDelivered() || !results[1].IsDelivered() || !results[2].IsPermanent() {
			t.Errorf("results = %v, want delivered, delivered, permanent (400)", results)
		}
		if err := s.(sdk.Closer).Close(context.Background()); err != nil {
			t.Errorf("Close = %v", err)
		}
		client.Kill()

		mu.Lock()
		defer mu.Unlock()
		if len(verifyErrs) > 0 {
			t.Errorf("reference library Verify: %v", verifyErrs)
		}
		out := logs.String()
		if !strings.Contains(out, "http sink configured") {
			t.Errorf("host log lacks the plugin's Info record:\n%s", out)
		}
		if strings.Contains(out, "tok-PROC-1") || strings.Contains(out, strings.TrimPrefix(testSecret, "whsec_")) {
			t.Errorf("host log contains a secret:\n%s", out)
		}
	})
}
