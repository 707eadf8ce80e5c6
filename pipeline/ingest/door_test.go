package ingest_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/auth"
	"github.com/pipelined/pipelined/pipeline/ingest"
)

const whsecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// withSource serves testConfig with its one source changed by edit.
func withSource(t *testing.T, edit func(*ingest.Config)) *fixture {
	t.Helper()
	f := newFixture(t, nil)
	cfg := testConfig(t)
	edit(&cfg)
	f.h.Swap(cfg)
	return f
}

// swSign signs like a Standard Webhooks sender, computed here from the spec.
func swSign(id string, ts int64, body []byte) string {
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(whsecret, "whsec_"))
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%d.%s", id, ts, body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func TestStandardWebhooksSource(t *testing.T) {
	v, err := auth.New(auth.Spec{Type: auth.TypeStandardWebhooks, Secrets: [][]byte{[]byte(whsecret)}})
	if err != nil {
		t.Fatal(err)
	}
	f := withSource(t, func(c *ingest.Config) {
		c.Sources[0].Verifier = v
		c.Sources[0].DedupKey = nil
		c.Sources[0].DedupHeader = "webhook-id"
	})
	body := callKaro(t)
	now := time.Now().Unix()
	signed := func(id string, ts int64, b []byte) map[string]string {
		return map[string]string{"webhook-id": id, "webhook-timestamp": strconv.FormatInt(ts, 10), "webhook-signature": swSign(id, ts, b)}
	}
	tests := []struct {
		name    string
		headers map[string]string
		body    []byte
		code    int
		reason  string
	}{
		{"signed", signed("msg_1", now, body), body, 200, ""},
		{"same webhook-id again is a duplicate", signed("msg_1", now, body), body, 200, ""},
		{"tampered body", signed("msg_2", now, body), callKaroWith(t, "other"), 401, "signature mismatch"},
		{"old timestamp", signed("msg_3", now-3600, body), body, 401, "timestamp too old"},
		{"no signature", map[string]string{"webhook-id": "msg_4", "webhook-timestamp": strconv.FormatInt(now, 10)}, body, 401, "missing webhook-signature header"},
	}
	var firstID string
	for _, tt := range tests {
		r := f.do(t, request{contentType: "application/json", body: tt.body, headers: tt.headers})
		if r.code != tt.code {
			t.Fatalf("%s: POST = %d %s, want %d", tt.name, r.code, r.body, tt.code)
		}
		if tt.code != 200 {
			var e struct{ Error string }
			checkOneLineJSON(t, r, &e)
			if e.Error != tt.reason {
				t.Errorf("%s: error = %q, want %q", tt.name, e.Error, tt.reason)
			}
			sig := tt.headers["webhook-signature"]
			if strings.Contains(string(r.body), whsecret) || (sig != "" && strings.Contains(string(r.body), sig)) {
				t.Errorf("%s: answer %s echoes a secret or a signature", tt.name, r.body)
			}
			continue
		}
		var res ingest.Response
		checkOneLineJSON(t, r, &res)
		if firstID == "" {
			firstID = res.ID
			ev, err := f.log.Event(context.Background(), res.ID)
			if err != nil || ev.Auth != "standard-webhooks" {
				t.Errorf("Event(%s).Auth = %q, %v; want standard-webhooks recorded", res.ID, ev.Auth, err)
			}
		} else if res.ID != firstID || !res.Duplicate {
			t.Errorf("%s: answer %+v, want duplicate of %s (webhook-id is the dedup key)", tt.name, res, firstID)
		}
	}
	if st := f.h.Stats(); st.Unauthorized != 3 || st.Accepted != 1 || st.Duplicates != 1 {
		t.Errorf("Stats() = %+v, want 3 unauthorized, 1 accepted, 1 duplicate", st)
	}
}

func TestRateLimit(t *testing.T) {
	f := withSource(t, func(c *ingest.Config) {
		c.Sources[0].Limiter = rate.NewLimiter(rate.Limit(1), 3) // 1/s, burst 3
		c.Sources[0].DedupKey = nil
	})
	codes := map[int]int{}
	var retryAfter string
	for i := range 6 {
		r := f.do(t, request{contentType: "application/json", body: callKaroWith(t, fmt.Sprint("rl-", i))})
		codes[r.code]++
		if r.code == http.StatusTooManyRequests {
			retryAfter = r.header.Get("Retry-After")
			var e struct{ Error string }
			checkOneLineJSON(t, r, &e)
		}
	}
	if codes[200] != 3 || codes[429] != 3 {
		t.Errorf("6 quick requests at 1/s burst 3 got %v, want 3×200 and 3×429", codes)
	}
	if n, err := strconv.Atoi(retryAfter); err != nil || n < 1 {
		t.Errorf("429 Retry-After = %q, want a number of seconds ≥ 1", retryAfter)
	}
	if st := f.h.Stats(); st.Limited != 3 {
		t.Errorf("Stats().Limited = %d, want 3", st.Limited)
	}
}

func TestAllowCIDRs(t *testing.T) {
	loopback := netip.MustParsePrefix("127.0.0.0/8")
	tests := []struct {
		name    string
		allow   []netip.Prefix
		trusted []netip.Prefix
		xff     string
		code    int
	}{
		{"peer allowed", []netip.Prefix{loopback}, nil, "", 200},
		{"peer not allowed", []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, nil, "", 403},
		{"forwarded header from an untrusted peer is ignored", []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, nil, "192.0.2.9", 403},
		{"trusted proxy forwards an allowed client", []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, []netip.Prefix{loopback}, "198.51.100.1, 192.0.2.9", 200},
		{"trusted proxy forwards a client not allowed", []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, []netip.Prefix{loopback}, "192.0.2.9, 198.51.100.1", 403},
		{"garbled forwarded header", []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, []netip.Prefix{loopback}, "not-an-ip", 403},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := withSource(t, func(c *ingest.Config) {
				c.Sources[0].Allow = tt.allow
				c.TrustedProxies = tt.trusted
			})
			h := map[string]string{}
			if tt.xff != "" {
				h["X-Forwarded-For"] = tt.xff
			}
			r := f.do(t, request{contentType: "application/json", body: callKaroWith(t, fmt.Sprint("cidr-", i)), headers: h})
			if r.code != tt.code {
				t.Fatalf("POST from 127.0.0.1 with X-Forwarded-For %q = %d %s, want %d", tt.xff, r.code, r.body, tt.code)
			}
			if r.code == 403 {
				f.checkNothingAppended(t)
			}
		})
	}
}

// blockingAppender holds every append until released.
type blockingAppender struct{ started, release chan struct{} }

func (b blockingAppender) Append(ctx context.Context, e pipeline.Entry) (pipeline.Appended, error) {
	b.started <- struct{}{}
	<-b.release
	return pipeline.Appended{ID: e.Event.ID}, nil
}

func TestMaxConcurrent(t *testing.T) {
	app := blockingAppender{started: make(chan struct{}, 2), release: make(chan struct{})}
	f := newFixture(t, app)
	cfg := testConfig(t)
	cfg.MaxConcurrent = 2
	f.h.Swap(cfg)
	release := sync.OnceFunc(func() { close(app.release) })
	t.Cleanup(release) // a failed test still lets the held requests end
	type result struct {
		r   response
		err error
	}
	held := make(chan result, 2)
	for i := range 2 {
		body := callKaroWith(t, fmt.Sprint("held-", i))
		go func() {
			r, err := f.send(request{contentType: "application/json", body: body})
			held <- result{r, err}
		}()
	}
	for range 2 { // two requests are in flight, held by the appender
		select {
		case <-app.started:
		case res := <-held:
			t.Fatalf("a request answered before the appender let it go: %d %s, error %v", res.r.code, res.r.body, res.err)
		}
	}
	r := f.do(t, request{contentType: "application/json", body: callKaroWith(t, "third")})
	release()
	for range 2 {
		res := <-held
		if res.err != nil {
			t.Fatalf("held request: %v", res.err)
		}
		if res.r.code != http.StatusOK {
			t.Errorf("held request once released = %d %s, want 200", res.r.code, res.r.body)
		}
	}
	if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("third request with 2 in flight and max_concurrent 2 = %d %s, want 503 with Retry-After", r.code, r.body)
	}
	var e struct{ Error string }
	if err := json.Unmarshal(r.body, &e); err != nil || !strings.Contains(e.Error, "in flight") {
		t.Errorf("503 body %s, want a reason naming requests in flight", r.body)
	}
}

// FuzzSignedSource fuzzes the Standard Webhooks headers and the body of a
// signed source: nothing panics, every answer is one line of JSON, and a
// request is accepted only when its signature really is valid.
func FuzzSignedSource(f *testing.F) {
	body := []byte(`{"event":"call_ended","data":{"callSid":"x"}}`)
	now := time.Now().Unix()
	f.Add(body, "msg_1", strconv.FormatInt(now, 10), swSign("msg_1", now, body))
	f.Add(body, "msg_1", strconv.FormatInt(now, 10), "v1,AAAA v2,BBBB")
	f.Add([]byte(`{}`), "", "", "")
	f.Add(body, "msg_2", "-1", "v1,"+strings.Repeat("A", 44))
	f.Add(body, "msg\n3", "99999999999999999999", "v1")
	v, err := auth.New(auth.Spec{Type: auth.TypeStandardWebhooks, Secrets: [][]byte{[]byte(whsecret)}})
	if err != nil {
		f.Fatal(err)
	}
	fx := newFixture(f, nil)
	cfg := testConfig(f)
	cfg.Sources[0].Verifier = v
	cfg.Sources[0].DedupKey = nil
	fx.h.Swap(cfg)
	f.Fuzz(func(t *testing.T, body []byte, id, ts, sig string) {
		req := httptest.NewRequest(http.MethodPost, hookPath, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range map[string]string{"webhook-id": id, "webhook-timestamp": ts, "webhook-signature": sig} {
			if v != "" {
				req.Header[http.CanonicalHeaderKey(k)] = []string{v}
			}
		}
		rec := httptest.NewRecorder()
		fx.h.ServeHTTP(rec, req)
		out := rec.Body.Bytes()
		if bytes.Count(bytes.TrimSpace(out), []byte("\n")) != 0 || !json.Valid(out) {
			t.Fatalf("answer %q is not one line of JSON", out)
		}
		if rec.Code != http.StatusOK {
			return
		}
		tsn, err := strconv.ParseInt(ts, 10, 64)
		valid := err == nil && id != "" && strings.Contains(" "+sig+" ", " "+swSign(id, tsn, body)+" ")
		if !valid {
			t.Fatalf("accepted a request without a valid signature: id %q ts %q sig %q", id, ts, sig)
		}
	})
}
