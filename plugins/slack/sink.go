package slack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pipelined/pipelined/plugins/internal/retryafter"
	"github.com/pipelined/pipelined/sdk"
)

// sink posts events to a Slack incoming webhook, one POST per event, in
// batch order, one at a time. Slack's answers become results:
//
//	2xx                    Delivered
//	429                    Retry after its Retry-After (seconds or an HTTP
//	                       date, at most 24h); the rest of the batch is not
//	                       sent (a throttled webhook is not hammered) and is
//	                       answered NotAttempted with the same delay: those
//	                       events cost no attempt toward max_attempts
//	other 4xx              Permanent, with Slack's reason ("invalid_blocks",
//	                       "channel_not_found", "no_text", …)
//	3xx                    Permanent: a webhook URL that redirects is wrong
//	5xx, network, timeout  Retry with the host's backoff
//
// When ctx ends, the event being sent gets Retry and the rest, not sent,
// NotAttempted. A template that fails on an event gives Permanent for that
// event alone.
//
// The webhook URL holds Slack's token: no error or log line of the sink
// contains it (errors from net/http quote the URL; they are unwrapped and,
// as a last guard, redacted).
type sink struct {
	log    *slog.Logger
	cfg    settings
	client *http.Client
	tr     *http.Transport
}

var (
	_ sdk.Sink      = (*sink)(nil)
	_ sdk.Closer    = (*sink)(nil)
	_ sdk.Describer = (*sink)(nil)
)

func newSink() *sink {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &sink{
		log: sdk.Logger(),
		tr:  tr,
		client: &http.Client{
			Transport: tr,
			// Slack's webhooks do not redirect; following one would send
			// the message somewhere else.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Describe lists the config keys.
func (s *sink) Describe() sdk.Description { return describe() }

// Configure decodes and validates the config, reads the webhook URL secret
// and the template file; it sends nothing.
func (s *sink) Configure(_ context.Context, raw json.RawMessage) error {
	cfg, err := parseConfig(raw)
	if err != nil {
		return err
	}
	s.cfg = cfg
	s.log.Debug("slack sink configured", "webhook_host", cfg.webhook.Host, "timeout", cfg.timeout.String(), "template", cfg.tmpl != nil)
	return nil
}

// errTimeout is the cause of a request that ran past the timeout key.
var errTimeout = errors.New("no answer within the timeout")

// Deliver posts the batch, one event at a time, in order.
func (s *sink) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	if s.cfg.webhook == nil {
		return nil, errors.New("slack sink is not configured")
	}
	results := make([]sdk.Result, len(batch))
	for i := range batch {
		if err := ctx.Err(); err != nil {
			fill(results[i:], sdk.NotAttempted(0, fmt.Errorf("not sent: %w", context.Cause(ctx))))
			return results, nil
		}
		body, err := s.cfg.message(&batch[i])
		if err != nil {
			results[i] = sdk.Permanent(s.redact(err))
			continue
		}
		r, throttled := s.post(ctx, body)
		results[i] = r
		if throttled {
			after, _ := r.IsRetry()
			rest := len(batch) - i - 1
			if rest > 0 {
				fill(results[i+1:], sdk.NotAttempted(after, errors.New("not sent: slack is throttling this webhook (429)")))
			}
			s.log.Warn("slack throttled the webhook; the rest of the batch waits", "event_id", batch[i].ID, "retry_after", after.String(), "events_deferred", rest+1)
			return results, nil
		}
	}
	return results, nil
}

func fill(rs []sdk.Result, r sdk.Result) {
	for i := range rs {
		rs[i] = r
	}
}

// post sends one message and reads Slack's answer. throttled reports a 429.
func (s *sink) post(ctx context.Context, body []byte) (r sdk.Result, throttled bool) {
	ctx, cancel := context.WithTimeoutCause(ctx, s.cfg.timeout, errTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.webhook.String(), bytes.NewReader(body))
	if err != nil {
		return sdk.Permanent(s.redact(fmt.Errorf("make request: %w", unwrapURLError(err)))), false
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "pipelined-sink-slack")
	resp, err := s.client.Do(req)
	if err != nil {
		if errors.Is(context.Cause(ctx), errTimeout) {
			return sdk.Retry(0, fmt.Errorf("post to slack: no answer within %v (config key \"timeout\")", s.cfg.timeout)), false
		}
		return sdk.Retry(0, s.redact(fmt.Errorf("post to slack: %w", unwrapURLError(err)))), false
	}
	defer resp.Body.Close()
	reason := s.reason(resp.Body)

	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return sdk.Delivered(), false
	case code == http.StatusTooManyRequests:
		after := retryAfter(resp.Header.Get("Retry-After"), time.Now())
		return sdk.Retry(after, fmt.Errorf("slack is throttling this webhook: %d %s", code, reason)), true
	case code >= 300 && code < 400:
		return sdk.Permanent(fmt.Errorf("slack answered %d (a redirect): check webhook_url", code)), false
	case code >= 400 && code < 500:
		return sdk.Permanent(fmt.Errorf("slack rejected the message: %d %s", code, reason)), false
	}
	return sdk.Retry(0, fmt.Errorf("slack answered %d %s", code, reason)), false
}

// reason reads Slack's answer body (text/plain: "invalid_blocks",
// "channel_not_found", …), one line of it, short and without the URL, and
// drains the rest so the connection can be reused.
func (s *sink) reason(body io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(body, 4<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	r := strings.TrimSpace(strings.ToValidUTF8(string(b), "\uFFFD"))
	if i := strings.IndexAny(r, "\r\n"); i >= 0 {
		r = r[:i]
	}
	r = truncate(200, r)
	if r == "" {
		return "(empty answer)"
	}
	return s.redactString(r)
}

// retryAfter is the wait a Retry-After header asks for (seconds or an
// HTTP date), at most [retryafter.Cap]; 0 (the host's backoff) when
// missing or bad.
func retryAfter(v string, now time.Time) time.Duration {
	d, _ := retryafter.Parse(v, now, retryafter.Cap)
	return d
}

// unwrapURLError drops the *url.Error wrapper net/http puts around its
// errors: it quotes the URL, which holds the token.
func unwrapURLError(err error) error {
	var ue *url.Error
	for errors.As(err, &ue) && ue.Err != nil {
		err = ue.Err
	}
	return err
}

// redactedErr is an error whose text had the webhook URL removed.
type redactedErr struct {
	msg string
	err error
}

func (e *redactedErr) Error() string { return e.msg }
func (e *redactedErr) Unwrap() error { return e.err }

// redact returns err with the webhook URL and its path (the token) cut
// from its text, in case anything quoted them.
func (s *sink) redact(err error) error {
	if err == nil {
		return nil
	}
	msg := s.redactString(err.Error())
	if msg == err.Error() {
		return err
	}
	return &redactedErr{msg: msg, err: err}
}

func (s *sink) redactString(v string) string {
	u := s.cfg.webhook
	if u == nil {
		return v
	}
	for _, secret := range []string{u.String(), u.EscapedPath(), u.Path, u.RawQuery} {
		if len(secret) > 1 {
			v = strings.ReplaceAll(v, secret, "[webhook_url]")
		}
	}
	return v
}

// Close closes idle connections to Slack.
func (s *sink) Close(context.Context) error {
	s.tr.CloseIdleConnections()
	return nil
}
