package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Client calls the admin API of a running daemon. The zero value is not
// usable: make one with [NewClient]. A Client is safe for concurrent use.
type Client struct {
	base  string
	token string
	http  *http.Client
	raw   *[]byte
}

// NewClient returns a client of the admin API at base (such as
// http://127.0.0.1:8081). token, when not empty, is sent as a bearer token;
// mutating calls need it unless the daemon allows them without one. hc nil
// means a client without a timeout (a replay can take long).
func NewClient(base, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{}
	}
	return &Client{base: strings.TrimRight(base, "/"), token: token, http: hc}
}

// WithRaw returns a copy of c that stores the undecoded answer of each call
// in *raw (for a replay, its last line), for a caller that prints the
// API's own JSON.
func (c *Client) WithRaw(raw *[]byte) *Client {
	cc := *c
	cc.raw = raw
	return &cc
}

// APIError is an answer of the admin API that is not a 2xx.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Message is the API's error, or the body when it is not JSON.
	Message string
}

// Error returns the API's message and the status code.
func (e *APIError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status) }

// Do calls method on path (with its query) with body encoded as JSON (nil:
// no body) and returns the response of a 2xx, whose body the caller
// closes. Any other status is an [*APIError]; an error of the transport
// wraps the [*url.Error] of net/http.
func (c *Client) Do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil || method == http.MethodPost {
		// The daemon refuses a POST that is not JSON, even an empty one:
		// a browser page cannot send that without its consent.
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct{ Error string }
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(b))
	}
	return nil, &APIError{Status: resp.StatusCode, Message: e.Error}
}

// Call is [Client.Do] that decodes the JSON answer into v.
func (c *Client) Call(ctx context.Context, method, path string, body, v any) error {
	resp, err := c.Do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	if c.raw != nil {
		*c.raw = raw
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

// Sinks returns the status of every sink (GET /v1/sinks).
func (c *Client) Sinks(ctx context.Context) ([]SinkStatus, error) {
	v, err := c.SinkList(ctx)
	return v.Sinks, err
}

// SinkList returns the whole answer of GET /v1/sinks.
func (c *Client) SinkList(ctx context.Context) (SinkList, error) {
	var v SinkList
	err := c.Call(ctx, "GET", "/v1/sinks", nil, &v)
	return v, err
}

// Sink returns the status of one sink; an unknown sink is an error.
func (c *Client) Sink(ctx context.Context, name string) (SinkStatus, error) {
	ss, err := c.Sinks(ctx)
	if err != nil {
		return SinkStatus{}, err
	}
	for _, s := range ss {
		if s.Name == name {
			return s, nil
		}
	}
	return SinkStatus{}, fmt.Errorf("no sink %q in /v1/sinks", name)
}

// Events returns one page of events (GET /v1/events); q holds the filters
// (source, sink, state, since, until, dedup_key, when, limit, after).
func (c *Client) Events(ctx context.Context, q url.Values) (EventList, error) {
	var v EventList
	err := c.Call(ctx, "GET", "/v1/events?"+q.Encode(), nil, &v)
	return v, err
}

// Event returns one event (GET /v1/events/{id}); an event that is not in
// the log is an [*APIError] with Status 404.
func (c *Client) Event(ctx context.Context, id string) (Event, error) {
	var v Event
	err := c.Call(ctx, "GET", "/v1/events/"+url.PathEscape(id), nil, &v)
	return v, err
}

// Rejections returns one page of rejected requests (GET /v1/rejections);
// q holds the filters (source, since, limit, after).
func (c *Client) Rejections(ctx context.Context, q url.Values) (RejectionList, error) {
	var v RejectionList
	err := c.Call(ctx, "GET", "/v1/rejections?"+q.Encode(), nil, &v)
	return v, err
}

// DeadLetters returns one page of a sink's dead letters (GET
// /v1/sinks/{sink}/dlq); q holds limit and after.
func (c *Client) DeadLetters(ctx context.Context, sink string, q url.Values) (DeadLetterList, error) {
	var v DeadLetterList
	err := c.Call(ctx, "GET", "/v1/sinks/"+url.PathEscape(sink)+"/dlq?"+q.Encode(), nil, &v)
	return v, err
}

// AllDeadLetters returns every dead letter of sink, page after page.
func (c *Client) AllDeadLetters(ctx context.Context, sink string) ([]DeadLetter, error) {
	var out []DeadLetter
	q := url.Values{"limit": {fmt.Sprint(maxLimit)}}
	for {
		page, err := c.DeadLetters(ctx, sink, q)
		if err != nil {
			return out, err
		}
		out = append(out, page.DeadLetters...)
		if page.Next == "" || len(page.DeadLetters) == 0 {
			return out, nil
		}
		q.Set("after", page.Next)
	}
}

// SettleDead retries or drops dead letters of sink (POST
// /v1/sinks/{sink}/dlq/retry or /drop), or gives up on events waiting in
// its queue (/dlq/add); action is "retry", "drop" or "add".
func (c *Client) SettleDead(ctx context.Context, action, sink string, req DeadLetterRequest) (DeadLetterResult, error) {
	var v DeadLetterResult
	if action != "retry" && action != "drop" && action != "add" {
		return v, fmt.Errorf("dead-letter action %q: want retry, drop or add", action)
	}
	err := c.Call(ctx, "POST", "/v1/sinks/"+url.PathEscape(sink)+"/dlq/"+action, req, &v)
	return v, err
}

// Replay re-enqueues events for a sink (POST /v1/replay) and returns the
// last progress line, Done or with Error set. progress, when not nil, is
// called with every line as it arrives. An answer that ends before its
// last line is an error.
func (c *Client) Replay(ctx context.Context, req ReplayRequest, progress func(ReplayProgress)) (ReplayProgress, error) {
	var last ReplayProgress
	resp, err := c.Do(ctx, "POST", "/v1/replay", req)
	if err != nil {
		return last, err
	}
	defer resp.Body.Close()
	var lastRaw []byte
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lastRaw = append(lastRaw[:0], sc.Bytes()...)
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			return last, fmt.Errorf("decode replay progress: %w", err)
		}
		if progress != nil {
			progress(last)
		}
	}
	if c.raw != nil {
		*c.raw = lastRaw
	}
	if err := sc.Err(); err != nil {
		return last, fmt.Errorf("replay answer: %w", err)
	}
	if !last.Done && last.Error == "" {
		return last, fmt.Errorf("replay: the daemon ended the answer early after %d enqueued", last.Enqueued)
	}
	return last, nil
}

// PauseSink pauses sink's delivery (POST /v1/sinks/{sink}/pause), or
// resumes it when paused is false (POST /v1/sinks/{sink}/resume).
func (c *Client) PauseSink(ctx context.Context, sink string, paused bool) (SinkPause, error) {
	action := "resume"
	if paused {
		action = "pause"
	}
	var v SinkPause
	err := c.Call(ctx, http.MethodPost, "/v1/sinks/"+url.PathEscape(sink)+"/"+action, nil, &v)
	return v, err
}

// RetryNow makes the waiting retries of sink due now and, when its
// breaker is open, has it probe at once (POST /v1/sinks/{sink}/retry-now).
func (c *Client) RetryNow(ctx context.Context, sink string) (RetryNow, error) {
	var v RetryNow
	err := c.Call(ctx, http.MethodPost, "/v1/sinks/"+url.PathEscape(sink)+"/retry-now", nil, &v)
	return v, err
}

// Reload asks the daemon to apply its configuration file again (POST
// /v1/reload); a refused configuration is an [*APIError] with Status 409.
// The result lists the changed keys that wait for a restart.
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	var v ReloadResult
	err := c.Call(ctx, "POST", "/v1/reload", nil, &v)
	return v, err
}
