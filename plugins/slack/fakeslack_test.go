package slack

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Paths of the fake Slack. hookPath is the working webhook; its last
// segment stands for Slack's token.
const (
	hookPath  = "/services/T000/B000/XXXX"
	token     = "XXXX"
	gonePath  = "/services/T000/B000/GONE"  // answers 404 channel_not_found
	movedPath = "/services/T000/B000/MOVED" // answers 301 to hookPath
)

// fakeSlack behaves like Slack's incoming-webhook endpoint: 200 "ok" for a
// good message; 400 invalid_payload, no_text or invalid_blocks for bad
// ones (text/plain, as Slack answers); 404 channel_not_found on gonePath
// or for channel "#nowhere"; 429 with Retry-After: 1 (or retryAfter) when
// its token bucket is empty; 500 for the next fail5xx requests. It records
// every request.
type fakeSlack struct {
	srv *httptest.Server

	mu         sync.Mutex
	got        []request
	rate       float64 // tokens per second; 0 means no rate limit
	burst      float64
	tokens     float64
	last       time.Time
	fail5xx    int           // the next fail5xx requests answer 500
	retryAfter string        // the 429's Retry-After; "1" when empty
	delay      time.Duration // wait before answering
	echoPath   bool          // error answers quote the request path, like a careless proxy
}

// request is one request the fake got, and its answer.
type request struct {
	Path   string
	Raw    []byte
	Msg    map[string]any
	Status int
}

func newFakeSlack(t testing.TB) *fakeSlack {
	t.Helper()
	f := &fakeSlack{}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// URL is the working webhook URL.
func (f *fakeSlack) URL() string { return f.srv.URL + hookPath }

// limit makes the fake allow n requests per second (a token bucket of n).
func (f *fakeSlack) limit(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rate, f.burst, f.tokens, f.last = float64(n), float64(n), float64(n), time.Now()
}

func (f *fakeSlack) set(fn func(f *fakeSlack)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// requests returns what the fake got so far.
func (f *fakeSlack) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.got...)
}

// texts returns the text of every message the fake answered 200.
func (f *fakeSlack) texts() []string {
	var out []string
	for _, r := range f.requests() {
		if r.Status == http.StatusOK {
			s, _ := r.Msg["text"].(string)
			out = append(out, s)
		}
	}
	return out
}

func (f *fakeSlack) serve(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	delay := f.delay
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	req := request{Path: r.URL.Path, Raw: raw}
	_ = json.Unmarshal(raw, &req.Msg)
	answer := func(status int, reason string) {
		req.Status = status
		f.got = append(f.got, req)
		w.Header().Set("Content-Type", "text/plain")
		if status >= 400 && f.echoPath {
			reason += " (" + r.URL.String() + " on " + r.Host + ")"
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, reason)
	}

	if f.rate > 0 {
		now := time.Now()
		f.tokens = min(f.burst, f.tokens+now.Sub(f.last).Seconds()*f.rate)
		f.last = now
		if f.tokens < 1 {
			retry := f.retryAfter
			if retry == "" {
				retry = "1"
			}
			w.Header().Set("Retry-After", retry)
			answer(http.StatusTooManyRequests, "rate_limited")
			return
		}
		f.tokens--
	}
	switch {
	case r.Method != http.MethodPost:
		answer(http.StatusMethodNotAllowed, "invalid_method")
		return
	case r.URL.Path == gonePath:
		answer(http.StatusNotFound, "channel_not_found")
		return
	case r.URL.Path == movedPath:
		w.Header().Set("Location", hookPath)
		answer(http.StatusMovedPermanently, "moved")
		return
	case r.URL.Path != hookPath:
		answer(http.StatusNotFound, "no_service")
		return
	case f.fail5xx > 0:
		f.fail5xx--
		answer(http.StatusInternalServerError, "internal_error")
		return
	}

	dec := json.NewDecoder(bytes.NewReader(raw))
	var msg map[string]json.RawMessage
	if err := dec.Decode(&msg); err != nil || msg == nil {
		answer(http.StatusBadRequest, "invalid_payload")
		return
	}
	var text string
	_ = json.Unmarshal(msg["text"], &text)
	blocks, hasBlocks := msg["blocks"]
	if hasBlocks && !bytes.HasPrefix(bytes.TrimSpace(blocks), []byte("[")) {
		answer(http.StatusBadRequest, "invalid_blocks")
		return
	}
	if strings.TrimSpace(text) == "" && !hasBlocks {
		answer(http.StatusBadRequest, "no_text")
		return
	}
	var channel string
	_ = json.Unmarshal(msg["channel"], &channel)
	if channel == "#nowhere" {
		answer(http.StatusNotFound, "channel_not_found")
		return
	}
	answer(http.StatusOK, "ok")
}
