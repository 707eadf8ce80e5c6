package http

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// testSecret is a Standard Webhooks secret (the spec's example key).
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// request is what a receiver saw.
type request struct {
	method string
	path   string
	query  string
	header http.Header
	body   []byte
}

// receiver is an httptest server that records requests and answers with
// answer (200 when nil).
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	reqs   []request
	answer func(w http.ResponseWriter, r *http.Request, body []byte)
}

func newReceiver(t testing.TB, answer func(w http.ResponseWriter, r *http.Request, body []byte)) *receiver {
	t.Helper()
	rc := &receiver{answer: answer}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, request{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
		rc.mu.Unlock()
		if rc.answer != nil {
			rc.answer(w, r, body)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.reqs)
}

func TestConformance(t *testing.T) {
	for _, mode := range []string{"payload", "envelope"} {
		for _, conc := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s-concurrency-%d", mode, conc), func(t *testing.T) {
				sinktest.Run(t, func(t *testing.T) (sdk.Sink, json.RawMessage) {
					rc := newReceiver(t, nil)
					t.Setenv("TEST_HTTP_SECRET", testSecret)
					return newSinkLogger(discard()), sinktest.Config(t, map[string]any{
						"url": rc.URL + "/hooks?token=abc123", "body": mode, "concurrency": conc,
						"secret_env": "TEST_HTTP_SECRET",
					})
				})
			})
		}
	}
}

// TestReferenceLibraryVerifies: pipelined's http sink signs and the
// reference library verifies.
func TestReferenceLibraryVerifies(t *testing.T) {
	wh, err := standardwebhooks.NewWebhook(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	var verifyErrs []error
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		if err := wh.Verify(body, r.Header); err != nil {
			verifyErrs = append(verifyErrs, err) // handler calls are serial here (concurrency 1)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	for _, mode := range []string{"payload", "envelope"} {
		t.Run(mode, func(t *testing.T) {
			secretFile := filepath.Join(t.TempDir(), "secret")
			if err := os.WriteFile(secretFile, []byte(testSecret+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			s := sinktest.Serve(t, newSinkLogger(discard()))
			sinktest.Configure(t, s, map[string]any{"url": rc.URL, "secret_file": secretFile, "body": mode})
			evs := []sdk.Event{sinktest.NewEvent(1), sinktest.NewEvent(2)}
			evs[1].Transformed = json.RawMessage(`{"text":"Interested lead ✓"}`)
			sinktest.DeliverAll(t, s, evs)
			// Redelivery: same ids, new attempt.
			for i := range evs {
				evs[i].Attempt = 2
			}
			sinktest.DeliverAll(t, s, evs)
		})
	}
	if len(verifyErrs) > 0 {
		t.Fatalf("reference library Verify failed: %v", verifyErrs)
	}
	reqs := rc.requests()
	if len(reqs) != 8 {
		t.Fatalf("receiver got %d requests, want 8", len(reqs))
	}
	for i, r := range reqs {
		want := sinktest.NewEvent(1 + i%2).ID
		if got := r.header.Get("webhook-id"); got != want {
			t.Errorf("request %d webhook-id = %q, want the event id %q (same on redelivery)", i, got, want)
		}
		if !strings.HasPrefix(r.header.Get("webhook-signature"), "v1,") {
			t.Errorf("request %d webhook-signature = %q, want v1,<base64>", i, r.header.Get("webhook-signature"))
		}
	}
	// A receiver with another secret must refuse.
	other, _ := standardwebhooks.NewWebhook("whsec_" + base64.StdEncoding.EncodeToString([]byte("another-secret-of-32-bytes-long!")))
	if err := other.Verify(reqs[0].body, reqs[0].header); err == nil {
		t.Errorf("Verify with another secret = nil, want an error")
	}
}

func TestWebhookIDWithoutSigning(t *testing.T) {
	rc := newReceiver(t, nil)
	s := newSinkLogger(discard())
	sinktest.Configure(t, s, map[string]any{"url": rc.URL})
	ev := sinktest.NewEvent(7)
	sinktest.DeliverAll(t, s, []sdk.Event{ev})
	ev.Attempt = 3
	sinktest.DeliverAll(t, s, []sdk.Event{ev})
	for i, r := range rc.requests() {
		if got := r.header.Get("webhook-id"); got != ev.ID {
			t.Errorf("request %d webhook-id = %q, want %q", i, got, ev.ID)
		}
		if r.header.Get("webhook-signature") != "" || r.header.Get("webhook-timestamp") != "" {
			t.Errorf("request %d is signed without a secret: %v", i, r.header)
		}
	}
}

func TestBodyModes(t *testing.T) {
	plain := sinktest.NewEvent(1)
	transformed := sinktest.NewEvent(2)
	transformed.Transformed = json.RawMessage(`{"text":"Interested lead from 919876543210"}`)

	t.Run("payload", func(t *testing.T) {
		rc := newReceiver(t, nil)
		s := newSinkLogger(discard())
		sinktest.Configure(t, s, map[string]any{"url": rc.URL})
		sinktest.DeliverAll(t, s, []sdk.Event{plain, transformed})
		reqs := rc.requests()
		if !bytes.Equal(reqs[0].body, plain.Body) {
			t.Errorf("payload body = %.80q..., want the event body as received", reqs[0].body)
		}
		if !bytes.Equal(reqs[1].body, transformed.Transformed) {
			t.Errorf("payload body of a transformed event = %q, want %q", reqs[1].body, transformed.Transformed)
		}
	})

	t.Run("envelope", func(t *testing.T) {
		rc := newReceiver(t, nil)
		s := newSinkLogger(discard())
		sinktest.Configure(t, s, map[string]any{"url": rc.URL, "body": "envelope"})
		sinktest.DeliverAll(t, s, []sdk.Event{plain, transformed})
		for i, ev := range []sdk.Event{plain, transformed} {
			var got map[string]json.RawMessage
			if err := json.Unmarshal(rc.requests()[i].body, &got); err != nil {
				t.Fatalf("envelope is not a JSON object: %v", err)
			}
			want := map[string]string{
				"id": `"` + ev.ID + `"`, "source": `"callkaro"`, "route": `"sinktest"`,
				"received_at": `"` + ev.ReceivedAt.UTC().Format(time.RFC3339Nano) + `"`, "attempt": "1",
			}
			for k, v := range want {
				if string(got[k]) != v {
					t.Errorf("envelope[%q] = %s, want %s", k, got[k], v)
				}
			}
			if !jsonEqual(t, got["body"], ev.Body) {
				t.Errorf("envelope body differs from the event body")
			}
			_, hasPayload := got["payload"]
			if hasPayload != (ev.Transformed != nil) {
				t.Errorf("event %d: envelope has payload = %v, want %v", i, hasPayload, ev.Transformed != nil)
			}
			if ev.Transformed != nil && !jsonEqual(t, got["payload"], ev.Transformed) {
				t.Errorf("envelope payload = %s, want %s", got["payload"], ev.Transformed)
			}
		}
	})
}

func TestHeaders(t *testing.T) {
	rc := newReceiver(t, nil)
	t.Setenv("TEST_HTTP_AUTH", "Bearer sk-live-0123456789")
	s := newSinkLogger(discard())
	sinktest.Configure(t, s, map[string]any{
		"url": rc.URL + "/crm/leads", "method": "put", "content_type": "application/vnd.crm+json",
		"headers":    map[string]string{"X-Tenant": "acme", "x-trace": "on"},
		"header_env": map[string]string{"Authorization": "TEST_HTTP_AUTH"},
	})
	sinktest.DeliverAll(t, s, []sdk.Event{sinktest.NewEvent(1)})
	r := rc.requests()[0]
	if r.method != http.MethodPut || r.path != "/crm/leads" {
		t.Errorf("request = %s %s, want PUT /crm/leads", r.method, r.path)
	}
	want := map[string]string{
		"X-Tenant": "acme", "X-Trace": "on", "Authorization": "Bearer sk-live-0123456789",
		"Content-Type": "application/vnd.crm+json", "Webhook-Id": sinktest.NewEvent(1).ID,
	}
	for k, v := range want {
		if got := r.header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
}

func TestStatuses(t *testing.T) {
	long := strings.Repeat("x", 200) + "ERROR-TAIL-BEYOND-200-BYTES" + strings.Repeat("y", 100)
	date := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	farDate := time.Now().AddDate(10, 0, 0).UTC().Format(http.TimeFormat) // capped at retryafter.Cap
	tests := []struct {
		status     int
		retryAfter string
		body       string
		want       string        // "delivered", "retry" or "permanent"
		after      time.Duration // for retry: the delay, within 3s for dates
		errHas     []string
		errHasNot  []string
	}{
		{status: 200, want: "delivered"},
		{status: 201, want: "delivered"},
		{status: 204, want: "delivered"},
		{status: 400, body: `{"error":"field phone is required"}`, want: "permanent", errHas: []string{"400", "field phone is required"}},
		{status: 400, body: long, want: "permanent", errHas: []string{"400", strings.Repeat("x", 150)}, errHasNot: []string{"ERROR-TAIL"}},
		{status: 301, want: "retry", errHas: []string{"301", "redirects are not followed"}},
		{status: 308, want: "retry", errHas: []string{"308", "redirects are not followed"}},
		{status: 413, body: "payload too large", want: "permanent", errHas: []string{"413 Request Entity Too Large", "payload too large"}},
		{status: 422, body: `{"error":"unknown field callSid"}`, want: "permanent", errHas: []string{"422 Unprocessable Entity", "unknown field callSid"}},
		{status: 302, want: "retry", errHas: []string{"302", "redirects are not followed", "Location https://elsewhere.example/x"}, errHasNot: []string{"k=v"}},
		// The receiver's, the credentials' or the config's fault, the
		// same for every event: an outage to wait out, not dead letters.
		{status: 401, body: `{"error":"token expired"}`, want: "retry", errHas: []string{"401 Unauthorized", "token expired"}},
		{status: 403, body: "key revoked", want: "retry", errHas: []string{"403 Forbidden", "key revoked"}},
		{status: 404, body: "no such hook", want: "retry", errHas: []string{"404 Not Found", "no such hook"}},
		{status: 405, want: "retry", errHas: []string{"405 Method Not Allowed"}},
		{status: 407, want: "retry", errHas: []string{"407"}},
		{status: 408, want: "retry", errHas: []string{"408"}},
		{status: 409, want: "retry", errHas: []string{"409 Conflict"}},
		{status: 410, body: "endpoint retired", want: "retry", errHas: []string{"410 Gone", "endpoint retired"}},
		{status: 414, want: "retry", errHas: []string{"414"}},
		{status: 415, want: "retry", errHas: []string{"415 Unsupported Media Type"}},
		{status: 423, want: "retry", errHas: []string{"423 Locked"}},
		{status: 425, want: "retry", errHas: []string{"425 Too Early"}},
		{status: 451, want: "retry", errHas: []string{"451"}},
		{status: 499, want: "retry", errHas: []string{"499"}},
		{status: 501, want: "retry", errHas: []string{"501 Not Implemented"}},
		{status: 599, want: "retry", errHas: []string{"599"}},
		{status: 429, retryAfter: "7", want: "retry", after: 7 * time.Second, errHas: []string{"429"}},
		{status: 429, retryAfter: date, want: "retry", after: 90 * time.Second, errHas: []string{"429"}},
		{status: 429, retryAfter: farDate, want: "retry", after: 24 * time.Hour, errHas: []string{"429"}},
		{status: 500, body: "boom", want: "retry", errHas: []string{"500", "boom"}},
		{status: 503, retryAfter: "3", want: "retry", after: 3 * time.Second, errHas: []string{"503"}},
		{status: 503, retryAfter: "soon", want: "retry", after: 0, errHas: []string{"503"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d-%s", tt.status, tt.retryAfter), func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				if tt.status/100 == 3 {
					w.Header().Set("Location", "https://elsewhere.example/x?k=v")
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			s := sinktest.Serve(t, newSinkLogger(discard()))
			sinktest.Configure(t, s, map[string]any{"url": rc.URL})
			r := deliverOne(t, s, sinktest.NewEvent(1))
			after, retry := r.IsRetry()
			switch {
			case tt.want == "delivered" && !r.IsDelivered(),
				tt.want == "permanent" && !r.IsPermanent(),
				tt.want == "retry" && !retry:
				t.Fatalf("status %d: result = %v, want %s", tt.status, r, tt.want)
			}
			if retry && (after < tt.after-3*time.Second || after > tt.after) {
				t.Errorf("status %d Retry-After %q: retry after %v, want %v", tt.status, tt.retryAfter, after, tt.after)
			}
			for _, s := range tt.errHas {
				if r.Err() == nil || !strings.Contains(r.Err().Error(), s) {
					t.Errorf("status %d: error %v, want it to contain %q", tt.status, r.Err(), s)
				}
			}
			for _, s := range tt.errHasNot {
				if r.Err() != nil && strings.Contains(r.Err().Error(), s) {
					t.Errorf("status %d: error %v contains %q, want it cut at 200 bytes and without the URL's query", tt.status, r.Err(), s)
				}
			}
		})
	}
}

// TestPermanentStatus: which answers fail an event for good, by default
// and with permanent_status set; every other 4xx and 5xx is a retry.
func TestPermanentStatus(t *testing.T) {
	tests := []struct {
		name      string
		permanent []int // nil: the key is not set
		permFor   []int // answered permanent
		retryFor  []int // answered retry
	}{
		{"default", nil, []int{400, 413, 422}, []int{401, 403, 404, 405, 407, 408, 409, 410, 414, 415, 423, 425, 429, 500, 501, 502, 503, 504}},
		{"auth-fails-for-good", []int{400, 401, 403}, []int{400, 401, 403}, []int{404, 413, 422, 500}},
		{"gone-and-not-implemented", []int{410, 501}, []int{410, 501}, []int{400, 404, 413, 422, 500, 503}},
		{"retry-everything", []int{}, nil, []int{400, 401, 404, 413, 422, 500}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var status atomic.Int32
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
				w.WriteHeader(int(status.Load()))
				io.WriteString(w, "refused by the test receiver")
			})
			cfg := map[string]any{"url": rc.URL}
			if tt.permanent != nil {
				cfg["permanent_status"] = tt.permanent
			}
			s := newSinkLogger(discard())
			sinktest.Configure(t, s, cfg)
			check := func(code int, wantPermanent bool) {
				t.Helper()
				status.Store(int32(code))
				r := deliverOne(t, s, sinktest.NewEvent(1))
				_, retry := r.IsRetry()
				switch {
				case wantPermanent && !r.IsPermanent():
					t.Errorf("permanent_status %v: answer %d = %v, want permanent", tt.permanent, code, r)
				case !wantPermanent && !retry:
					t.Errorf("permanent_status %v: answer %d = %v, want retry", tt.permanent, code, r)
				}
				if err := r.Err(); err == nil || !strings.Contains(err.Error(), statusText(code)) || !strings.Contains(err.Error(), "refused by the test receiver") {
					t.Errorf("answer %d: error %v, want the status and the start of the response", code, err)
				}
			}
			for _, code := range tt.permFor {
				check(code, true)
			}
			for _, code := range tt.retryFor {
				check(code, false)
			}
		})
	}
}

func TestThrottleStopsBatch(t *testing.T) {
	for _, conc := range []int{1, 3} {
		t.Run(fmt.Sprintf("concurrency-%d", conc), func(t *testing.T) {
			var n atomic.Int32
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
				if n.Add(1) >= 2 {
					w.Header().Set("Retry-After", "30")
					w.WriteHeader(http.StatusTooManyRequests)
					return
				}
				w.WriteHeader(http.StatusOK)
			})
			var logs bytes.Buffer
			s := newSinkLogger(slog.New(slog.NewTextHandler(&logs, nil)))
			sinktest.Configure(t, s, map[string]any{"url": rc.URL, "concurrency": conc})
			batch := events(0, 20)
			results, err := s.Deliver(context.Background(), batch)
			if err != nil || len(results) != len(batch) {
				t.Fatalf("Deliver = %d results, %v; want %d, nil", len(results), err, len(batch))
			}
			if n := strings.Count(logs.String(), "http receiver throttled: rest of the batch not sent"); n != 1 {
				t.Errorf("log has %d lines for the events not sent after the 429, want 1:\n%s", n, logs.String())
			}
			got := len(rc.requests())
			if got > 1+conc {
				t.Errorf("receiver got %d requests after a 429, want at most %d (the rest not sent)", got, 1+conc)
			}
			// The events sent and throttled are retries after 30s (they
			// were attempted); those not sent after the 429 are not
			// attempted, after the same 30s.
			delivered, throttled, notSent := 0, 0, 0
			for i, r := range results {
				if r.IsDelivered() {
					delivered++
					continue
				}
				if after, ok := r.IsRetry(); ok && after == 30*time.Second {
					throttled++
					continue
				}
				if after, ok := r.IsNotAttempted(); !ok || after != 30*time.Second {
					t.Errorf("result %d = %v, want retry after 30s (sent) or not attempted, again after 30s (not sent)", i, r)
					continue
				}
				notSent++
			}
			if delivered != 1 {
				t.Errorf("%d delivered, want 1", delivered)
			}
			if sent := len(rc.requests()); throttled != sent-1 || notSent != len(batch)-sent {
				t.Errorf("receiver got %d requests; %d answered retry, %d not attempted: want a retry for each request throttled and not attempted for each event not sent", sent, throttled, notSent)
			}
			if conc == 1 && !results[0].IsDelivered() {
				t.Errorf("result 0 = %v, want delivered (in order)", results[0])
			}
		})
	}
}

// TestSlowReceiverStopsInTime: a receiver that takes 100 ms a request
// cannot take a whole batch within the host's call time (its deadline, 60
// s in the daemon). The sink sends while a request can still end in time,
// answers for what it sent before the deadline, and answers the rest
// not attempted (unsent, they cost no attempt): a call that runs out of time has none of its results
// recorded, and every call would run out of time again, the queue never
// draining while the receiver got the same events again and again. The
// deadline comes through the plugin protocol.
func TestSlowReceiverStopsInTime(t *testing.T) {
	for _, conc := range []int{1, 4} {
		t.Run(fmt.Sprintf("concurrency-%d", conc), func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
				time.Sleep(100 * time.Millisecond)
				w.WriteHeader(http.StatusOK)
			})
			s := sinktest.Serve(t, newSinkLogger(discard()))
			sinktest.Configure(t, s, map[string]any{"url": rc.URL, "timeout": "300ms", "concurrency": conc})
			// answerReserve (2 s) + timeout + 0.8 s: about 8 requests' time, one at a time.
			deadline := time.Now().Add(2*time.Second + 300*time.Millisecond + 800*time.Millisecond)
			ctx, cancel := context.WithDeadline(context.Background(), deadline)
			defer cancel()
			batch := events(0, 200)
			results, err := s.Deliver(ctx, batch)
			if err != nil || len(results) != len(batch) {
				t.Fatalf("Deliver = %d results, %v; want %d results before the deadline", len(results), err, len(batch))
			}
			if time.Now().After(deadline) {
				t.Errorf("Deliver answered %v after the call's deadline", time.Since(deadline))
			}
			delivered, notSent := 0, 0
			for i, r := range results {
				switch {
				case r.IsDelivered():
					if notSent > 0 && conc == 1 {
						t.Errorf("result %d delivered after an event not sent, want the sent ones first (in order)", i)
					}
					delivered++
				case r.Err() != nil && strings.Contains(r.Err().Error(), "not sent: the receiver answers too slowly"):
					if after, ok := r.IsNotAttempted(); !ok || after != 0 {
						t.Errorf("result %d = %v, want not attempted (it was not sent), again at once", i, r)
					}
					notSent++
				default:
					t.Errorf("result %d = %v, want delivered or not sent", i, r)
				}
			}
			if got := len(rc.requests()); delivered == 0 || got != delivered || notSent != len(batch)-delivered {
				t.Errorf("delivered %d, not sent %d, receiver got %d requests: want some delivered, each once, the rest not sent", delivered, notSent, got)
			}
		})
	}
}

// TestLongTimeoutSendsWholeBatch: a timeout as long as the host's call
// (60 s) never fits before the call's deadline; the sink still sends the
// whole batch to a receiver that answers at once, not one event a call
// (the rest answered "not sent" and retried, an attempt each, until the
// dead-letter queue), and a slow receiver gets what fits before the
// deadline, the request cut there retried.
func TestLongTimeoutSendsWholeBatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sleep time.Duration
		call  time.Duration
	}{
		{"fast-receiver", 0, 60 * time.Second},
		{"slow-receiver", 100 * time.Millisecond, answerReserve + 800*time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
				time.Sleep(tc.sleep)
				w.WriteHeader(http.StatusOK)
			})
			s := sinktest.Serve(t, newSinkLogger(discard()))
			sinktest.Configure(t, s, map[string]any{"url": rc.URL, "timeout": "60s"})
			deadline := time.Now().Add(tc.call)
			ctx, cancel := context.WithDeadline(context.Background(), deadline)
			defer cancel()
			batch := events(0, 50)
			results, err := s.Deliver(ctx, batch)
			if err != nil || len(results) != len(batch) {
				t.Fatalf("Deliver = %d results, %v; want %d", len(results), err, len(batch))
			}
			if time.Now().After(deadline) {
				t.Errorf("Deliver answered %v after the call's deadline", time.Since(deadline))
			}
			delivered := 0
			for _, r := range results {
				if r.IsDelivered() {
					delivered++
				}
			}
			switch {
			case tc.sleep == 0 && delivered != len(batch):
				t.Errorf("delivered %d of %d to a receiver that answers at once, want all", delivered, len(batch))
			case tc.sleep > 0 && (delivered == 0 || delivered == len(batch)):
				t.Errorf("delivered %d of %d to a receiver at %v a request within %v, want some", delivered, len(batch), tc.sleep, tc.call)
			}
		})
	}
}

func TestTimeoutRetries(t *testing.T) {
	release := make(chan struct{})
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	s := newSinkLogger(discard())
	sinktest.Configure(t, s, map[string]any{"url": rc.URL + "/x?token=tok-SECRET-9", "timeout": "100ms"})
	start := time.Now()
	r := deliverOne(t, s, sinktest.NewEvent(1))
	if after, ok := r.IsRetry(); !ok || after != 0 {
		t.Fatalf("result = %v, want retry with the host's backoff", r)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Deliver took %v with timeout 100ms", d)
	}
	if msg := r.Err().Error(); !strings.Contains(msg, "timeout 100ms") || strings.Contains(msg, "tok-SECRET-9") {
		t.Errorf("error = %q, want it to name the timeout and not the url token", msg)
	}
}

func TestNetworkErrorRetries(t *testing.T) {
	rc := newReceiver(t, nil)
	u := rc.URL
	rc.Close()
	s := newSinkLogger(discard())
	sinktest.Configure(t, s, map[string]any{"url": u + "/hook?token=tok-SECRET-9"})
	r := deliverOne(t, s, sinktest.NewEvent(1))
	if _, ok := r.IsRetry(); !ok {
		t.Fatalf("result = %v, want retry", r)
	}
	if msg := r.Err().Error(); !strings.Contains(msg, u+"/hook") || strings.Contains(msg, "tok-SECRET-9") {
		t.Errorf("error = %q, want scheme://host/path and no token", msg)
	}
}

// TestUnreachableStopsBatch: when no connection can be made (the receiver
// is down: refused), each request of the batch would fail alike and cost
// its event an attempt toward max_attempts; a daemon restarted during the
// outage (its breaker closed) would spend one on each of a whole batch. So
// the rest of the batch is not sent, answered not attempted, with one log
// line for them all.
func TestUnreachableStopsBatch(t *testing.T) {
	rc := newReceiver(t, nil)
	u := rc.URL
	rc.Close() // nothing listens there now: connection refused
	for _, conc := range []int{1, 3} {
		t.Run(fmt.Sprintf("concurrency-%d", conc), func(t *testing.T) {
			var logs bytes.Buffer
			s := newSinkLogger(slog.New(slog.NewTextHandler(&logs, nil)))
			sinktest.Configure(t, s, map[string]any{"url": u, "concurrency": conc})
			batch := events(0, 20)
			results, err := s.Deliver(context.Background(), batch)
			if err != nil || len(results) != len(batch) {
				t.Fatalf("Deliver = %d results, %v; want %d, nil", len(results), err, len(batch))
			}
			tried, notSent := 0, 0
			for i, r := range results {
				if _, ok := r.IsRetry(); ok {
					tried++
					continue
				}
				if after, ok := r.IsNotAttempted(); !ok || after != 0 || !strings.Contains(r.Err().Error(), "earlier in the batch") {
					t.Errorf("result %d = %v, want retry (tried) or not attempted at once (not sent)", i, r)
					continue
				}
				notSent++
			}
			if tried < 1 || tried > conc {
				t.Errorf("%d events tried against a receiver that refuses connections, want 1 to %d (those in flight)", tried, conc)
			}
			if notSent != len(batch)-tried {
				t.Errorf("%d answered not attempted, want the other %d", notSent, len(batch)-tried)
			}
			if n := strings.Count(logs.String(), "http receiver unreachable: rest of the batch not sent"); n != 1 {
				t.Errorf("log has %d lines for the events not sent, want 1:\n%s", n, logs.String())
			}
		})
	}
}

// TestUnavailableStopsBatch: a 502, 503 or 504 without Retry-After (a
// gateway with nothing behind it, a receiver down for maintenance) is
// about the receiver, not the event: each request of the batch would get
// it too and cost its event an attempt, a whole batch (500 requests) a
// call until the breaker opens. So the rest of the batch is not sent,
// answered not attempted at once (the dispatcher holds a batch that made
// no progress back for backoff_min), with one log line for them all. A
// 500 may be about the event (a receiver that fails on its content): the
// rest is sent, each answered for itself.
func TestUnavailableStopsBatch(t *testing.T) {
	for _, code := range []int{502, 503, 504, 500} {
		for _, conc := range []int{1, 3} {
			t.Run(fmt.Sprintf("%d-concurrency-%d", code, conc), func(t *testing.T) {
				rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
					w.WriteHeader(code)
					io.WriteString(w, "upstream down")
				})
				var logs bytes.Buffer
				s := newSinkLogger(slog.New(slog.NewTextHandler(&logs, nil)))
				sinktest.Configure(t, s, map[string]any{"url": rc.URL, "concurrency": conc})
				batch := events(0, 20)
				results, err := s.Deliver(context.Background(), batch)
				if err != nil || len(results) != len(batch) {
					t.Fatalf("Deliver = %d results, %v; want %d, nil", len(results), err, len(batch))
				}
				sent := len(rc.requests())
				if code == 500 {
					if sent != len(batch) {
						t.Errorf("receiver got %d requests answered 500, want %d (a 500 is per event)", sent, len(batch))
					}
					for i, r := range results {
						if _, ok := r.IsRetry(); !ok {
							t.Errorf("result %d = %v, want retry", i, r)
						}
					}
					if strings.Contains(logs.String(), "rest of the batch not sent") {
						t.Errorf("log says the batch was halted after a 500:\n%s", logs.String())
					}
					return
				}
				if sent < 1 || sent > conc {
					t.Errorf("receiver got %d requests answered %d, want 1 to %d (those in flight)", sent, code, conc)
				}
				tried, notSent := 0, 0
				for i, r := range results {
					if after, ok := r.IsRetry(); ok && after == 0 {
						tried++
						continue
					}
					if after, ok := r.IsNotAttempted(); !ok || after != 0 || !strings.Contains(r.Err().Error(), "earlier in the batch") ||
						!strings.Contains(r.Err().Error(), statusText(code)) {
						t.Errorf("result %d = %v, want retry (sent) or not attempted at once, naming the answer (not sent)", i, r)
						continue
					}
					notSent++
				}
				if tried != sent || notSent != len(batch)-sent {
					t.Errorf("receiver got %d requests; %d answered retry, %d not attempted: want a retry for each request and not attempted for each event not sent", sent, tried, notSent)
				}
				if n := strings.Count(logs.String(), "http receiver unavailable: rest of the batch not sent"); n != 1 {
					t.Errorf("log has %d lines for the events not sent, want 1:\n%s", n, logs.String())
				}
			})
		}
	}
}

func TestConcurrencyAnswersPerEvent(t *testing.T) {
	var inFlight, maxInFlight atomic.Int32
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := maxInFlight.Load(); n > m && !maxInFlight.CompareAndSwap(m, n); m = maxInFlight.Load() {
		}
		time.Sleep(30 * time.Millisecond)
		// Odd event numbers fail: permanent for those ending in 1, 3; retry otherwise.
		id := r.Header.Get("webhook-id")
		switch id[len(id)-1] {
		case '1', '3':
			w.WriteHeader(http.StatusUnprocessableEntity)
		case '5', '7', '9':
			w.WriteHeader(http.StatusInternalServerError) // per event; a 502 would halt the batch
		default:
			w.WriteHeader(http.StatusOK)
		}
	})
	s := sinktest.Serve(t, newSinkLogger(discard()))
	sinktest.Configure(t, s, map[string]any{"url": rc.URL, "concurrency": 4})
	batch := events(0, 16)
	results, err := s.Deliver(context.Background(), batch)
	if err != nil || len(results) != len(batch) {
		t.Fatalf("Deliver = %d results, %v; want %d, nil", len(results), err, len(batch))
	}
	for i, r := range results {
		id := batch[i].ID
		var ok bool
		switch id[len(id)-1] {
		case '1', '3':
			ok = r.IsPermanent() && strings.Contains(r.Err().Error(), "422")
		case '5', '7', '9':
			_, ok = r.IsRetry()
		default:
			ok = r.IsDelivered()
		}
		if !ok {
			t.Errorf("result %d (event %s) = %v, wrong answer for this event", i, id, r)
		}
	}
	if m := maxInFlight.Load(); m < 2 || m > 4 {
		t.Errorf("at most %d requests in flight, want 2..4 with concurrency 4", m)
	}
	if n := len(rc.requests()); n != len(batch) {
		t.Errorf("receiver got %d requests, want %d", n, len(batch))
	}
}

func TestInOrderWithConcurrencyOne(t *testing.T) {
	rc := newReceiver(t, nil)
	s := newSinkLogger(discard())
	sinktest.Configure(t, s, map[string]any{"url": rc.URL})
	batch := events(10, 8)
	sinktest.DeliverAll(t, s, batch)
	for i, r := range rc.requests() {
		if got := r.header.Get("webhook-id"); got != batch[i].ID {
			t.Errorf("request %d is event %s, want %s (batch order)", i, got, batch[i].ID)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	t.Setenv("TEST_HTTP_NOT_WHSEC", "sk_live_notawebhooksecret")
	t.Setenv("TEST_HTTP_BAD_B64", "whsec_***not-base64***")
	t.Setenv("TEST_HTTP_GOOD", testSecret)
	tests := []struct {
		name string
		raw  string
		want []string // phrases the error must contain, all of them
	}{
		{"missing-url", `{}`, []string{`"url" is required`}},
		{"url-and-url-env", `{"url": "https://a.example", "url_env": "X"}`, []string{`only one of "url"`}},
		{"url-env-unset", `{"url_env": "TEST_HTTP_NO_SUCH_VAR"}`, []string{"url_env", "TEST_HTTP_NO_SUCH_VAR", "not set"}},
		{"bad-scheme", `{"url": "ftp://a.example/x"}`, []string{`scheme "ftp"`}},
		{"no-host", `{"url": "https:///x"}`, []string{"no host"}},
		{"bad-method", `{"url": "https://a.example", "method": "GET"}`, []string{`"method" = "GET"`}},
		{"both-secret-keys", `{"url": "https://a.example", "secret_env": "TEST_HTTP_GOOD", "secret_file": "/x"}`, []string{"only one of secret_env and secret_file"}},
		{"secret-env-unset", `{"url": "https://a.example", "secret_env": "TEST_HTTP_NO_SUCH_VAR"}`, []string{"TEST_HTTP_NO_SUCH_VAR", "not set"}},
		{"non-whsec-secret", `{"url": "https://a.example", "secret_env": "TEST_HTTP_NOT_WHSEC"}`, []string{`"whsec_"`}},
		{"bad-base64-secret", `{"url": "https://a.example", "secret_env": "TEST_HTTP_BAD_B64"}`, []string{"base64"}},
		{"header-env-unset", `{"url": "https://a.example", "header_env": {"Authorization": "TEST_HTTP_NO_SUCH_VAR"}}`, []string{`"Authorization"`, "TEST_HTTP_NO_SUCH_VAR", "not set"}},
		{"header-both", `{"url": "https://a.example", "headers": {"Authorization": "x"}, "header_env": {"authorization": "TEST_HTTP_GOOD"}}`, []string{"both"}},
		{"bad-header-name", `{"url": "https://a.example", "headers": {"X Bad": "x"}}`, []string{`"X Bad" is not a valid header name`}},
		{"reserved-header", `{"url": "https://a.example", "headers": {"webhook-id": "x"}}`, []string{`"webhook-id" cannot be set`}},
		{"content-type-header", `{"url": "https://a.example", "headers": {"Content-Type": "text/plain"}}`, []string{"content_type"}},
		{"bad-body", `{"url": "https://a.example", "body": "raw"}`, []string{`"body" = "raw"`}},
		{"bad-timeout", `{"url": "https://a.example", "timeout": "soon"}`, []string{`"timeout"`}},
		{"zero-timeout", `{"url": "https://a.example", "timeout": "0s"}`, []string{`"timeout" must be positive`}},
		{"zero-concurrency", `{"url": "https://a.example", "concurrency": 0}`, []string{`"concurrency" = 0`}},
		{"negative-idle", `{"url": "https://a.example", "max_idle_conns": -1}`, []string{`"max_idle_conns" = -1`}},
		{"inline-secret", `{"url": "https://a.example", "secret": "whsec_abc"}`, []string{`config key "secret" must not be written inline`, "secret_env", "secret_file"}},
		{"unknown-key", `{"url": "https://a.example", "secrets_env": "X"}`, []string{`unknown config key "secrets_env"`}},
		{"permanent-2xx", `{"url": "https://a.example", "permanent_status": [400, 204]}`, []string{`"permanent_status" lists 204`, "a 2xx answer is a delivery"}},
		{"permanent-429", `{"url": "https://a.example", "permanent_status": [429]}`, []string{`"permanent_status" lists 429`, "always retried", "remove it"}},
		{"permanent-3xx", `{"url": "https://a.example", "permanent_status": [301]}`, []string{`"permanent_status" lists 301`, "always retried", "400 to 599"}},
		{"permanent-600", `{"url": "https://a.example", "permanent_status": [600]}`, []string{`"permanent_status" lists 600`, "400 to 599"}},
		{"permanent-twice", `{"url": "https://a.example", "permanent_status": [422, 400, 422]}`, []string{`"permanent_status" lists 422 twice`}},
		{"permanent-every-problem", `{"url": "https://a.example", "permanent_status": [0, 299, 429, 1000]}`, []string{"lists 0:", "lists 299:", "lists 429:", "lists 1000:"}},
		{"permanent-not-a-list", `{"url": "https://a.example", "permanent_status": 400}`, []string{`"permanent_status"`}},
		{"permanent-strings", `{"url": "https://a.example", "permanent_status": ["400"]}`, []string{`"permanent_status"`}},
		{"every-problem", `{"method": "GET", "body": "raw"}`, []string{`"url" is required`, `"method"`, `"body"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := newSinkLogger(discard()).Configure(context.Background(), json.RawMessage(tt.raw))
			if err == nil {
				t.Fatalf("Configure(%s) = nil, want an error containing %q", tt.raw, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Configure(%s) = %q, want it to contain %q", tt.raw, err, w)
				}
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := parseConfig(json.RawMessage(`{"url": "https://a.example/h"}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.method != "POST" || cfg.timeout != 10*time.Second || cfg.envelope || cfg.contentType != "application/json" ||
		cfg.concurrency != 1 || cfg.maxIdleConns != 1 || len(cfg.signers) != 0 || cfg.tls != nil {
		t.Errorf("defaults = %+v", cfg)
	}
	if want := map[int]bool{400: true, 413: true, 422: true}; !maps.Equal(cfg.permanent, want) {
		t.Errorf("default permanent statuses = %v, want %v", cfg.permanent, want)
	}
	// A config that sets the list replaces the default, and leaves the
	// default as it was for the next one.
	cfg, err = parseConfig(json.RawMessage(`{"url": "https://a.example/h", "permanent_status": [401]}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := map[int]bool{401: true}; !maps.Equal(cfg.permanent, want) {
		t.Errorf("permanent_status = [401]: permanent statuses = %v, want %v", cfg.permanent, want)
	}
	if want := []int{400, 413, 422}; !slices.Equal(defaultConfig().PermanentStatus, want) || !slices.Equal(defaultPermanentStatus, want) {
		t.Errorf("after a config with permanent_status, the default is %v, want %v", defaultPermanentStatus, want)
	}
}

func TestURLFromEnvAndFile(t *testing.T) {
	rc := newReceiver(t, nil)
	t.Setenv("TEST_HTTP_URL", rc.URL+"/from-env?token=t1")
	file := filepath.Join(t.TempDir(), "url")
	if err := os.WriteFile(file, []byte(rc.URL+"/from-file?token=t2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []map[string]any{{"url_env": "TEST_HTTP_URL"}, {"url_file": file}} {
		s := newSinkLogger(discard())
		sinktest.Configure(t, s, cfg)
		sinktest.DeliverAll(t, s, []sdk.Event{sinktest.NewEvent(1)})
	}
	reqs := rc.requests()
	if reqs[0].path != "/from-env" || reqs[0].query != "token=t1" || reqs[1].path != "/from-file" || reqs[1].query != "token=t2" {
		t.Errorf("requests went to %s?%s and %s?%s", reqs[0].path, reqs[0].query, reqs[1].path, reqs[1].query)
	}
}

// TestNoSecretLeaks: the signing secret, the url's token and header_env
// values never appear in logs, errors or results.
func TestNoSecretLeaks(t *testing.T) {
	const (
		urlToken  = "tok-URLSECRET-4242"
		headerVal = "Bearer HDRSECRET-7777"
	)
	secretKey := strings.TrimPrefix(testSecret, "whsec_")
	t.Setenv("TEST_HTTP_SECRET", testSecret)
	t.Setenv("TEST_HTTP_AUTH", headerVal)
	t.Setenv("TEST_HTTP_NOT_WHSEC", "sk_live_NOTWHSEC-5555")
	secrets := []string{urlToken, headerVal, "HDRSECRET-7777", secretKey, "NOTWHSEC-5555"}

	var logs testlog.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var texts []string

	answers := []int{400, 500, 429, 302}
	var n atomic.Int32
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		code := answers[int(n.Add(1)-1)%len(answers)]
		w.Header().Set("Location", "/moved?token="+urlToken)
		w.WriteHeader(code)
		io.WriteString(w, "rejected")
	})
	cfg := map[string]any{
		"url": rc.URL + "/hook?token=" + urlToken, "secret_env": "TEST_HTTP_SECRET",
		"header_env": map[string]string{"Authorization": "TEST_HTTP_AUTH"}, "timeout": "200ms",
	}
	s := newSinkLogger(log)
	sinktest.Configure(t, s, cfg)
	for range answers {
		results, err := s.Deliver(context.Background(), events(0, 2))
		if err != nil {
			texts = append(texts, err.Error())
		}
		for _, r := range results {
			texts = append(texts, r.String())
		}
	}
	// Network error and timeout.
	dead := newReceiver(t, nil)
	deadURL := dead.URL
	dead.Close()
	cfg["url"] = deadURL + "/hook?token=" + urlToken
	sinktest.Configure(t, s, cfg)
	texts = append(texts, deliverOne(t, s, sinktest.NewEvent(1)).String())
	slow := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ []byte) { <-r.Context().Done() })
	cfg["url"] = slow.URL + "/hook?token=" + urlToken
	sinktest.Configure(t, s, cfg)
	texts = append(texts, deliverOne(t, s, sinktest.NewEvent(1)).String())
	// Config errors that concern secrets.
	for _, bad := range []map[string]any{
		{"url": "https://a.example/?token=" + urlToken, "secret_env": "TEST_HTTP_NOT_WHSEC"},
		{"url": "ftp://a.example/?token=" + urlToken},
		{"url": "https://a.example/?token=" + urlToken, "header_env": map[string]string{"Bad Name": "TEST_HTTP_AUTH"}},
		{"url": "https://a.example/?token=" + urlToken, "method": "GET", "secret_env": "TEST_HTTP_SECRET"},
	} {
		if err := newSinkLogger(log).Configure(context.Background(), sinktest.Config(t, bad)); err != nil {
			texts = append(texts, err.Error())
		} else {
			t.Errorf("Configure(%v) = nil, want an error", bad)
		}
	}
	texts = append(texts, logs.String())
	if !strings.Contains(logs.String(), "http sink configured") {
		t.Errorf("no log captured; the leak check would be vacuous")
	}
	all := strings.Join(texts, "\n")
	for _, sec := range secrets {
		if strings.Contains(all, sec) {
			t.Errorf("secret %q appears in logs or errors:\n%s", sec, all)
		}
	}
}

func TestDescribe(t *testing.T) {
	d := newSink().Describe()
	fields := map[string]sdk.Field{}
	for _, f := range d.Fields {
		fields[f.Name] = f
	}
	// Every key of the config struct is described; *_env/*_file of a
	// Secret field count as described by it.
	ct := reflect.TypeFor[config]()
	for i := range ct.NumField() {
		key, _, _ := strings.Cut(ct.Field(i).Tag.Get("json"), ",")
		if _, ok := fields[key]; ok {
			continue
		}
		base := strings.TrimSuffix(strings.TrimSuffix(key, "_env"), "_file")
		if f, ok := fields[base]; ok && f.Secret && base != key {
			continue
		}
		t.Errorf("config key %q is not described", key)
	}
	if !fields["secret"].Secret {
		t.Errorf(`field "secret" is not marked Secret`)
	}
	if f := fields["permanent_status"]; f.Type != "[]int" || f.Default != "[400, 413, 422]" {
		t.Errorf(`field "permanent_status" = type %q default %q, want "[]int" "[400, 413, 422]"`, f.Type, f.Default)
	}
	for _, cfg := range []string{`{"url": "https://a.example", "permanent_status": [400, 401]}`, `{"url": "https://a.example", "permanent_status": []}`} {
		if errs := d.Check(json.RawMessage(cfg)); len(errs) != 0 {
			t.Errorf("Check(%s) = %v, want no problem", cfg, errs)
		}
	}
	if errs := d.Check(json.RawMessage(`{"url": "https://a.example", "permanent_status": ["400"]}`)); len(errs) != 1 {
		t.Errorf(`Check(permanent_status = ["400"]) = %v, want one problem`, errs)
	}
	// url is not Required in the description: url_env or url_file may
	// stand for it, and Configure insists on exactly one of the three.
	if fields["url"].Required {
		t.Errorf(`field "url" is Required; a config with only url_env would fail the host's check`)
	}
	if errs := d.Check(json.RawMessage(`{"url_env": "CRM_URL"}`)); len(errs) != 0 {
		t.Errorf("Check(url_env only) = %v, want no problem", errs)
	}
	for _, f := range d.Fields {
		if f.Doc == "" || f.Type == "" {
			t.Errorf("field %q lacks Doc or Type", f.Name)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"0", 0}, {"-5", 0}, {"12", 12 * time.Second}, {" 3 ", 3 * time.Second}, {"later", 0},
		{now.Add(2 * time.Minute).Format(http.TimeFormat), 2 * time.Minute},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"86400", 24 * time.Hour}, {"31536000", 24 * time.Hour}, // a year's seconds: capped, not refused
		{now.AddDate(10, 0, 0).Format(http.TimeFormat), 24 * time.Hour}, // ten years ahead: capped
	}
	for _, tt := range tests {
		if got := retryAfter(tt.in, now); got != tt.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// helpers

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func deliverOne(t testing.TB, s sdk.Sink, ev sdk.Event) sdk.Result {
	t.Helper()
	results, err := s.Deliver(context.Background(), []sdk.Event{ev})
	if err != nil {
		t.Fatalf("Deliver = %v", err)
	}
	if results == nil {
		return sdk.Delivered()
	}
	if len(results) != 1 {
		t.Fatalf("Deliver(1 event) = %d results", len(results))
	}
	return results[0]
}

func events(first, n int) []sdk.Event {
	b := make([]sdk.Event, n)
	for i := range b {
		b[i] = sinktest.NewEvent(first + i)
	}
	return b
}

func jsonEqual(t testing.TB, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		return false
	}
	if err := json.Unmarshal(b, &y); err != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// TestResponseExcerptScrubbed: a receiver that answers with its own request
// echoed (headers, query, escaped or cut at the excerpt's end) does not put
// header_env values or the URL's query values into the result or the log.
func TestResponseExcerptScrubbed(t *testing.T) {
	const (
		apiKey   = "crmkey_SECRET0123456789abcdef"
		bearer   = "tokBEARER+/=9876543210"
		urlToken = "qtok/SECRET+4242"
	)
	t.Setenv("TEST_HTTP_APIKEY", apiKey)
	t.Setenv("TEST_HTTP_BEARER", "Bearer "+bearer)
	echoes := map[string]func(r *http.Request) string{
		"headers as JSON": func(r *http.Request) string {
			b, _ := json.Marshal(map[string]any{"headers": r.Header, "query": r.URL.Query()})
			return string(b)
		},
		"raw query":   func(r *http.Request) string { return "bad request to " + r.URL.String() },
		"bearer only": func(r *http.Request) string { return "unknown token " + bearer },
		"key escaped": func(r *http.Request) string { return "key=" + url.QueryEscape(apiKey) + "&x=1" },
		"cut at the excerpt's end": func(r *http.Request) string {
			return strings.Repeat("x", errorExcerpt-10) + r.Header.Get("X-Api-Key")
		},
	}
	for name, echo := range echoes {
		t.Run(name, func(t *testing.T) {
			var logs testlog.Buffer
			log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, echo(r))
			})
			s := newSinkLogger(log)
			sinktest.Configure(t, s, map[string]any{
				"url":        rc.URL + "/hook?token=" + url.QueryEscape(urlToken) + "&org=7",
				"header_env": map[string]string{"X-Api-Key": "TEST_HTTP_APIKEY", "Authorization": "TEST_HTTP_BEARER"},
			})
			r := deliverOne(t, s, sinktest.NewEvent(1))
			if !r.IsPermanent() {
				t.Fatalf("result = %v, want permanent (400)", r)
			}
			got := r.String() + "\n" + logs.String()
			if !strings.Contains(got, "400") {
				t.Fatalf("result %q does not show the status: premise broken", r.String())
			}
			for _, sec := range []string{apiKey, bearer, urlToken, url.QueryEscape(urlToken), url.QueryEscape(apiKey), apiKey[:8]} {
				if strings.Contains(got, sec) {
					t.Errorf("result or log contains %q:\n%s", sec, got)
				}
			}
		})
	}
}

// TestWrapUpSaysWhatHappened: when the daemon stops it wraps the call up
// (ctx ends with sdk.ErrWrapUp). The request in flight is cut, a retry;
// the events not sent yet are not attempted. What an operator reads of
// them (events show, the dispatcher's "deliveries failed" line) says
// that the daemon stopped and the receiver had not answered, not the
// SDK's request to the sink.
func TestWrapUpSaysWhatHappened(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		arrived <- struct{}{}
		select { // a receiver that does not answer in time
		case <-release:
		case <-r.Context().Done():
		}
	})
	s := newSinkLogger(discard())
	sinktest.Configure(t, s, map[string]any{"url": rc.URL})
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go func() {
		<-arrived
		cancel(sdk.ErrWrapUp)
	}()
	results, err := s.Deliver(ctx, events(0, 3))
	if err != nil || len(results) != 3 {
		t.Fatalf("Deliver = %d results, %v; want 3, nil", len(results), err)
	}
	const cut = "cut short: the daemon is stopping and the receiver had not answered"
	if _, ok := results[0].IsRetry(); !ok || !strings.Contains(results[0].Err().Error(), cut) {
		t.Errorf("result 0 (in flight) = %v, want retry saying %q", results[0], cut)
	}
	for i, r := range results[1:] {
		if _, ok := r.IsNotAttempted(); !ok || !strings.Contains(r.Err().Error(), "not sent: the daemon is stopping") {
			t.Errorf("result %d (not sent) = %v, want not attempted saying the daemon is stopping", i+1, r)
		}
	}
	for i, r := range results {
		if msg := r.Err().Error(); strings.Contains(msg, "answer for what you have done") {
			t.Errorf("result %d says %q, the SDK's request to the sink, not what happened", i, msg)
		}
	}
}
