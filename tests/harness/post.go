package harness

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Client is the HTTP client of the harness: a 10s timeout and enough idle
// connections for a load of a few hundred clients.
var Client = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 256},
}

var (
	callKaroOnce sync.Once
	callKaroRaw  []byte
	callKaroErr  error
)

// CallKaro returns a fresh copy of the documented CallKaro call_ended
// payload (examples/callkaro/call_ended.json).
func CallKaro() (map[string]any, error) {
	callKaroOnce.Do(func() {
		callKaroRaw, callKaroErr = os.ReadFile(filepath.Join(Root(), "examples", "callkaro", "call_ended.json"))
	})
	if callKaroErr != nil {
		return nil, callKaroErr
	}
	var m map[string]any
	if err := json.Unmarshal(callKaroRaw, &m); err != nil {
		return nil, fmt.Errorf("examples/callkaro/call_ended.json: %w", err)
	}
	return m, nil
}

var (
	templateMu sync.Mutex
	template   map[string]any
)

// CallEvent returns a CallKaro payload with its own callSid and lead
// status. It is safe for concurrent use. It panics if the example payload
// cannot be read: every suite needs it.
func CallEvent(sid, lead string) []byte {
	templateMu.Lock()
	defer templateMu.Unlock()
	if template == nil {
		m, err := CallKaro()
		if err != nil {
			panic(err)
		}
		template = m
	}
	data := template["data"].(map[string]any)
	data["callSid"] = sid
	data["post_call"] = map[string]any{"lead_status": lead}
	b, err := json.Marshal(template)
	if err != nil {
		panic(err)
	}
	return b
}

// Post sends body as JSON and returns the status and the decoded JSON
// answer.
func Post(url string, body []byte) (int, map[string]any, error) {
	return PostWith(Client, url, "application/json", nil, body)
}

// PostWith sends body with c, the content type and the headers given, and
// returns the status and the decoded JSON answer; an answer that is not
// JSON is an error that quotes it.
func PostWith(c *http.Client, url, contentType string, header http.Header, body []byte) (int, map[string]any, error) {
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("answer %d is not JSON: %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, m, nil
}

// SignedHeader returns the Standard Webhooks headers (webhook-id,
// webhook-timestamp, webhook-signature) of body signed with secret by the
// reference library, for a source with auth type "standard-webhooks".
func SignedHeader(secret, id string, body []byte) (http.Header, error) {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return nil, fmt.Errorf("standard webhooks secret: %w", err)
	}
	now := time.Now()
	sig, err := wh.Sign(id, now, body)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", fmt.Sprint(now.Unix()))
	h.Set("webhook-signature", sig)
	return h, nil
}
